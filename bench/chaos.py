#!/usr/bin/python3
"""The fault campaign (issue 17, part 1): injected faults, one at a time, on
a three-member hapg cluster under a continuous write load, judged by a
checker for two writable primaries, lost acknowledged writes, recovery and
server crashes.

Set-up
------
Three members under bin/hapg-launcher (tests/harness.py, launcher=True,
member_ports=True: each member reaches the API double through a port of its
own), fast profile ttl 5, loop_wait 1, retry_timeout 2.  Each member's
launcher runs in a cgroup v2 of its own (for the partition fault, below).

The client writes continuously through whichever member accepts writes:
WRITERS connections per member, each an autocommit `INSERT ... RETURNING`
every WRITE_INTERVAL on a kept connection (so connections to a paused
leader stay open and have commits in flight during the pause), reconnecting
after an error.  Standbys refuse (read only), a stopped member refuses the
connection; every acknowledged write is recorded (id, member, send and ack
times; the INSERT returns the server's WAL insertion timeline,
clock_timestamp() and WAL position).  The poller probes every member at the
same instant every POLL_INTERVAL: pg_is_in_recovery(), and when out of
recovery a probe commit.  bench/chaoscheck.py has the checker's exact rules.

Faults (--kinds; one at a time, the cluster recovers in between)
-----------------------------------------------------------------
kill-pg            kill -9 of the leader's postmaster (the launcher restarts it)
node-loss          kill -9 of the leader's launcher and server together; the
                   harness starts it again after the failover
sigstop            SIGSTOP of the leader's whole tree for 2 x ttl, then SIGCONT
api-cut-leader     the leader's API requests get 503s, then hang (2 x ttl in all)
api-down           the API down for everyone (ports closed, or every request
                   hangs, or 503s) for ttl..2 x ttl
api-garbage        garbage bodies (the leader's or everyone's requests)
api-truncated      answers cut off half-way (the request was executed)
api-huge           9 MiB answers (over hapg's 8 MB limit) to one member
api-slow           answers delayed 0.3..1.6 s (below and above the 1 s deadline)
replica-kill       a replica's node lost (or only its postmaster killed), started
                   again later
replica-partition  a replica cut off from the leader (iptables: connections
                   between the two members' cgroups to each other's ports are
                   dropped both ways) for ttl..3 x ttl
switchover         hapg_switchover() (to the best or a named replica, called on
                   a replica or on the leader) under load
sigterm            SIGTERM of the leader's launcher (clean stop), started again
rm-datadir         the leader's data directory removed; the node gets a fresh
                   base backup of the new leader and starts again
kill-leader-replica-down   node loss of a replica, then of the leader while the
                   replica is down; both come back later
api-cut-switchover hapg_switchover() and, 0..0.8 s later, the API down for
                   everyone for ttl..2 x ttl
api-cut-partition  (with --failsafe) the leader's API requests get 503s and,
                   ttl..2 x ttl later (failsafe mode has begun), one replica
                   is partitioned from it (as replica-partition) for
                   ttl..3 x ttl: the leader must fence within the bound, the
                   other replica take over

Judged per fault (from its start to the next fault's start) and at the end
---------------------------------------------------------------------------
dual     two writable primaries (chaoscheck: zombie, overlap, poll) = 0
lost     acknowledged writes missing from the leader once recovered;
         0 required for switchover, sigterm, replica-kill, replica-partition
         (the leader is never lost there); the others lose a leader with
         asynchronous replication, so their losses are reported with the
         WAL they spanned beside hapg.maximum_lag_on_failover
recovery three members, one leader writable (a client write acknowledged
         after the fault ended), two replicas streaming from it on its
         timeline, each within 1 MB of its position, within
         --recovery-bound seconds of the end of the fault; the time is reported
crash    PANIC, TRAP (assertion), a server process terminated by signal
         4/6/7/8/11, or a Python traceback (the launcher) in a member log = 0
A fault with none of these is passed.

CLI
---
  /usr/bin/python3 bench/chaos.py --faults N --seed S [--kinds a,b,...]
      [--skip-kinds a,b] [--from K] [--recovery-bound 60] [--json F]
      [--markdown] [--keep] [--failsafe]
--failsafe runs every member with hapg.failsafe_mode = on: the api-* faults
then keep the leader (no failover) and everything else is judged the same.
The schedule (kind and parameters of every fault) is drawn from the seed
before anything runs and printed; `--from K` runs only faults K.. of the
same schedule, to replay a failing one.  Prints one line per fault, a
per-kind table, one summary line, and "N passed, N failed" (faults).
Exits 1 if any fault failed.  Runs as root (PostgreSQL as user postgres),
everything on 127.0.0.1; every wait is bounded; cleans up the cgroups and
its iptables chain (named after its pid) at exit.
"""

import argparse
import collections
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import chaoscheck  # noqa: E402
from chaoscheck import Poll, Write  # noqa: E402

PROFILE = {'ttl': 5, 'loop_wait': 1, 'retry_timeout': 2}
WRITERS = 2
WRITE_INTERVAL = 0.03
POLL_INTERVAL = 0.1
SETTLE = 1.5            # clean writes between recovery and the next fault
MAX_LAG = 1 << 20       # hapg.maximum_lag_on_failover (the default, 1MB)
TABLE = 'chaos_w'

KINDS = ['kill-pg', 'node-loss', 'sigstop', 'api-cut-leader', 'api-down', 'api-garbage',
         'api-truncated', 'api-huge', 'api-slow', 'replica-kill', 'replica-partition',
         'switchover', 'sigterm', 'rm-datadir', 'kill-leader-replica-down', 'api-cut-switchover']
# only with --failsafe (or named in --kinds), so that the schedules of the
# seeds above stay as they were
FAILSAFE_KINDS = ['api-cut-partition']
ALL_KINDS = KINDS + FAILSAFE_KINDS
# kinds that never lose the leader: an acknowledged write lost there is a violation
ZERO_LOSS = {'switchover', 'sigterm', 'replica-kill', 'replica-partition'}

CRASH_RX = re.compile(r'PANIC:|TRAP:|FailedAssertion|terminated by signal (4|6|7|8|11)\b|'
                      r'Segmentation fault|Traceback \(most recent call last\)')

INSERT = ("INSERT INTO %s (id, member, src) VALUES (%%s, %%s, %%s) RETURNING "
          "('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int, "
          "extract(epoch FROM clock_timestamp())::float8, "
          "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint" % TABLE)


def log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# network partitions: a cgroup per member, iptables rules on those cgroups

def cgroup2_root():
    """Mount point of the cgroup v2 hierarchy, or None."""
    try:
        with open('/proc/self/mounts') as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == 'cgroup2':
                    return parts[1]
    except OSError:
        pass
    return None


class Partitioner:
    """Cuts two members' connections to each other.  Every member's launcher
    starts inside its own cgroup v2 (`wrap`), so every socket of its server
    belongs to it.  A cut adds, in a chain of ours jumped to from OUTPUT,
    rules that put a connection mark on any connection from one member's
    cgroup to the other's port, and drop every packet (both directions: on
    loopback both pass OUTPUT) of marked connections.  Healing removes the
    jump and flushes the chain.  Everything is named after our pid and
    removed by `close`."""

    def __init__(self):
        self.root = cgroup2_root()
        self.chain = 'HAPGCHAOS%d' % os.getpid()
        self.groups = {}
        self.mark = 0x4800
        self.cut_now = None
        self.chain_made = False
        self.ok, self.why = self._probe()

    def _probe(self):
        if os.geteuid() != 0:
            return False, 'not root'
        if not self.root:
            return False, 'no cgroup v2 hierarchy mounted'
        if not shutil.which('iptables'):
            return False, 'iptables is not installed'
        try:
            os.makedirs(self._path('probe'), exist_ok=True)
            self._ipt('-N', self.chain)
            self.chain_made = True
            self._ipt('-A', self.chain, '-p', 'tcp', '--dport', '1', '-m', 'cgroup',
                      '--path', self._rel('probe'), '-j', 'CONNMARK', '--set-mark', '1')
            self._ipt('-A', self.chain, '-m', 'connmark', '--mark', '1', '-j', 'DROP')
            self._ipt('-F', self.chain)
            return True, ''
        except Exception as e:  # noqa: BLE001
            return False, str(e)
        finally:
            try:
                os.rmdir(self._path('probe'))
            except OSError:
                pass

    def _rel(self, name):
        return 'hapgchaos-%d-%s' % (os.getpid(), name)

    def _path(self, name):
        return os.path.join(self.root, self._rel(name))

    @staticmethod
    def _ipt(*args, check=True):
        p = subprocess.run(['iptables', '-w', '5'] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError('iptables %s: %s' % (' '.join(args), p.stdout.strip()))
        return p

    def wrap(self, member, argv):
        """argv run inside the member's cgroup."""
        if not self.ok:
            return argv
        path = self._path(member)
        os.makedirs(path, exist_ok=True)
        self.groups[member] = path
        return ['sh', '-c', 'echo $$ > "$0"/cgroup.procs && exec "$@"', path] + list(argv)

    def cut(self, a, port_a, b, port_b):
        self.mark += 1
        m = '0x%x' % self.mark
        for src, dport in ((a, port_b), (b, port_a)):
            self._ipt('-A', self.chain, '-p', 'tcp', '--dport', str(dport), '-m', 'cgroup',
                      '--path', self._rel(src), '-j', 'CONNMARK', '--set-mark', m)
        self._ipt('-A', self.chain, '-m', 'connmark', '--mark', m, '-j', 'DROP')
        self._ipt('-I', 'OUTPUT', '1', '-j', self.chain)
        self.cut_now = (a, b)

    def heal(self):
        if self.cut_now is None:
            return
        while self._ipt('-D', 'OUTPUT', '-j', self.chain, check=False).returncode == 0:
            pass
        self._ipt('-F', self.chain, check=False)
        self.cut_now = None

    def close(self):
        if self.chain_made:
            self.heal()
            self._ipt('-F', self.chain, check=False)
            self._ipt('-X', self.chain, check=False)
            self.chain_made = False
        for path in self.groups.values():
            top = os.path.join(self.root, 'cgroup.procs')
            try:
                with open(os.path.join(path, 'cgroup.procs')) as f:
                    left = [x for x in f.read().split() if x]
                for pid in left:        # never leave a process in a cgroup we remove
                    with open(top, 'w') as f:
                        f.write(pid)
                os.rmdir(path)
            except OSError:
                pass


class ChaosCluster(harness.Cluster):
    """harness.Cluster whose launchers start inside a cgroup per member."""

    partitioner = None

    def _launcher_argv(self, m):
        argv = super()._launcher_argv(m)
        return self.partitioner.wrap(m.name, argv) if self.partitioner else argv


# --------------------------------------------------------------------------
# the client and the poller

class Recorder:
    """Everything the client and the poller saw (thread-safe appends)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.writes = []
        self.polls = []
        self.refused = collections.Counter()
        self.errors = collections.Counter()
        self.ids = itertools.count(1)
        self.last_ack = {}
        self.first = {}         # chaoscheck.first_acks() of every write, kept up to date
        self.tenure = {}        # chaoscheck.add_tenure() of every write

    def add_write(self, w):
        with self.lock:
            self.writes.append(w)
            self.last_ack[(w.gen, w.member)] = w.ack
            chaoscheck.add_first(self.first, w)
            chaoscheck.add_tenure(self.tenure, w)

    def window(self, i0, j0, t0, t1, gen):
        """(writes, polls, first, tenure) of one generation acknowledged in
        [t0, t1), looking from list positions i0 / j0 on."""
        with self.lock:
            ws = [w for w in self.writes[i0:] if t0 <= w.ack < t1 and w.gen == gen]
            ps = [q for q in self.polls[j0:] if q.gen == gen and q.pack is not None
                  and t0 <= q.pack < t1]
            return ws, ps, dict(self.first), dict(self.tenure)

    def marks(self):
        with self.lock:
            return len(self.writes), len(self.polls)

    def add_poll(self, p):
        with self.lock:
            self.polls.append(p)

    def writes_since(self, t, gen=None):
        with self.lock:
            return [w for w in self.writes if w.ack >= t and (gen is None or w.gen == gen)]


class Client:
    """WRITERS writer threads and one poller thread per member."""

    def __init__(self, cluster, rec, gen):
        self.c = cluster
        self.rec = rec
        self.gen = gen
        self.stop_ev = threading.Event()
        self.threads = []
        self.t0 = None

    def start(self):
        self.t0 = time.time()
        for name in self.c.names:
            for k in range(WRITERS):
                self.threads.append(threading.Thread(target=self._writer, args=(name, 'w%d' % k),
                                                     daemon=True, name='w-%s-%d' % (name, k)))
            self.threads.append(threading.Thread(target=self._poller, args=(name,), daemon=True,
                                                 name='poll-' + name))
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)

    def _connect(self, name):
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=self.c.m(name).port, user='postgres',
                                dbname='postgres', connect_timeout=1,
                                options='-c statement_timeout=3000 -c log_min_messages=fatal',
                                application_name='hapg-chaos')
        conn.autocommit = True
        return conn

    def _insert(self, conn, name, src):
        """One write; the Write if acknowledged, else None (raises on a broken
        connection)."""
        import psycopg2.errors
        wid = next(self.rec.ids)
        t0 = time.time()
        try:
            with conn.cursor() as cur:
                cur.execute(INSERT, (wid, name, src))
                tl, clk, lsn = cur.fetchone()
        except psycopg2.errors.ReadOnlySqlTransaction:
            self.rec.refused[name] += 1
            return None
        except psycopg2.Error as e:
            if conn.closed:
                raise
            # refused by the server (e.g. a commit check): the connection is still fine
            self.rec.errors[(name, (str(e).strip().splitlines() or ['?'])[0][:80])] += 1
            if getattr(e, 'pgcode', None) is None:
                raise
            return None
        w = Write(wid, name, src, t0, time.time(), int(tl), float(clk), int(lsn), self.gen)
        self.rec.add_write(w)
        return w

    def _writer(self, name, src):
        conn = None
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            now = time.monotonic()
            if now < nxt:
                self.stop_ev.wait(nxt - now)
                continue
            nxt = now + WRITE_INTERVAL
            try:
                if conn is None:
                    conn = self._connect(name)
                self._insert(conn, name, src)
            except Exception:  # noqa: BLE001 - down, stopping, broken connection
                self.rec.refused[name] += 1
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
        if conn is not None:
            conn.close()

    def _poller(self, name):
        conn = None
        while not self.stop_ev.is_set():
            rnd = int((time.time() - self.t0) / POLL_INTERVAL) + 1
            at = self.t0 + rnd * POLL_INTERVAL
            self.stop_ev.wait(max(0.0, at - time.time()))
            if self.stop_ev.is_set():
                break
            rec = psend = pack = None
            try:
                if conn is None:
                    conn = self._connect(name)
                with conn.cursor() as cur:
                    cur.execute('SELECT pg_is_in_recovery()')
                    rec = cur.fetchone()[0]
                if rec is False:
                    psend = time.time()
                    w = self._insert(conn, name, 'probe')
                    pack = w.ack if w else None
                    psend = w.send if w else None
            except Exception:  # noqa: BLE001
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
            self.rec.add_poll(Poll(rnd, name, rec, psend, pack, self.gen))
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------
# the schedule

def make_schedule(seed, n, kinds):
    """n faults (kind, params) drawn from the seed alone: every kind once
    per round of len(kinds) faults, in a random order."""
    rng = random.Random(seed)
    ttl = PROFILE['ttl']
    out = []
    bag = []
    for i in range(n):
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        p = {'seed': rng.randrange(1 << 30)}
        r = random.Random(p['seed'])
        if kind == 'node-loss':
            p['down_extra'] = round(r.uniform(0, ttl), 2)
        elif kind == 'sigstop':
            p['pause'] = 2 * ttl
        elif kind == 'api-cut-leader':
            p['errors'] = round(r.uniform(0.5, ttl), 2)
            p['total'] = 2 * ttl
        elif kind == 'api-down':
            p['how'] = r.choice(['refused', 'hang', 'error'])
            p['duration'] = round(r.uniform(ttl, 2 * ttl), 2)
        elif kind in ('api-garbage', 'api-truncated', 'api-slow'):
            p['target'] = r.choice(['leader', 'all'])
            p['duration'] = round(r.uniform(ttl, 2 * ttl), 2)
            if kind == 'api-slow':
                p['delay'] = round(r.uniform(0.3, 1.6), 2)
        elif kind == 'api-huge':
            p['target'] = r.choice(['leader', 'replica'])
            p['count'] = r.randint(3, 8)
        elif kind == 'replica-kill':
            p['replica'] = r.randrange(2)
            p['how'] = r.choice(['node', 'postmaster'])
            p['down'] = round(r.uniform(1, 2 * ttl), 2)
        elif kind == 'replica-partition':
            p['replica'] = r.randrange(2)
            p['duration'] = round(r.uniform(ttl, 3 * ttl), 2)
        elif kind == 'switchover':
            p['candidate'] = r.choice([None, 0, 1])
            p['caller'] = r.choice(['replica', 'leader'])
        elif kind == 'sigterm':
            p['down'] = round(r.uniform(0.5, ttl), 2)
        elif kind == 'kill-leader-replica-down':
            p['replica'] = r.randrange(2)
            p['gap'] = round(r.uniform(0.5, 3), 2)
            p['down_extra'] = round(r.uniform(0, ttl), 2)
            p['leader_first'] = r.random() < 0.5
        elif kind == 'api-cut-partition':
            p['replica'] = r.randrange(2)
            p['delay'] = round(r.uniform(ttl, 2 * ttl), 2)
            p['duration'] = round(r.uniform(ttl, 3 * ttl), 2)
        elif kind == 'api-cut-switchover':
            p['candidate'] = r.choice([None, 0, 1])
            p['delay'] = round(r.uniform(0, 0.8), 2)
            p['duration'] = round(r.uniform(ttl, 2 * ttl), 2)
        out.append((kind, p))
    return out


# --------------------------------------------------------------------------
# the campaign

class FaultError(Exception):
    """The fault could not be carried out as planned (counted as failed)."""


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rec = Recorder()
        self.part = Partitioner()
        self.c = None
        self.client = None
        self.gen = 0
        self.log_pos = {}
        self.checked = {}       # gen -> ids of acknowledged writes found on a leader
        self.lost_seen = set()
        self.results = []
        self.waited_on = []
        self.ttl = PROFILE['ttl']

    # -- cluster life
    def build(self):
        self.gen += 1
        ChaosCluster.partitioner = self.part
        c = ChaosCluster(n=3, name='chaos', profile=PROFILE, launcher=True, member_ports=True,
                         keep=self.args.keep,
                         extra_conf={'hapg.failsafe_mode': 'on'} if self.args.failsafe else None)
        c.start(timeout=180)
        self.c = c
        self.log_pos = {m: 0 for m in c.names}
        leader = c.wait_leader(timeout=60)
        c.wait_for(lambda: c.in_recovery(leader) is False, 60, 'the leader to accept writes')
        c.sql(leader, 'CREATE TABLE IF NOT EXISTS %s (id bigint PRIMARY KEY, member text NOT NULL, '
                      'src text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())' % TABLE)
        self.client = Client(c, self.rec, self.gen).start()
        self.checked[self.gen] = set()
        log('cluster %d up in %s (leader %s)' % (self.gen, c.base_dir, leader))

    def teardown(self, keep=False):
        if self.client:
            self.client.stop()
            self.client = None
        if self.c:
            self.c.stop(keep=keep or self.args.keep)
            self.c = None

    # -- observing
    def leader(self, timeout=None):
        """The Lease holder once it is out of recovery."""
        c = self.c
        timeout = timeout or 3 * self.ttl + 10
        return c.wait_for(lambda: (lambda h: h if h and c.m(h).running() and
                                   c.in_recovery(h) is False else None)(c.holder()),
                          timeout, 'a writable leader')

    def replicas(self, leader):
        return [n for n in self.c.names if n != leader]

    def health(self, since):
        """None when healthy, else what is missing."""
        c = self.c
        for m in c.members.values():
            if not m.launcher_alive():
                return 'the launcher of %s is not running' % m.name
            if not m.running():
                return '%s is not running' % m.name
        h = c.holder()
        if not h:
            return 'nobody holds the Lease'
        try:
            if c.in_recovery(h) is not False:
                return 'the holder %s is in recovery' % h
            others = self.replicas(h)
            rows = c.sql(h, "SELECT application_name AS m, pg_wal_lsn_diff(pg_current_wal_lsn(), "
                            "flush_lsn) AS lag FROM pg_stat_replication WHERE state = 'streaming'",
                         timeout=2)
            streaming = {r['m']: r['lag'] for r in rows}
            missing = [o for o in others if o not in streaming]
            if missing:
                return '%s not streaming from %s' % (', '.join(missing), h)
            behind = [o for o in others if streaming[o] is None or streaming[o] > MAX_LAG]
            if behind:
                return '%s more than %d bytes behind %s' % (', '.join(behind), MAX_LAG, h)
            tl = c.scalar(h, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                             "::bit(32)::int", timeout=2)
            for o in others:
                row = c.sql1(o, "SELECT pg_is_in_recovery() AS r, (SELECT received_tli FROM "
                                "pg_stat_wal_receiver WHERE status = 'streaming') AS tli", timeout=2)
                if row['r'] is not True:
                    return '%s is not in recovery' % o
                # a standby on a diverged timeline can look streaming for a moment
                if row['tli'] != tl:
                    return '%s receives timeline %s, the leader %s is on %s' % (o, row['tli'], h, tl)
        except Exception as e:  # noqa: BLE001
            return 'SQL: %s' % (str(e).strip().splitlines() or [repr(e)])[0]
        if self.rec.last_ack.get((self.gen, h), 0) <= since:
            return 'no write acknowledged by %s yet' % h
        return None

    def wait_healthy(self, since, bound):
        """(seconds it took, None) or (None, what was missing at the end);
        self.waited_on: the reasons that held up recovery, longest first."""
        t0 = time.monotonic()
        last = None
        held = collections.Counter()
        prev = t0
        try:
            while time.monotonic() - t0 < bound:
                last = self.health(since)
                now = time.monotonic()
                if last is None:
                    return now - t0, None
                held[re.sub(r'(?<![\w-])\d+(\.\d+)?', 'N', last)] += now - prev
                prev = now
                time.sleep(0.25)
            return None, last
        finally:
            self.waited_on = ['%s (%.1fs)' % (k, v) for k, v in held.most_common(3) if v >= 1.0]

    def repair(self):
        """After a failed recovery: undo every fault and start what is down."""
        c = self.c
        try:
            c.double.clear_faults()
        except Exception:  # noqa: BLE001
            pass
        for port in [c.double.api_port] + list(c.double.extra_ports):
            try:
                c.double.open_port(port)
            except Exception:  # noqa: BLE001
                pass
        self.part.heal()
        for m in c.members.values():
            for pid in self.tree(m.name):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.resume_runuser(m.name)
            if not m.launcher_alive():
                try:
                    c.start_member(m, wait=False)
                except Exception as e:  # noqa: BLE001
                    log('repair: starting %s: %s' % (m.name, e))

    def scan_logs(self):
        """New crash lines in the member logs."""
        out = []
        for name in self.c.names:
            path = self.c.m(name).logfile
            try:
                with open(path, 'rb') as f:
                    f.seek(self.log_pos.get(name, 0))
                    data = f.read()
                    self.log_pos[name] = f.tell()
            except OSError:
                continue
            for line in data.decode(errors='replace').splitlines():
                if CRASH_RX.search(line):
                    out.append('%s: %s' % (name, line.strip()[:200]))
        return out

    def resume_runuser(self, name):
        """runuser (the harness runs the launcher under it as root) stops
        itself when its child is stopped, and only resumes on a SIGCONT of
        its own: give it one until it runs again."""
        m = self.c.m(name)
        if not m.launcher_alive():
            return
        for _ in range(20):
            time.sleep(0.05)
            try:
                with open('/proc/%d/stat' % m.launcher.pid) as f:
                    state = f.read().rsplit(')', 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state != 'T':
                continue
            try:
                os.kill(m.launcher.pid, signal.SIGCONT)
            except ProcessLookupError:
                return

    def tree(self, name):
        """Every process of a member: its launcher (and runuser), their
        descendants, and its server's processes."""
        c = self.c
        m = c.m(name)
        pids = []
        if m.launcher_alive():
            pids.append(m.launcher.pid)
            pids += harness.descendants_of(m.launcher.pid)
        pids += [p for p in c.server_pids(m) if p not in pids]
        return pids

    # -- the faults
    def do_fault(self, kind, p, leader):
        """Inject one fault and undo it; returns a note."""
        c, ttl = self.c, self.ttl
        r = random.Random(p['seed'])
        reps = self.replicas(leader)
        if kind == 'kill-pg':
            c.kill9(leader)
            return 'kill -9 postmaster of %s' % leader
        if kind == 'node-loss':
            c.kill9_tree(leader)
            new = self.leader(timeout=4 * ttl + 20)
            time.sleep(p['down_extra'])
            c.start_member(leader, wait=False)
            return 'node %s lost; %s took over; restarted' % (leader, new)
        if kind == 'sigstop':
            pids = self.tree(leader)
            if os.geteuid() == 0 and c.m(leader).launcher_alive():
                # runuser, the harness's wrapper, is no part of the node (and
                # stops itself while its child is stopped: see resume_runuser)
                pids = [x for x in pids if x != c.m(leader).launcher.pid]
            pm = c.m(leader).postmaster_pid()
            order = ([pm] if pm in pids else []) + [x for x in pids if x != pm]
            for pid in order:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            try:
                time.sleep(p['pause'])
            finally:
                for pid in order:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                self.resume_runuser(leader)
            return 'SIGSTOP %d processes of %s for %ss; holder at SIGCONT: %s' % (
                len(order), leader, p['pause'], c.holder())
        if kind == 'api-cut-leader':
            c.double.add_fault(user=leader, mode='error', status=503)
            time.sleep(p['errors'])
            c.double.clear_faults()
            c.double.add_fault(user=leader, mode='hang')
            time.sleep(max(0, p['total'] - p['errors']))
            c.double.clear_faults()
            return '%s: 503s for %ss, then hangs' % (leader, p['errors'])
        if kind == 'api-down':
            ports = [c.double.api_port] + list(c.double.extra_ports)
            if p['how'] == 'refused':
                for port in ports:
                    c.double.close_port(port)
            else:
                c.double.add_fault(user='*', mode='hang' if p['how'] == 'hang' else 'error',
                                   status=503)
            try:
                time.sleep(p['duration'])
            finally:
                if p['how'] == 'refused':
                    for port in ports:
                        c.double.open_port(port)
                else:
                    c.double.clear_faults()
            return 'API down (%s) for %ss' % (p['how'], p['duration'])
        if kind in ('api-garbage', 'api-truncated', 'api-slow'):
            mode = {'api-garbage': 'garbage', 'api-truncated': 'truncate', 'api-slow': 'slow'}[kind]
            user = leader if p['target'] == 'leader' else '*'
            extra = {'delay': p['delay']} if kind == 'api-slow' else {}
            c.double.add_fault(user=user, mode=mode, **extra)
            try:
                time.sleep(p['duration'])
            finally:
                c.double.clear_faults()
            return '%s answers to %s for %ss%s' % (mode, user, p['duration'],
                                                   ' (%ss)' % p['delay'] if extra else '')
        if kind == 'api-huge':
            user = leader if p['target'] == 'leader' else reps[r.randrange(2)]
            c.double.add_fault(user=user, mode='huge', bytes=9 << 20, count=p['count'])
            time.sleep(2 * ttl)
            c.double.clear_faults()
            return '%d answers of 9 MiB to %s' % (p['count'], user)
        if kind == 'replica-kill':
            rep = reps[p['replica']]
            if p['how'] == 'node':
                c.kill9_tree(rep)
                time.sleep(p['down'])
                c.start_member(rep, wait=False)
                return 'node of replica %s lost for %ss' % (rep, p['down'])
            c.kill9(rep)
            return 'kill -9 postmaster of replica %s' % rep
        if kind == 'replica-partition':
            if not self.part.ok:
                raise FaultError('cannot partition: %s' % self.part.why)
            rep = reps[p['replica']]
            pos = self.replica_lsn(rep)
            self.part.cut(rep, c.m(rep).port, leader, c.m(leader).port)
            try:
                time.sleep(p['duration'])
                pos2 = self.replica_lsn(rep)
                lead = c.scalar(leader, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn", timeout=3)
            finally:
                self.part.heal()
            return '%s cut off from %s for %ss: it received %s bytes meanwhile, %s behind at the end' % (
                rep, leader, p['duration'], pos2 - pos if None not in (pos, pos2) else '?',
                int(lead) - pos2 if None not in (lead, pos2) else '?')
        if kind == 'api-cut-partition':
            if not self.part.ok:
                raise FaultError('cannot partition: %s' % self.part.why)
            rep = reps[p['replica']]
            c.double.add_fault(user=leader, mode='error', status=503)
            try:
                time.sleep(p['delay'])
                self.part.cut(rep, c.m(rep).port, leader, c.m(leader).port)
                try:
                    time.sleep(p['duration'])
                finally:
                    self.part.heal()
            finally:
                c.double.clear_faults()
            return '%s cut off from the API, %s partitioned from it %ss later for %ss; holder: %s' % (
                leader, rep, p['delay'], p['duration'], c.holder())
        if kind == 'switchover':
            cand = None if p['candidate'] is None else reps[p['candidate']]
            caller = leader if p['caller'] == 'leader' else reps[r.randrange(2)]
            res = self.switchover(caller, cand)
            return 'hapg_switchover(%s) on %s: %s; %s' % (cand or '', caller, res,
                                                         self.wait_new_holder(leader))
        if kind == 'sigterm':
            c.stop_member(leader, timeout=30)
            time.sleep(p['down'])
            c.start_member(leader, wait=False)
            return 'SIGTERM %s, down %ss' % (leader, p['down'])
        if kind == 'rm-datadir':
            m = c.m(leader)
            deadline = time.monotonic() + 20
            while os.path.exists(m.datadir):
                shutil.rmtree(m.datadir, ignore_errors=True)
                if time.monotonic() > deadline:
                    raise FaultError('could not remove %s' % m.datadir)
            new = self.leader(timeout=4 * ttl + 20)
            if new == leader:
                raise FaultError('%s still leads without its data directory' % leader)
            c.stop_member(leader, timeout=20)
            if m.launcher_alive() or m.running():
                c.kill9_tree(leader)
            c.reclone(leader, new)
            c.start_member(leader, wait=False)
            return 'data directory of %s removed; %s took over; recloned' % (leader, new)
        if kind == 'kill-leader-replica-down':
            rep = reps[p['replica']]
            c.kill9_tree(rep)
            time.sleep(p['gap'])
            c.kill9_tree(leader)
            survivor = [x for x in reps if x != rep][0]
            new = self.leader(timeout=4 * ttl + 20)
            time.sleep(p['down_extra'])
            for x in ([leader, rep] if p['leader_first'] else [rep, leader]):
                c.start_member(x, wait=False)
                time.sleep(0.5)
            return 'replica %s down, then leader %s lost; %s took over (survivor %s)' % (
                rep, leader, new, survivor)
        if kind == 'api-cut-switchover':
            cand = None if p['candidate'] is None else reps[p['candidate']]
            caller = reps[r.randrange(2)]
            box = {}
            th = threading.Thread(target=lambda: box.update(r=self.switchover(caller, cand, 30)),
                                  daemon=True)
            th.start()
            time.sleep(p['delay'])
            ports = [c.double.api_port] + list(c.double.extra_ports)
            for port in ports:
                c.double.close_port(port)
            try:
                time.sleep(p['duration'])
            finally:
                for port in ports:
                    c.double.open_port(port)
            th.join(60)
            return 'hapg_switchover(%s) on %s, API cut %ss later for %ss: %s' % (
                cand or '', caller, p['delay'], p['duration'], box.get('r', 'still waiting'))
        raise FaultError('unknown kind %r' % kind)

    def replica_lsn(self, name):
        """WAL received by a standby (bytes), or None."""
        try:
            v = self.c.scalar(name, "SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn", timeout=3)
            return None if v is None else int(v)
        except Exception:  # noqa: BLE001
            return None

    def wait_new_holder(self, old, timeout=30):
        """Wait (bounded) until someone else than `old` holds the Lease."""
        try:
            return 'holder now %s' % self.c.wait_for(
                lambda: (lambda h: h if h and h != old else None)(self.c.holder()), timeout,
                'a new Lease holder', interval=0.1)
        except harness.WaitTimeout:
            return 'the holder is still %s after %ds' % (old, timeout)

    def switchover(self, caller, cand, timeout_s=60):
        """Call hapg_switchover on `caller`; its result or error, as text."""
        import psycopg2
        try:
            conn = psycopg2.connect(host='127.0.0.1', port=self.c.m(caller).port, user='postgres',
                                    dbname='postgres', connect_timeout=3)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SET hapg.switchover_timeout = '%ds'" % timeout_s)
                    cur.execute('SELECT hapg_switchover(%s)', (cand,))
                    return 'returned %s' % cur.fetchone()[0]
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
        except Exception as e:  # noqa: BLE001 - the session of the leader ends with it
            return 'error: %s' % (str(e).strip().splitlines() or [repr(e)])[0][:160]

    # -- judging one fault
    def check_lost(self, leader, since_id):
        """Acknowledged writes of this generation missing from the leader
        (checking ids >= since_id, or all with since_id 0)."""
        gen = self.gen
        with self.rec.lock:
            acked = [w for w in self.rec.writes if w.gen == gen and w.id >= since_id]
        if not acked:
            return [], acked
        lo = min(w.id for w in acked)
        rows = self.c.sql(leader, 'SELECT id FROM %s WHERE id >= %%s' % TABLE, (lo,), timeout=30)
        have = {r['id'] for r in rows}
        # a write acknowledged after the read can be missing from it: only judge older ones
        t_read = time.time() - 0.5
        acked = [w for w in acked if w.ack < t_read]
        lost = [w for w in chaoscheck.lost(acked, have) if w.id not in self.lost_seen]
        self.lost_seen.update(w.id for w in lost)
        return lost, acked

    def run_one(self, i, kind, p):
        ttl = self.ttl
        c = self.c
        res = {'i': i, 'kind': kind, 'params': p, 'gen': self.gen}
        t_start = time.time()
        res['t_start'] = t_start
        i0, j0 = self.rec.marks()
        i0 = max(0, i0 - 2000)      # writes still in flight are appended later
        j0 = max(0, j0 - 200)
        try:
            leader = self.leader()
        except harness.WaitTimeout as e:
            raise FaultError('no leader before the fault: %s' % e)
        res['leader'] = leader
        first_id = next(self.rec.ids)
        log('fault %d: %s %s (leader %s)' % (i, kind, json.dumps(p, sort_keys=True), leader))
        try:
            res['note'] = self.do_fault(kind, p, leader)
            res['error'] = None
        except Exception as e:  # noqa: BLE001
            res['note'] = ''
            res['error'] = '%s: %s' % (type(e).__name__, e)
            log('fault %d: %s' % (i, res['error']))
        t_heal = time.time()
        took, why = self.wait_healthy(t_heal, self.args.recovery_bound)
        res['recovered'] = took is not None
        res['recovery_s'] = took
        res['waited_on'] = self.waited_on
        if took is None:
            res['not_recovered'] = why
            log('fault %d: NOT recovered within %ss: %s' % (i, self.args.recovery_bound, why))
            self.repair()
            took2, why2 = self.wait_healthy(time.time(), self.args.recovery_bound)
            if took2 is None:
                res['rebuilt'] = why2
        if 'rebuilt' not in res:
            time.sleep(SETTLE)
        t_end = time.time()
        res['t_end'] = t_end
        # dual primaries among the writes of this window, against everything seen
        win, polls, first, tenure = self.rec.window(i0, j0, t_start, t_end, self.gen)
        zombie, late = chaoscheck.zombie_writes(win, first)
        over = chaoscheck.overlaps(win, tenure)
        duals = chaoscheck.poll_duals(polls)
        res['zombie'] = len(zombie)
        res['late'] = len(late)
        res['overlap'] = len(over)
        res['poll'] = len(duals)
        res['dual'] = dual_intervals(zombie, over, duals)
        res['dual_detail'] = ['zombie: %s wrote id %d on timeline %d (sent %s, ran %s, acked %s) '
                              'after %s acknowledged id %d on timeline %d at %s (%.0f ms before)'
                              % (w.member, w.id, w.tl, fmt(w.send), fmt(w.clk), fmt(w.ack),
                                 b.member, b.id, b.tl, fmt(b.ack),
                                 1000 * (max(w.send, w.clk) - b.ack))
                              for w, b in zombie[:8]]
        res['dual_detail'] += ['overlap: %s id %d [%s, %s] inside %s timeline %d [%s, %s]' % (
            b.member, b.id, fmt(b.send), fmt(b.ack), a.member, a.tl, fmt(a.ack), fmt(z.send))
            for a, b, z in over[:4]]
        res['dual_detail'] += ['poll: round %d: %s [%s, %s] and %s [%s, %s] both committed' % (
            q1.round, q1.member, fmt(q1.psend), fmt(q1.pack), q2.member, fmt(q2.psend),
            fmt(q2.pack)) for q1, q2 in duals[:4]]
        res['late_detail'] = ['%s id %d on timeline %d acked %s, %.0f ms after %s acked id %d on '
                              'timeline %d' % (w.member, w.id, w.tl, fmt(w.ack),
                                               1000 * (w.ack - b.ack), b.member, b.id, b.tl)
                              for w, b in late[:4]]
        res['max_gap_s'] = round(chaoscheck.gaps(win, t_start, t_heal + (took or 0)), 3)
        # lost writes
        res['lost'] = 0
        res['lost_bytes'] = 0
        if 'rebuilt' not in res:
            try:
                now_leader = self.leader(timeout=10)
                full = self.args.full_check_every and (i + 1) % self.args.full_check_every == 0
                since = 0 if full else max(0, first_id - 20000)
                lost, acked = self.check_lost(now_leader, since)
                res['lost'] = len(lost)
                with self.rec.lock:
                    near = self.rec.writes[max(0, i0 - 20000):]
                res['lost_bytes'] = chaoscheck.lost_wal_bytes(lost, near)
                res['lost_detail'] = ['%s id %d timeline %d acked %s' % (
                    w.member, w.id, w.tl, fmt(w.ack)) for w in lost[:5]]
            except Exception as e:  # noqa: BLE001
                res['lost_error'] = str(e)
        res['crashes'] = self.scan_logs()
        fails = []
        if res['dual']:
            fails.append('%d dual-primary' % res['dual'])
        if res['lost'] and kind in ZERO_LOSS:
            fails.append('%d acknowledged writes lost' % res['lost'])
        if not res['recovered']:
            fails.append('not recovered')
        if res['crashes']:
            fails.append('%d crash lines' % len(res['crashes']))
        if res['error']:
            fails.append('fault error')
        res['failed'] = fails
        if 'rebuilt' in res:
            log('fault %d: rebuilding the cluster (%s)' % (i, res['rebuilt']))
            self.teardown(keep=True)
            self.build()
        return res

    def run(self, schedule, start):
        t0 = time.monotonic()
        self.build()
        try:
            for i, (kind, p) in enumerate(schedule):
                if i < start:
                    continue
                if self.args.deadline and time.time() > self.args.deadline:
                    log('deadline reached: stopping after %d faults' % len(self.results))
                    break
                try:
                    res = self.run_one(i, kind, p)
                except FaultError as e:
                    res = {'i': i, 'kind': kind, 'params': p, 'failed': ['fault error'],
                           'error': str(e), 'recovered': False, 'recovery_s': None, 'dual': 0,
                           'zombie': 0, 'late': 0, 'overlap': 0, 'poll': 0, 'lost': 0,
                           'lost_bytes': 0, 'crashes': [], 'max_gap_s': None, 'note': ''}
                    self.teardown(keep=True)
                    self.build()
                self.results.append(res)
                print(fault_line(res), flush=True)
                for d in res.get('dual_detail', []) + res.get('late_detail', []) + \
                        res.get('lost_detail', []) + res['crashes'][:5]:
                    print('      %s' % d, flush=True)
                if res.get('waited_on') and (res.get('recovery_s') or 99) > 5:
                    print('      recovery waited on: %s' % '; '.join(res['waited_on']), flush=True)
                if res.get('not_recovered'):
                    print('      not recovered: %s' % res['not_recovered'], flush=True)
                if res.get('error'):
                    print('      error: %s' % res['error'], flush=True)
                if self.args.json:
                    self.save_json()
        finally:
            final = self.final_check()
            self.teardown(keep=bool(self.args.keep or any(r['failed'] for r in self.results)))
            self.part.close()
        return time.monotonic() - t0, final

    def final_check(self):
        """Every rule over the whole campaign (within each cluster generation)."""
        out = {}
        with self.rec.lock:
            all_w = list(self.rec.writes)
            polls = [q for q in self.rec.polls if q.pack is not None]
        zombie, late = chaoscheck.zombie_writes(all_w)
        out['zombie'] = len(zombie)
        out['late'] = len(late)
        out['overlap'] = len(chaoscheck.overlaps(all_w))
        out['poll'] = len(chaoscheck.poll_duals(polls))
        out['writes'] = len(all_w)
        out['refused'] = sum(self.rec.refused.values())
        out['lost_total'] = None
        try:
            if self.c is not None and self.health(0) is None:
                lost, _ = self.check_lost(self.leader(timeout=10), 0)
                out['lost_total'] = len(self.lost_seen)
                out['lost_at_end'] = len(lost)
        except Exception as e:  # noqa: BLE001
            out['lost_error'] = str(e)
        return out

    def save_json(self):
        with open(self.args.json, 'w') as f:
            json.dump({'args': vars(self.args), 'results': self.results}, f, indent=1, default=str)


def dual_intervals(zombie, over, duals):
    """How many distinct dual-primary intervals the findings show: one per
    pair of (member, timeline) tenures found writable together (zombie and
    overlap findings of one pair are one interval), plus poll rounds that
    belong to no such pair."""
    pairs = set()
    for w, b in zombie:
        pairs.add(frozenset([(w.member, w.tl), (b.member, b.tl)]))
    for a, b, _ in over:
        pairs.add(frozenset([(a.member, a.tl), (b.member, b.tl)]))
    members = {frozenset(m for m, _ in p) for p in pairs}
    extra = {q.round for q, r in duals if frozenset([q.member, r.member]) not in members}
    return len(pairs) + len(extra)


def fmt(t):
    if t is None:
        return '-'
    return '%s.%03d' % (time.strftime('%H:%M:%S', time.gmtime(t)), int((t % 1) * 1000))


def fault_line(r):
    rec = '%.1fs' % r['recovery_s'] if r.get('recovery_s') is not None else 'NO'
    return ('%-4s %-26s %s  dual %d (writes: zombie %d, overlap %d, poll %d; late %d)  lost %d  '
            'recovered %s  gap %ss  crashes %d  %s' % (
                '#%d' % r['i'], r['kind'], 'FAIL' if r['failed'] else 'ok  ', r['dual'],
                r['zombie'], r['overlap'], r['poll'], r['late'], r['lost'], rec,
                r.get('max_gap_s'), len(r['crashes']),
                ('[' + '; '.join(r['failed']) + '] ' if r['failed'] else '') + (r.get('note') or '')))


def table(results, markdown):
    by = collections.OrderedDict()
    for k in ALL_KINDS:
        rs = [r for r in results if r['kind'] == k]
        if rs:
            by[k] = rs
    head = ['kind', 'faults', 'passed', 'dual-primary intervals', 'zombie writes', 'late acks',
            'acked writes lost',
            'max WAL lost', 'recovered', 'recovery median / max (s)', 'write gap median (s)',
            'crashes']
    rows = []
    for k, rs in list(by.items()) + [('all', results)]:
        rec = [r['recovery_s'] for r in rs if r.get('recovery_s') is not None]
        gaps = [r['max_gap_s'] for r in rs if r.get('max_gap_s') is not None]
        lost = sum(r['lost'] for r in rs)
        rows.append([
            k, str(len(rs)), str(sum(1 for r in rs if not r['failed'])),
            str(sum(r['dual'] for r in rs)), str(sum(r['zombie'] for r in rs)),
            str(sum(r['late'] for r in rs)),
            '%d%s' % (lost, ' (must be 0)' if k in ZERO_LOSS else ''),
            '%d B' % max([r['lost_bytes'] for r in rs] or [0]),
            '%d/%d' % (len(rec), len(rs)),
            ('%.1f / %.1f' % (statistics.median(rec), max(rec))) if rec else '-',
            ('%.1f' % statistics.median(gaps)) if gaps else '-',
            str(sum(len(r['crashes']) for r in rs))])
    if markdown:
        out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        out += ['| ' + ' | '.join(r) + ' |' for r in rows]
        return '\n'.join(out)
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    out = ['  '.join(h.ljust(w[i]) for i, h in enumerate(head))]
    out += ['  '.join(x[i].ljust(w[i]) for i in range(len(head))) for x in rows]
    return '\n'.join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--faults', type=int, default=20)
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--kinds', default='all', help='comma-separated, or "all": ' + ','.join(KINDS) +
                    ' (and with --failsafe ' + ','.join(FAILSAFE_KINDS) + ')')
    ap.add_argument('--skip-kinds', default='', help='comma-separated kinds left out')
    ap.add_argument('--from', dest='start', type=int, default=0,
                    help='run only faults K.. of the schedule (replay)')
    ap.add_argument('--recovery-bound', type=float, default=60.0)
    ap.add_argument('--full-check-every', type=int, default=10,
                    help='check every acknowledged write for loss every N faults (and at the end)')
    ap.add_argument('--deadline', type=float, default=None,
                    help='Unix time after which no new fault starts')
    ap.add_argument('--json', default=None, help='write every fault\'s figures here')
    ap.add_argument('--markdown', action='store_true')
    ap.add_argument('--keep', action='store_true', help='keep the cluster files')
    ap.add_argument('--failsafe', action='store_true',
                    help='run the members with hapg.failsafe_mode = on')
    ap.add_argument('--from-json', dest='from_json', default=None,
                    help='run nothing: print the table and summary of a saved --json file')
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        res = saved['results']
        print(table(res, args.markdown))
        failed = [r for r in res if r['failed']]
        print('%d faults (seed %s), %s to %s UTC: %d passed, %d failed' % (
            len(res), saved['args'].get('seed'), fmt(res[0]['t_start']) if res else '-',
            fmt(res[-1].get('t_end')) if res else '-', len(res) - len(failed), len(failed)))
        return
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    kinds = (KINDS + (FAILSAFE_KINDS if args.failsafe else [])) if args.kinds == 'all' else \
        [k.strip() for k in args.kinds.split(',') if k.strip()]
    bad = [k for k in kinds if k not in ALL_KINDS]
    if bad:
        ap.error('unknown kinds %s (known: %s)' % (', '.join(bad), ', '.join(ALL_KINDS)))
    skip = {k.strip() for k in args.skip_kinds.split(',') if k.strip()}
    kinds = [k for k in kinds if k not in skip]
    if not kinds:
        ap.error('no kinds left')
    if os.geteuid() != 0:
        ap.error('run as root (PostgreSQL runs as user postgres)')
    camp = Campaign(args)
    for k in ('replica-partition', 'api-cut-partition'):
        if k in kinds and not camp.part.ok:
            ap.error('%s needs cgroup v2 and iptables: %s' % (k, camp.part.why))
    schedule = make_schedule(args.seed, args.faults, kinds)
    cmd = '/usr/bin/python3 bench/chaos.py --faults %d --seed %d --kinds %s%s' % (
        args.faults, args.seed, ','.join(kinds), ' --failsafe' if args.failsafe else '')
    print('chaos: seed %d, %d faults, kinds %s%s' % (args.seed, args.faults, ','.join(kinds),
                                                   ', failsafe mode on' if args.failsafe else ''),
          flush=True)
    shown = schedule[args.start:args.start + 40]
    print('chaos: schedule: %s%s' % (' '.join('%d:%s' % (i + args.start, k) for i, (k, _) in
                                              enumerate(shown)),
                                     ' ...' if len(schedule) > args.start + 40 else ''), flush=True)
    print('chaos: reproduce with: %s' % cmd, flush=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        wall, final = camp.run(schedule, args.start)
    except KeyboardInterrupt:
        log('interrupted')
        wall, final = None, {}
    res = camp.results
    print()
    print(table(res, args.markdown))
    failed = [r for r in res if r['failed']]
    lost = sum(r['lost'] for r in res)
    print()
    print('chaos: %d faults (seed %d) in %s: %d passed, %d failed; dual-primary intervals %d, '
          'late acks %d, acknowledged writes lost %d (in zero-loss kinds %d), not recovered %d, '
          'crash lines %d; whole-campaign check: zombie %s, overlap %s, poll %s, %s writes'
          % (len(res), args.seed, '%.0f s' % wall if wall is not None else '?',
             len(res) - len(failed), len(failed), sum(r['dual'] for r in res),
             sum(r['late'] for r in res), lost,
             sum(r['lost'] for r in res if r['kind'] in ZERO_LOSS),
             sum(1 for r in res if not r['recovered']), sum(len(r['crashes']) for r in res),
             final.get('zombie'), final.get('overlap'), final.get('poll'), final.get('writes')))
    if failed:
        print('chaos: failed faults: %s; replay one with: %s --from K' % (
            ', '.join('#%d %s' % (r['i'], r['kind']) for r in failed), cmd))
    if args.json:
        camp.save_json()
    print('%d passed, %d failed' % (len(res) - len(failed), len(failed)))
    whole = (final.get('zombie') or 0) + (final.get('overlap') or 0) + (final.get('poll') or 0)
    sys.exit(1 if failed or whole or wall is None else 0)


if __name__ == '__main__':
    main()
