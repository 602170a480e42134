#!/usr/bin/python3
"""Benchmark (not a test): time to failover, hapg vs Patroni, 3 members each
on the same Kubernetes API double, same ttl / loop_wait / retry_timeout.

Two scenarios, each run on a fresh 3-member cluster:

kill   node loss.  Wait for a leader and two streaming replicas, wait for a
       fresh renewal of the leader lock (seen through a watch on the
       double's admin port: hapg's Lease, Patroni's "<scope>-leader"
       ConfigMap, renewTime changing), sleep a delay, SIGKILL the leader's
       whole process tree (hapg: the postmaster and all its children, the
       worker is one of them; Patroni: the patroni process group, its
       postmaster and the postmaster's children), then measure the time from
       the kill to the first successful INSERT on another member.
fence  cut off from the API.  Same start, but instead of the kill the
       leader's own API user gets a fault (`error`, 503, every verb) from
       the double; measure the time until the old leader stops accepting
       writes (its first failing INSERT) and until the first successful
       INSERT on a new leader.

The delay after the renewal is spread evenly over [0, loop_wait) across the
N runs of a cell (midpoints: loop_wait * (i + 0.5) / N), because where in
the renewal cycle a failure lands decides how much of the lock is left.

Writers: one thread per member to watch, each sends an autocommit INSERT
every 20 ms on a kept connection (reconnecting with connect_timeout=1 when
it breaks; statement_timeout 1 s), so times are good to ~20 ms.

Per cell it reports median, min-max and N, and the floor of each run:
    left     = ttl - (kill - renewal seen)    time left on the lock at the kill
    promote  = first write - lock taken over  (the takeover seen in the watch)
    floor    = left + promote
    over     = failover - floor = how late after expiry the lock was taken
hapg's replicas wake at the instant the Lease runs out on their clock, so
hapg should sit at about left + a few hundred ms; Patroni's replicas notice
on their next loop.  For fencing, hapg's own deadline is
    ttl - fence margin - (fault - renewal seen)
(fence margin = ttl/10 clamped to [0.5 s, 2 s], src/lease.c), shown as
"expected"; Patroni demotes when its next lock update fails after
retry_timeout.

CLI:
  /usr/bin/python3 bench/failover.py [--runs N] [--profiles fast,default]
      [--scenarios kill,fence] [--no-patroni] [--markdown] [--out F]
      [--json F] [--from-json F ...]
    profiles: fast = ttl 5, loop_wait 1, retry_timeout 2 (default N 8);
              default = ttl 30, loop_wait 10, retry_timeout 10 (default N 3).
    --runs N overrides N for every profile.  --markdown prints only the
    markdown tables (without: also one line per run).  --out F also writes
    what was printed to F; --json F writes every run's raw figures;
    --from-json F (repeatable) runs nothing and prints the tables of saved
    runs (e.g. a fast and a default invocation together).
Runs as root (PostgreSQL and Patroni run as user postgres); everything on
127.0.0.1; every wait is bounded; progress goes to stderr.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'double'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'double', 'patroni'))

import harness  # noqa: E402

PROFILES = {
    'fast': {'ttl': 5, 'loop_wait': 1, 'retry_timeout': 2},
    'default': {'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10},
}
DEFAULT_RUNS = {'fast': 8, 'default': 3}
HAPG_EXTRA_CONF = {'wal_retrieve_retry_interval': '500ms',
                   'hapg.replication_conninfo': 'user=postgres'}
POLL_INTERVAL = 0.02
TABLE = 'bench_failover'


def log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), file=sys.stderr, flush=True)


def fence_margin(ttl):
    """hapg's fence margin (src/lease.c hapg_fence_margin_ms), in seconds."""
    return min(2.0, max(0.5, ttl * 0.1))


# --------------------------------------------------------------------------
# a watch on one object (the leader lock) through the double's admin port

class LockWatch:
    """Follows one object with a Kubernetes watch and keeps every change with
    the monotonic time it was seen: {'t', 'type', 'rv', 'holder', 'renew',
    'renewed'} ('renewed': same holder as the previous event, new renewTime).
    extract(obj) -> (holder, renewTime)."""

    def __init__(self, double, list_path, name, extract, max_seconds):
        self.double = double
        self.list_path = list_path
        self.name = name
        self.extract = extract
        self.deadline = time.monotonic() + max_seconds
        self.events = []
        self.cond = threading.Condition()
        self.stop_ev = threading.Event()
        self.conn = None
        self.error = None
        self.ctx = ssl.create_default_context(cafile=double.ca_file) if double.tls else None
        self.t = threading.Thread(target=self._run, daemon=True, name='watch-' + name)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        conn = self.conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass
        self.t.join(10)

    def _connect(self):
        if self.ctx is not None:
            return http.client.HTTPSConnection('127.0.0.1', self.double.admin_port,
                                               context=self.ctx, timeout=60)
        return http.client.HTTPConnection('127.0.0.1', self.double.admin_port, timeout=60)

    def _run(self):
        rv = None
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            q = {'watch': '1', 'fieldSelector': 'metadata.name=' + self.name,
                 'timeoutSeconds': '30'}
            if rv:
                q['resourceVersion'] = rv
            conn = self._connect()
            self.conn = conn
            try:
                conn.request('GET', self.list_path + '?' + urllib.parse.urlencode(q),
                             headers={'Authorization': 'Bearer ' + harness.ADMIN_TOKEN})
                r = conn.getresponse()
                if r.status != 200:
                    self.error = 'watch -> %s %s' % (r.status, r.read()[:200])
                    rv = None
                    self.stop_ev.wait(0.2)
                    continue
                while not self.stop_ev.is_set():
                    line = r.readline()
                    if not line:
                        break
                    t = time.monotonic()
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    typ = ev.get('type')
                    obj = ev.get('object') or {}
                    if typ == 'ERROR':          # 410 Expired: start over
                        rv = None
                        break
                    nrv = (obj.get('metadata') or {}).get('resourceVersion')
                    if nrv:
                        rv = nrv
                    if typ == 'BOOKMARK':
                        continue
                    holder, renew = (None, None) if typ == 'DELETED' else self.extract(obj)
                    self._add(t, typ, nrv, holder, renew)
            except (OSError, http.client.HTTPException, ValueError) as e:
                if not self.stop_ev.is_set():
                    self.error = '%s: %s' % (type(e).__name__, e)
                    self.stop_ev.wait(0.1)
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def _add(self, t, typ, rv, holder, renew):
        with self.cond:
            prev = self.events[-1] if self.events else None
            renewed = bool(prev and holder and prev['holder'] == holder
                           and renew and renew != prev['renew'])
            self.events.append({'t': t, 'type': typ, 'rv': rv, 'holder': holder,
                                'renew': renew, 'renewed': renewed})
            self.cond.notify_all()

    def wait_event(self, pred, after, timeout, what):
        """The first event seen after monotonic time `after` with pred(ev)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev['t'] > after and pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise harness.WaitTimeout('timed out after %.0fs waiting for %s (watch error: %s)'
                                              % (timeout, what, self.error))
                self.cond.wait(min(left, 0.5))

    def find(self, pred, after):
        with self.cond:
            for ev in self.events:
                if ev['t'] > after and pred(ev):
                    return ev
        return None


def lease_extract(obj):
    spec = obj.get('spec') or {}
    return spec.get('holderIdentity') or None, spec.get('renewTime')


def configmap_extract(obj):
    ann = (obj.get('metadata') or {}).get('annotations') or {}
    return ann.get('leader') or None, ann.get('renewTime')


# --------------------------------------------------------------------------
# writers: an INSERT every 20 ms into one member

class Writer:
    """Sends INSERT into one member every POLL_INTERVAL until stopped (or
    max_seconds), keeping the connection.  After arm(t) it records the
    first success and the first failure seen after t (monotonic)."""

    def __init__(self, label, port, max_seconds, stop_on=None):
        self.label, self.port = label, port
        self.deadline = time.monotonic() + max_seconds
        self.stop_on = stop_on          # 'ok' or 'fail': end after the first one when armed
        self.armed_at = None
        self.first_ok = None
        self.first_fail = None
        self.fail_error = None
        self.last_ok = None
        self.oks = 0
        self.ok_times = []              # every success (bench/outage.py)
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True, name='writer-' + label)

    def start(self):
        self.t.start()
        return self

    def arm(self, t):
        self.armed_at = t

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)

    def _connect(self):
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=self.port, user='postgres',
                                dbname='postgres', connect_timeout=1,
                                options='-c statement_timeout=1000',
                                application_name='bench-failover')
        conn.autocommit = True
        return conn

    def _run(self):
        import psycopg2
        conn = None
        nxt = time.monotonic()
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            err = None
            try:
                if conn is None:
                    conn = self._connect()
                with conn.cursor() as cur:
                    cur.execute('INSERT INTO ' + TABLE + ' (member) VALUES (%s)', (self.label,))
            except psycopg2.Error as e:
                err = e
            t = time.monotonic()
            armed = self.armed_at is not None and t > self.armed_at
            if err is None:
                self.last_ok = t
                self.oks += 1
                self.ok_times.append(t)
                if armed and self.first_ok is None:
                    self.first_ok = t
                    if self.stop_on == 'ok':
                        break
            else:
                if armed and self.first_fail is None:
                    self.first_fail = t
                    first = (str(err).strip().splitlines() or [''])[0]
                    self.fail_error = ('%s: %s' % (type(err).__name__, first))[:160]
                    if self.stop_on == 'fail':
                        break
                if conn is not None and (conn.closed or isinstance(
                        err, (psycopg2.OperationalError, psycopg2.InterfaceError))):
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
            nxt += POLL_INTERVAL
            now = time.monotonic()
            if nxt < now:
                nxt = now
            self.stop_ev.wait(nxt - now)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def first_write(writers):
    """(time, label) of the earliest armed success among writers, or (None, None)."""
    best = (None, None)
    for w in writers:
        if w.first_ok is not None and (best[0] is None or w.first_ok < best[0]):
            best = (w.first_ok, w.label)
    return best


def wait_first_write(writers, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t, who = first_write(writers)
        if t is not None:
            return t, who
        time.sleep(0.02)
    return None, None


def _pg(port, query, params=None, timeout=3):
    import psycopg2
    conn = psycopg2.connect(host='127.0.0.1', port=port, user='postgres', dbname='postgres',
                            connect_timeout=timeout, application_name='bench-failover')
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def prepare_table(leader_port, replica_ports, timeout):
    """Create the benchmark table on the leader and wait until every replica
    has replayed it; also check both replicas stream from the leader."""
    _pg(leader_port, 'CREATE TABLE IF NOT EXISTS ' + TABLE + ' (id bigserial PRIMARY KEY, '
        'member text, at timestamptz DEFAULT clock_timestamp())')
    harness.wait_for(lambda: len(_pg(leader_port, "SELECT 1 FROM pg_stat_replication "
                                                  "WHERE state = 'streaming'")) >= len(replica_ports),
                     timeout, '%d replicas streaming' % len(replica_ports))
    for p in replica_ports:
        harness.wait_for(lambda p=p: _pg(p, "SELECT to_regclass(%s) IS NOT NULL", (TABLE,))[0][0],
                         timeout, 'table %s replayed on the replica at port %d' % (TABLE, p))


def pids_of_tree(pid):
    """pid and its direct children (the postmaster's children are all direct)."""
    return [pid] + harness.children_of(pid)


def kill_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------
# one run (either system)

class System:
    """What a run needs from one system: start, leader, ports, watch, kill, user."""
    name = None

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError


class HapgSystem(System):
    name = 'hapg'
    extra_conf = HAPG_EXTRA_CONF

    def __init__(self, prof):
        self.prof = prof
        self.c = None

    def start(self):
        ttl = self.prof['ttl']
        self.c = harness.Cluster(n=3, name='fo', profile=self.prof, extra_conf=self.extra_conf)
        self.c.start()
        self.leader = self.c.wait_leader(timeout=3 * ttl + 20)
        harness.wait_for(lambda: self.c.m(self.leader).running() and not self.c.in_recovery(self.leader),
                         3 * ttl + 20, 'the Lease holder %s running as a primary' % self.leader)
        self.members = list(self.c.names)
        self.ports = {m: self.c.m(m).port for m in self.members}
        harness.wait_for(lambda: all((self.c.status(m) or {}).get('leader') == self.leader
                                     and (self.c.status(m) or {}).get('api_ok')
                                     for m in self.members),
                         3 * ttl + 20, 'every member sees %s as the leader' % self.leader)
        prepare_table(self.ports[self.leader],
                      [self.ports[m] for m in self.members if m != self.leader], 3 * ttl + 30)
        return self

    def watch(self, max_seconds):
        c = self.c
        return LockWatch(c.double, '/apis/coordination.k8s.io/v1/namespaces/%s/leases' % c.namespace,
                         c.name, lease_extract, max_seconds).start()

    def double(self):
        return self.c.double

    def leader_pids(self):
        pm = self.c.postmaster_pid(self.leader)
        if not pm:
            raise harness.HarnessError('no postmaster for %s' % self.leader)
        return pids_of_tree(pm)

    def after_kill(self):
        try:
            self.c.kill9(self.leader, timeout=10)   # lock files of the dead member
        except Exception:  # noqa: BLE001
            pass

    def fault_user(self):
        return self.leader          # each member's API user is its own name

    def logs(self):
        return self.c.log_tails(25) if self.c else ''

    def stop(self, failed=False):
        if self.c is not None:
            if failed:
                self.c.failed = True
            self.c.stop()


class PatroniSystem(System):
    name = 'Patroni'
    dcs_extra = {}

    def __init__(self, prof):
        self.prof = prof
        self.base = None
        self.d = None
        self.c = None

    def start(self):
        from patroni_cluster import PatroniCluster
        ttl = self.prof['ttl']
        self.base = tempfile.mkdtemp(prefix='hapg-bench-fo-patroni-')
        os.chmod(self.base, 0o755)
        self.members = ['pat-0', 'pat-1', 'pat-2']
        tokens = {'tok-%s-%s' % (m, os.urandom(4).hex()): m for m in self.members}
        ddir = os.path.join(self.base, 'double')
        os.makedirs(ddir)
        os.chmod(ddir, 0o755)
        self.d = harness.Double(ddir, tls=True, tokens=tokens)
        self.d.start()
        self.c = PatroniCluster(os.path.join(self.base, 'patroni'), self.d.url(self.d.api_port),
                                self.d.ca_file, list(tokens), admin_token=harness.ADMIN_TOKEN,
                                scope='pat', ttl=ttl, loop_wait=self.prof['loop_wait'],
                                retry_timeout=self.prof['retry_timeout'], member_names=self.members,
                                log_level='INFO', dcs_extra=self.dcs_extra)
        self.c.start()
        self.leader = self.c.wait_leader(6 * ttl + 60)
        self.leader = self.c.wait_steady(6 * ttl + 60)
        self.ports = {m: self.c.pg_port(m) for m in self.members}
        prepare_table(self.ports[self.leader],
                      [self.ports[m] for m in self.members if m != self.leader], 3 * ttl + 60)
        return self

    def watch(self, max_seconds):
        return LockWatch(self.d, '/api/v1/namespaces/%s/configmaps' % self.c.namespace,
                         self.c.scope + '-leader', configmap_extract, max_seconds).start()

    def double(self):
        return self.d

    def leader_pids(self):
        pids = []
        p = self.c.procs.get(self.leader)
        if p is not None and p.poll() is None:
            pids.append(p.pid)
            pids += harness.children_of(p.pid)
        pm = self.c.postmaster_pid(self.leader)
        if pm:
            pids += pids_of_tree(pm)
        return sorted(set(pids))

    def after_kill(self):
        self.c.kill(self.leader)    # reaps the patroni process

    def fault_user(self):
        return self.leader

    def logs(self):
        if self.c is None:
            return ''
        return '\n'.join('--- %s patroni.log:\n%s' % (k, v) for k, v in self.c.log_tails(25).items())

    def stop(self, failed=False):
        if self.c is not None:
            try:
                self.c.stop()
            except Exception as e:  # noqa: BLE001
                log('stopping Patroni: %s' % e)
        if self.d is not None:
            self.d.stop()
        if self.base:
            if failed:
                log('Patroni files kept in %s' % self.base)
            else:
                shutil.rmtree(self.base, ignore_errors=True)


def run_once(system_cls, prof, scenario, delay):
    """One fresh cluster, one failure; returns a dict of figures (seconds)."""
    ttl, lw = prof['ttl'], prof['loop_wait']
    s = system_cls(prof)
    watch, writers, old_w, failed = None, [], None, False
    budget = ttl + 4 * lw + 3 * prof['retry_timeout'] + 30      # kill/fault -> new leader, at most
    try:
        t_start = time.monotonic()
        s.start()
        up = time.monotonic() - t_start
        leader = s.leader
        others = [m for m in s.members if m != leader]
        watch = s.watch(max_seconds=budget + 3 * lw + 120)
        # the watch's first event is the current state; then a fresh renewal
        watch.wait_event(lambda ev: ev['holder'] == leader, 0, 30, 'the lock held by %s' % leader)
        writers = [Writer(m, s.ports[m], budget + 3 * lw + 60, stop_on='ok').start() for m in others]
        if scenario == 'fence':
            old_w = Writer(leader, s.ports[leader], budget + 3 * lw + 60, stop_on='fail').start()
        time.sleep(0.3)                 # writers connected
        ev = watch.wait_event(lambda e: e['renewed'] and e['holder'] == leader, time.monotonic(),
                              3 * lw + 10, 'a renewal of the lock by %s' % leader)
        t_renew = ev['t']
        time.sleep(max(0.0, t_renew + delay - time.monotonic()))
        if scenario == 'kill':
            pids = s.leader_pids()
            t0 = time.monotonic()
            for w in writers:
                w.arm(t0)
            kill_all(pids)
            s.after_kill()
        else:
            t0 = time.monotonic()
            for w in writers + [old_w]:
                w.arm(t0)
            s.double().add_fault(user=s.fault_user(), mode='error', status=503)
        t_write, new_leader = wait_first_write(writers, budget)
        if scenario == 'fence':
            harness.wait_for(lambda: old_w.first_fail is not None, 2 * ttl + 30,
                             'the old leader %s to refuse a write' % leader, interval=0.05)
        if t_write is None:
            raise harness.WaitTimeout('no write on %s within %ds after the %s' % (
                others, budget, 'kill' if scenario == 'kill' else 'fault'))
        acq = watch.find(lambda e: e['holder'] and e['holder'] != leader, t0)
        if acq is None:         # the event may trail the first write by a few ms
            try:
                acq = watch.wait_event(lambda e: e['holder'] and e['holder'] != leader, t0, 5,
                                       'the lock taken over')
            except harness.WaitTimeout:
                acq = None
        r = {'system': s.name, 'scenario': scenario, 'delay': delay, 'up_s': up,
             'old_leader': leader, 'new_leader': new_leader,
             'actual_delay': t0 - t_renew,
             'left': ttl - (t0 - t_renew),
             'failover': t_write - t0,
             'lock_taken': (acq['t'] - t0) if acq else None,
             'lock_holder': acq['holder'] if acq else None,
             'promote': (t_write - acq['t']) if acq else None}
        r['floor'] = r['left'] + r['promote'] if acq else None
        r['over'] = r['failover'] - r['floor'] if acq else None
        if acq and acq['holder'] != new_leader:
            r['note'] = 'first write on %s but the lock went to %s' % (new_leader, acq['holder'])
        if scenario == 'fence':
            r['fenced'] = old_w.first_fail - t0
            r['fence_error'] = old_w.fail_error
            r['last_old_write'] = (old_w.last_ok - t0) if old_w.last_ok and old_w.last_ok > t0 else None
            if s.name == 'hapg':        # its own deadline, src/lease.c
                r['fence_expected'] = ttl - fence_margin(ttl) - (t0 - t_renew)
            else:                       # at most: its next loop, then retry_timeout of failures
                r['fence_expected'] = (lw - (t0 - t_renew)) % lw + prof['retry_timeout']
            r['gap'] = r['failover'] - r['fenced']      # > 0: no two writable leaders
        return r
    except BaseException:
        failed = True
        log_failure(s)
        raise
    finally:
        stop_run(s, writers + ([old_w] if old_w is not None else []), watch, failed)


def log_failure(s):
    """A failed run's last log lines, to stderr (never raises)."""
    try:
        log('run failed; last log lines:\n' + s.logs())
    except Exception:  # noqa: BLE001
        pass


def stop_run(s, writers, watch, failed):
    """Stop a run's writers, its watch and its system (files kept if it failed)."""
    for w in writers:
        w.stop()
    if watch is not None:
        watch.stop()
    s.stop(failed=failed)


# --------------------------------------------------------------------------
# the report

def fmt_s(x):
    return 'n/a' if x is None else '%.2f s' % x


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {'median': statistics.median(vals), 'min': min(vals), 'max': max(vals), 'n': len(vals)}


def cell(vals):
    st = stats(vals)
    if st is None:
        return 'n/a'
    return '%.2f s (%.2f–%.2f)' % (st['median'], st['min'], st['max'])


def med(vals):
    st = stats(vals)
    return 'n/a' if st is None else '%.2f s' % st['median']


def tables(results, args, notes):
    out = []
    order = [(p, sysn) for p in args.profiles for sysn in ('hapg', 'Patroni')]

    def runs(p, sysn, sc):
        return [r for r in results.get((p, sysn, sc), []) if 'error' not in r]

    def errors(p, sysn, sc):
        return [r for r in results.get((p, sysn, sc), []) if 'error' in r]

    if 'kill' in args.scenarios:
        out += ['### Node loss: SIGKILL of the leader (postgres + agent) → first INSERT on a new leader',
                '',
                '| profile (ttl/loop_wait/retry_timeout) | system | failover: median (min–max) | N '
                '| time left on the lock at the kill | promotion: lock taken → first write '
                '| floor = left + promotion | failover − floor (median, min–max) |',
                '|---|---|---:|---:|---:|---:|---:|---:|']
        for p, sysn in order:
            key = (p, sysn, 'kill')
            if key not in results:
                continue
            rs = runs(p, sysn, 'kill')
            pr = PROFILES[p]
            n_txt = '%d' % len(rs) + (' (+%d failed)' % len(errors(p, sysn, 'kill')) if errors(p, sysn, 'kill') else '')
            out.append('| %s (%d/%d/%d) | %s | %s | %s | %s | %s | %s | %s |' % (
                p, pr['ttl'], pr['loop_wait'], pr['retry_timeout'], sysn,
                cell([r['failover'] for r in rs]), n_txt,
                med([r['left'] for r in rs]), med([r['promote'] for r in rs]),
                med([r['floor'] for r in rs]), cell([r['over'] for r in rs])))
        out.append('')
    if 'fence' in args.scenarios:
        out += ['### Leader cut off from the API (double answers 503 to its user) → old leader refuses writes, new leader writes',
                '',
                '| profile (ttl/loop_wait/retry_timeout) | system | old leader stops writes: median (min–max) '
                '| expected (hapg: ttl − margin − delay; Patroni: at most next loop + retry_timeout) '
                '| first write on a new leader: median (min–max) | N '
                '| time left on the lock at the fault | floor = left + promotion '
                '| no-writer gap (new write − fenced; > 0 = never two writers) |',
                '|---|---|---:|---:|---:|---:|---:|---:|---:|']
        for p, sysn in order:
            key = (p, sysn, 'fence')
            if key not in results:
                continue
            rs = runs(p, sysn, 'fence')
            pr = PROFILES[p]
            n_txt = '%d' % len(rs) + (' (+%d failed)' % len(errors(p, sysn, 'fence')) if errors(p, sysn, 'fence') else '')
            out.append('| %s (%d/%d/%d) | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                p, pr['ttl'], pr['loop_wait'], pr['retry_timeout'], sysn,
                cell([r['fenced'] for r in rs]),
                ('' if sysn == 'hapg' else '≤ ') + med([r['fence_expected'] for r in rs]),
                cell([r['failover'] for r in rs]), n_txt,
                med([r['left'] for r in rs]), med([r['floor'] for r in rs]),
                cell([r['gap'] for r in rs])))
        out.append('')
    prof_txt = ', '.join('%s = ttl %d s, loop_wait %d s, retry_timeout %d s' % (
        p, PROFILES[p]['ttl'], PROFILES[p]['loop_wait'], PROFILES[p]['retry_timeout']) for p in args.profiles)
    out += ['Each run: a fresh 3-member cluster on its own API double (127.0.0.1, TLS, one API user per member); '
            'hapg = PostgreSQL 15 + the hapg worker (tests/harness.py, wal_retrieve_retry_interval 500ms, '
            'hapg.replication_conninfo user=postgres); Patroni = Debian Patroni 3.0.2, Kubernetes mode, '
            'ConfigMap lock (tests/double/patroni/patroni_cluster.py). Profiles: %s.' % prof_txt,
            'The failure is injected a delay after a renewal of the lock seen through a watch; the delays '
            'are spread evenly over [0, loop_wait) across the N runs. Times are from the kill/fault to the first '
            'successful autocommit INSERT (each member polled every 20 ms). "Time left" = ttl − (failure − '
            'renewal seen); "promotion" = first write − the lock takeover seen in the watch; medians per column.']
    if 'fence' in args.scenarios:
        out.append('Fencing: hapg stops a leader that could not renew at last renewal sent + ttl − margin '
                   '(margin = ttl/10 clamped to [0.5 s, 2 s]: %s), with a fast shutdown; Patroni demotes (stops '
                   'Postgres, restarts it read-only) in the loop where it finds it cannot read or update the lock, '
                   'within retry_timeout of that loop. The old leader is polled like the others; '
                   '"stops writes" is its first refused INSERT.' % ', '.join(
                       '%s %.1f s' % (p, fence_margin(PROFILES[p]['ttl'])) for p in args.profiles))
    out += notes
    return '\n'.join(out)


def per_run_lines(results):
    out = ['', '### Runs', '',
           '| profile | system | scenario | delay | left | lock taken | first write | fenced | new leader | note |',
           '|---|---|---|---:|---:|---:|---:|---:|---|---|']
    for (p, sysn, sc), rs in results.items():
        for r in rs:
            if 'error' in r:
                out.append('| %s | %s | %s | %.2f s | | | | | | failed: %s |' % (
                    p, sysn, sc, r['delay'], r['error'][:150].replace('|', '/').replace('\n', ' ')))
                continue
            out.append('| %s | %s | %s | %.2f s | %s | %s | %s | %s | %s | %s |' % (
                p, sysn, sc, r['actual_delay'], fmt_s(r['left']), fmt_s(r['lock_taken']),
                fmt_s(r['failover']), fmt_s(r.get('fenced')), r['new_leader'],
                (r.get('note') or r.get('fence_error') or '').replace('|', '/')[:120]))
    return '\n'.join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=None, help='runs per cell (default: fast 8, default 3)')
    ap.add_argument('--profiles', default='fast,default')
    ap.add_argument('--scenarios', default='kill,fence')
    ap.add_argument('--no-patroni', action='store_true')
    ap.add_argument('--markdown', action='store_true', help='print only the markdown tables')
    ap.add_argument('--out', help='also write the output to this file')
    ap.add_argument('--json', help='write every run\'s figures to this file')
    ap.add_argument('--from-json', action='append', metavar='F',
                    help='run nothing: print the tables from files written by --json (repeatable)')
    args = ap.parse_args()
    args.profiles = [x.strip() for x in args.profiles.split(',') if x.strip()]
    args.scenarios = [x.strip() for x in args.scenarios.split(',') if x.strip()]
    for p in args.profiles:
        if p not in PROFILES:
            ap.error('unknown profile %r (known: %s)' % (p, ', '.join(PROFILES)))
    for sc in args.scenarios:
        if sc not in ('kill', 'fence'):
            ap.error('unknown scenario %r (kill, fence)' % sc)
    if args.runs is not None and not 1 <= args.runs <= 100:
        ap.error('--runs must be in 1..100')
    if args.from_json:
        results = {}
        for fn in args.from_json:
            with open(fn) as f:
                for r in json.load(f):
                    if r.get('profile') in args.profiles and r.get('scenario') in args.scenarios:
                        results.setdefault((r['profile'], r['system'], r['scenario']), []).append(r)
        if args.no_patroni:
            results = {k: v for k, v in results.items() if k[1] != 'Patroni'}
        output(results, args, ['Tables made from saved runs: %s.' % ', '.join(args.from_json)])
        return 0
    if os.geteuid() != 0:
        ap.error('run as root (PostgreSQL and Patroni run as user postgres)')

    def on_term(signum, frame):
        raise SystemExit('terminated by signal %d' % signum)
    signal.signal(signal.SIGTERM, on_term)

    systems = [HapgSystem] + ([] if args.no_patroni else [PatroniSystem])
    results = {}
    notes = []
    if args.no_patroni:
        notes.append('Patroni: skipped (--no-patroni).')
    t_all = time.monotonic()
    for p in args.profiles:
        prof = PROFILES[p]
        n = args.runs or DEFAULT_RUNS[p]
        for sc in args.scenarios:
            for sys_cls in systems:
                key = (p, sys_cls.name, sc)
                results[key] = []
                for i in range(n):
                    delay = prof['loop_wait'] * (i + 0.5) / n
                    log('%s %s %s run %d/%d, delay %.2f s ...' % (p, sys_cls.name, sc, i + 1, n, delay))
                    try:
                        r = run_once(sys_cls, prof, sc, delay)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:  # noqa: BLE001
                        log('  failed: %s: %s' % (type(e).__name__, e))
                        results[key].append({'system': sys_cls.name, 'scenario': sc, 'delay': delay,
                                             'error': '%s: %s' % (type(e).__name__, e)})
                        continue
                    results[key].append(r)
                    log('  up %.1f s; left %.2f s; lock taken %s; first write %.2f s on %s%s' % (
                        r['up_s'], r['left'], fmt_s(r['lock_taken']), r['failover'], r['new_leader'],
                        '; old leader refused writes at %.2f s (%s)' % (r['fenced'], r['fence_error'])
                        if sc == 'fence' else ''))
    notes.append('Total benchmark time %.0f s.' % (time.monotonic() - t_all))
    output(results, args, notes)
    return 0


def output(results, args, notes):
    text = tables(results, args, notes)
    if not args.markdown:
        text += '\n' + per_run_lines(results)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([dict(r, profile=k[0], system=k[1], scenario=k[2])
                       for k, rs in results.items() for r in rs], f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
