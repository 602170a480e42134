"""A split-brain and lost-write checker for hapg failover scenarios.

While a scenario runs, one thread per member tries a write every ~50 ms on
that member (`INSERT INTO hapg_check(member, seq) VALUES (...)`, autocommit,
one persistent connection per member with connect_timeout 1 s and
statement_timeout 1 s, reconnecting after a failure).  Standbys refuse the
write (read-only), a stopped server refuses the connection: only a writable
primary acknowledges.  Every attempt is recorded with its start and end on
this process's monotonic clock.  Another thread reads the Lease through the
double's admin port every ~100 ms (holder, resourceVersion, renewTime).

Typical use::

    ensure_table(cluster, leader)          # once, on the leader; it replicates
    chk = Checker(cluster).start()
    ... the scenario ...
    chk.stop()
    assert not chk.violations(), chk.report()
    assert not chk.missing(new_leader), chk.report()

Definitions
-----------
*acknowledged write*: an INSERT whose execute() returned without error: the
member was a writable primary at some instant in [start, end].  One whose
wait for synchronous standbys was cancelled (pg_cancel_backend; the server
warns "canceling wait for synchronous replication": committed locally, maybe
not replicated) is recorded as refused, kind 'sync-cancelled'.

*violation* (two members accepting writes at the same time): writes a0 and
a1 acknowledged by member A and b by member B != A with
a0.end < b.start and b.end < a1.start, i.e. A was writable before and after
B was; unless the Lease shows that A lost it and took it again in between
(seen held by someone else or nobody at or after b.end, then by A, before
a1 was acknowledged).  With writes every 50 ms on every member, any overlap
of two writable members lasting more than about two polls shows up as such a
triple, and the rule never fires on a clean hand-over A -> B (A never
writes again) nor on a leader that is fenced and later wins again through
the Lease.

*missing*: acknowledged writes absent from the final leader's table
(optionally only those acknowledged before a given time, or by some
members).
"""

import bisect
import collections
import itertools
import threading
import time

import psycopg2
import psycopg2.errors

TABLE = 'hapg_check'
# the WARNING of a commit whose wait for synchronous replication was cancelled
SYNC_CANCELLED = 'canceling wait for synchronous replication'

Attempt = collections.namedtuple('Attempt', 'member seq start end ok kind error')
LeaseObs = collections.namedtuple('LeaseObs', 'start end holder rv renew_time transitions acquire_time')


def parse_microtime(s):
    """A Kubernetes MicroTime (RFC 3339, UTC) -> Unix time, or None."""
    import datetime
    try:
        return datetime.datetime.strptime(s.replace('Z', '+0000'),
                                          '%Y-%m-%dT%H:%M:%S.%f%z').timestamp()
    except (ValueError, AttributeError):
        return None


def ensure_table(cluster, member):
    """Create the checker's table on `member` (the leader); it replicates."""
    cluster.sql(member, 'CREATE TABLE IF NOT EXISTS %s (member text NOT NULL, '
                        'seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())'
                % TABLE)
    cluster.sql(member, 'CREATE INDEX IF NOT EXISTS %s_seq ON %s (seq)' % (TABLE, TABLE))


class Checker:
    def __init__(self, cluster, members=None, interval=0.05, lease_interval=0.1):
        self.c = cluster
        self.members = list(members or cluster.names)
        self.interval = interval
        self.lease_interval = lease_interval
        self.attempts = []
        self.lease_obs = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        # unique across checkers: the base grows faster than any run uses it
        self.seq_base = int(time.time() * 1000) * 1000
        self._seq = itertools.count(self.seq_base)
        self.t_started = None
        self.t_stopped = None
        self.wall_offset = time.time() - time.monotonic()

    # ------------------------------------------------------------ running
    def start(self):
        self.t_started = time.monotonic()
        for m in self.members:
            t = threading.Thread(target=self._writer, args=(m,), daemon=True,
                                 name='hapg-checker-%s' % m)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._lease_reader, daemon=True, name='hapg-checker-lease')
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.t_stopped = time.monotonic()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _record(self, a):
        with self._lock:
            self.attempts.append(a)

    def _connect(self, member):
        m = self.c.m(member)
        conn = psycopg2.connect(host='127.0.0.1', port=m.port, user='postgres',
                                dbname='postgres', connect_timeout=1,
                                # the refused INSERTs would flood the server logs
                                options='-c statement_timeout=1000 -c log_min_messages=fatal',
                                application_name='hapg-checker')
        conn.autocommit = True
        return conn

    def _writer(self, member):
        conn = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                self._stop.wait(next_at - now)
                continue
            next_at = now + self.interval
            if conn is None:
                t0 = time.monotonic()
                try:
                    conn = self._connect(member)
                except Exception as e:  # noqa: BLE001
                    self._record(Attempt(member, None, t0, time.monotonic(), False, 'connect',
                                         str(e).strip().splitlines()[0] if str(e).strip() else repr(e)))
                    continue
            seq = next(self._seq)
            t0 = time.monotonic()
            try:
                del conn.notices[:]
                with conn.cursor() as cur:
                    cur.execute('INSERT INTO %s (member, seq) VALUES (%%s, %%s)' % TABLE,
                                (member, seq))
                if any(SYNC_CANCELLED in n for n in conn.notices):
                    # the wait for the synchronous standbys was cancelled
                    # (not by statement_timeout, which is off during the
                    # commit): committed locally, and the client was told
                    # it may not be replicated; not an acknowledgement
                    self._record(Attempt(member, seq, t0, time.monotonic(), False, 'sync-cancelled',
                                         SYNC_CANCELLED))
                else:
                    self._record(Attempt(member, seq, t0, time.monotonic(), True, 'ok', None))
            except psycopg2.errors.ReadOnlySqlTransaction as e:
                self._record(Attempt(member, seq, t0, time.monotonic(), False, 'read-only',
                                     str(e).strip().splitlines()[0]))
            except Exception as e:  # noqa: BLE001 - broken connection, timeout, shutdown
                self._record(Attempt(member, seq, t0, time.monotonic(), False, 'error',
                                     (str(e).strip().splitlines() or [repr(e)])[0]))
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _lease_reader(self):
        path = self.c.lease_path()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                st, lease = self.c.double.request('GET', path, timeout=1)
                t1 = time.monotonic()
                if st == 200 and isinstance(lease, dict):
                    spec = lease.get('spec') or {}
                    obs = LeaseObs(t0, t1, spec.get('holderIdentity') or '',
                                   (lease.get('metadata') or {}).get('resourceVersion'),
                                   spec.get('renewTime'), spec.get('leaseTransitions', 0),
                                   spec.get('acquireTime'))
                    with self._lock:
                        self.lease_obs.append(obs)
            except Exception:  # noqa: BLE001 - the API may be faulted for everyone
                pass
            self._stop.wait(max(0.0, t0 + self.lease_interval - time.monotonic()))

    # ------------------------------------------------------------ results
    def wall(self, t):
        """This process's monotonic time -> Unix time."""
        return t + self.wall_offset

    def acked(self, member=None, after=None, before=None):
        """Acknowledged writes (by member), sorted by end; `after`/`before`
        bound their start / end."""
        with self._lock:
            out = [a for a in self.attempts if a.ok]
        if member is not None:
            out = [a for a in out if a.member == member]
        if after is not None:
            out = [a for a in out if a.start > after]
        if before is not None:
            out = [a for a in out if a.end < before]
        return sorted(out, key=lambda a: a.end)

    def count_acked(self, member=None, after=None):
        return len(self.acked(member, after=after))

    def first_ack(self, member=None, after=None, exclude=()):
        """The first write acknowledged (started after `after`) by `member`, or
        by any member not in `exclude`."""
        for a in self.acked(member, after=after):
            if a.member not in exclude:
                return a
        return None

    def last_ack(self, member, before=None):
        acks = self.acked(member, before=before)
        return acks[-1] if acks else None

    def attempts_of(self, member, after=None):
        with self._lock:
            out = [a for a in self.attempts if a.member == member]
        if after is not None:
            out = [a for a in out if a.start > after]
        return sorted(out, key=lambda a: a.start)

    def first_refusal_after(self, member, t):
        """The first failed attempt on `member` that started after t."""
        for a in self.attempts_of(member, after=t):
            if not a.ok:
                return a
        return None

    def writable_members(self, after):
        return sorted({a.member for a in self.acked(after=after)})

    def lease_holders(self):
        """[(first seen, holder, rv)] each time the holder changed."""
        with self._lock:
            obs = sorted(self.lease_obs, key=lambda o: o.start)
        out = []
        for o in obs:
            if not out or out[-1][1] != o.holder:
                out.append((o.end, o.holder, o.rv))
        return out

    def last_obs_of(self, holder):
        with self._lock:
            obs = [o for o in self.lease_obs if o.holder == holder]
        return max(obs, key=lambda o: o.start) if obs else None

    def _regained(self, member, t1, t2):
        """Was the Lease seen held by someone else (or nobody) as of t1 or
        later, and then by `member`, before t2?  A poll every 100 ms can see
        a quick winner's first write before its Lease: then the Lease's own
        acquireTime (the same host's clock) between t1 and t2 counts."""
        with self._lock:
            obs = sorted(self.lease_obs, key=lambda o: o.start)
        seen_other = False
        for o in obs:
            if o.start < t1:
                seen_other = o.holder != member     # the holder as of t1
                continue
            if o.end > t2:
                if seen_other and o.holder == member and o.acquire_time:
                    at = parse_microtime(o.acquire_time)
                    return at is not None and self.wall(t1) <= at <= self.wall(t2)
                break
            if o.holder != member:
                seen_other = True
            elif seen_other:
                return True
        return False

    def violations(self, limit=20):
        """Triples (a0, b, a1): see the module docstring.  Empty = no two
        members were seen accepting writes at the same time."""
        acks = self.acked()
        by = collections.defaultdict(list)
        for a in acks:
            by[a.member].append(a)
        for m in by:
            by[m].sort(key=lambda a: a.start)
        out = []
        for A, wa in by.items():
            starts = [a.start for a in wa]
            by_end = sorted(wa, key=lambda a: a.end)
            ends = [a.end for a in by_end]
            first_end = ends[0]
            for B, wb in by.items():
                if A == B:
                    continue
                for b in wb:
                    if not first_end < b.start:
                        continue
                    i = bisect.bisect_right(starts, b.end)
                    if i >= len(wa):
                        continue
                    a1 = wa[i]
                    if self._regained(A, b.end, a1.end):
                        continue
                    a0 = by_end[bisect.bisect_left(ends, b.start) - 1]
                    out.append((a0, b, a1))
                    if len(out) >= limit:
                        return out
        return out

    def missing(self, final_leader, before=None, members=None):
        """Acknowledged writes (acknowledged before `before`, by `members`)
        that the final leader does not have."""
        acks = self.acked(before=before)
        if members is not None:
            acks = [a for a in acks if a.member in members]
        if not acks:
            return []
        lo = min(a.seq for a in acks)
        hi = max(a.seq for a in acks)
        rows = self.c.sql(final_leader, 'SELECT member, seq FROM %s WHERE seq BETWEEN %%s AND %%s'
                          % TABLE, (lo, hi), timeout=5)
        have = {(r['member'], r['seq']) for r in rows}
        return [a for a in acks if (a.member, a.seq) not in have]

    # ------------------------------------------------------------ reporting
    def fmt(self, t):
        """A monotonic time as seconds since the checker started and as UTC."""
        if t is None:
            return '-'
        w = self.wall(t)
        return '+%.3fs (%s.%03d UTC)' % (t - self.t_started, time.strftime('%H:%M:%S', time.gmtime(w)),
                                         int((w % 1) * 1000))

    def report(self):
        """A few lines for assertion messages and test output."""
        lines = ['checker: started %s, %d attempts' % (self.fmt(self.t_started), len(self.attempts))]
        for m in self.members:
            acks = self.acked(m)
            fails = [a for a in self.attempts_of(m) if not a.ok]
            lines.append('  %s: %d acknowledged (first %s, last %s), %d refused' % (
                m, len(acks), self.fmt(acks[0].end) if acks else '-',
                self.fmt(acks[-1].end) if acks else '-', len(fails)))
        for t, holder, rv in self.lease_holders():
            lines.append('  lease holder %r (rv %s) seen from %s' % (holder, rv, self.fmt(t)))
        for a0, b, a1 in self.violations(limit=5):
            lines.append('  VIOLATION: %s wrote seq %s at [%s, %s], %s wrote seq %s at [%s, %s], '
                         'then %s wrote seq %s at [%s, %s]' % (
                             a0.member, a0.seq, self.fmt(a0.start), self.fmt(a0.end),
                             b.member, b.seq, self.fmt(b.start), self.fmt(b.end),
                             a1.member, a1.seq, self.fmt(a1.start), self.fmt(a1.end)))
        return '\n'.join(lines)
