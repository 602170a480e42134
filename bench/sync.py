#!/usr/bin/python3
"""Benchmark (not a test): synchronous replication, hapg (hapg.synchronous_mode
off / on / quorum) vs Patroni 3.0.2 (synchronous_mode false / true; it has no
quorum mode: n/a), 3 members each on the same Kubernetes API double, same
ttl / loop_wait / retry_timeout (bench/failover.py's profiles and systems).

Two parts, each cell on a fresh 3-member cluster per run:

tps    throughput.  Once the cluster is healthy and (sync modes) its
       synchronous standby is in place -- hapg: the Lease annotation
       hapg.io/sync has k >= 1 and the leader's pg_stat_replication shows
       every published standby 'sync' / 'quorum'; Patroni: a standby with
       sync_state 'sync' -- `pgbench -i -s 1`, then `pgbench -c 4 -j 2
       -T <--tps-seconds> -r -l` against the leader (pgbench from
       HAPG_PGBIN, the bin dir tests/harness.py uses).  Reported: TPS
       (without initial connection time), the latency of a transaction
       (tpcb-like: 3 UPDATEs, a SELECT, an INSERT and the COMMIT) median and
       p99 from the per-transaction logs, and the mean latency of the COMMIT
       itself (the END statement, from -r).
loss   node loss.  A writer per member sends an autocommit INSERT of its
       own (member, seq) every 20 ms on a kept connection (statement_timeout
       1 s, reconnecting with connect_timeout 1 s, as bench/failover.py's
       Writer); a fresh renewal of the leader lock is seen through a watch,
       then, a delay later (spread over [0, loop_wait) across the runs), the
       leader's whole process tree gets SIGKILL (as bench/failover.py's kill
       scenario).  Reported: failover = kill -> first acknowledged INSERT on
       another member; lost = acknowledged commits (every one the writers
       recorded) missing on the new leader, read there once it has
       acknowledged a few more.  A commit whose wait for synchronous
       replication was cancelled (statement_timeout; the server WARNs
       "canceling wait for synchronous replication": committed locally,
       maybe not replicated; seen in conn.notices, cleared before each
       INSERT) is not acknowledged: counted apart ("sync-cancelled"), with
       how many of those are missing on the new leader.

Both systems run with synchronous_commit = on, fsync = off, full_page_writes
on and data checksums: tests/harness.py's hapg settings; Patroni's member
config (tests/double/patroni/patroni_cluster.py: synchronous_commit off,
full_page_writes off, no checksums) is changed to match by a subclass here,
since with synchronous_commit off no commit waits for a standby at all.

CLI:
  HAPG_PGBIN=/path/to/postgresql/15/bin /usr/bin/python3 bench/sync.py
      [--parts tps,loss] [--runs N] [--tps-seconds S] [--profile fast|default]
      [--systems hapg-off,hapg-on,hapg-quorum,patroni-off,patroni-on,patroni-quorum]
      [--node-count K] [--strict] [--json F] [--markdown]
    --runs: node-loss runs per cell (default 5); --tps-seconds: length of
    the pgbench run (default 20); --node-count: hapg.synchronous_node_count
    and Patroni's synchronous_node_count (default 1); --strict:
    hapg.synchronous_mode_strict / synchronous_mode_strict; patroni-quorum
    runs nothing (n/a).  --markdown prints only the README-ready tables,
    the summary and the command (without: also a table of every run).
Runs as root (PostgreSQL and Patroni run as user postgres); everything on
127.0.0.1; every wait is bounded; progress goes to stderr; everything a run
starts is stopped by pid at its end.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import failover  # noqa: E402
from failover import PROFILES, HapgSystem, PatroniSystem, harness, log  # noqa: E402
import patroni_cluster  # noqa: E402  (tests/double/patroni, on the path through failover)

TABLE = 'bench_sync'
# the WARNING of a commit whose wait for synchronous replication was cancelled
# ("canceling wait for synchronous replication due to user request"; the
# termination variant says "canceling the wait for synchronous replication")
SYNC_CANCEL_RX = re.compile(r'cancel\w* (the )?wait for synchronous replication', re.I)
MODES = ('off', 'on', 'quorum')
MODE_TXT = {'off': 'async', 'on': 'sync (on)', 'quorum': 'quorum'}
SYSTEM_KEYS = ['hapg-off', 'hapg-on', 'hapg-quorum', 'patroni-off', 'patroni-on', 'patroni-quorum']
PGBENCH = dict(scale=1, clients=4, threads=2)


def pg_rows(port, query, params=None):
    return failover._pg(port, query, params)


def repl_states(port):
    """{application_name: (state, sync_state)} of a primary's walsenders."""
    return {r[0]: (r[1], r[2]) for r in pg_rows(
        port, 'SELECT application_name, state, sync_state FROM pg_stat_replication')}


def show(port, name):
    return pg_rows(port, 'SHOW ' + name)[0][0]


# --------------------------------------------------------------------------
# the systems: bench/failover.py's, with a synchronous mode

class HapgMode(HapgSystem):
    family = 'hapg'

    def __init__(self, prof, mode, node_count=1, strict=False):
        super().__init__(prof)
        self.mode = mode
        self.name = 'hapg %s' % MODE_TXT[mode]
        self.extra_conf = dict(failover.HAPG_EXTRA_CONF)
        if mode != 'off':
            self.extra_conf.update({'hapg.synchronous_mode': mode,
                                    'hapg.synchronous_mode_strict': 'on' if strict else 'off',
                                    'hapg.synchronous_node_count': str(node_count)})

    def sync_ann(self):
        ann = ((self.c.lease() or {}).get('metadata') or {}).get('annotations') or {}
        raw = ann.get('hapg.io/sync')
        return json.loads(raw) if raw else None

    def sync_now(self):
        """The synchronous set in force now ({...} or None while it is not)."""
        port = self.ports[self.leader]
        ssn = show(port, 'synchronous_standby_names')
        states = repl_states(port)
        if self.mode == 'off':
            return {'ssn': ssn, 'sync': [], 'ann': None, 'states': states}
        a = self.sync_ann()
        if not a or a.get('mode') != self.mode or (a.get('k') or 0) < 1 or not a.get('members') \
                or self.leader in a['members'] or not ssn:
            return None
        if any((states.get(m) or (None, None))[1] not in ('sync', 'quorum') for m in a['members']):
            return None
        return {'ssn': ssn, 'sync': list(a['members']), 'ann': a, 'states': states}

    def wait_sync(self, timeout):
        return harness.wait_for(self.sync_now, timeout, 'the synchronous standby(s) of %s published '
                                'in hapg.io/sync and in force (Lease: %r)' % (
                                    self.leader, harness._safe(self.sync_ann)), interval=0.2)


class BenchPatroniCluster(patroni_cluster.PatroniCluster):
    """tests/double/patroni's cluster with hapg's commit settings:
    synchronous_commit on (with off no commit waits for a synchronous
    standby), full_page_writes on, data checksums."""

    def _write_member_files(self, i, name):
        path = super()._write_member_files(i, name)
        with open(path) as f:
            config = json.load(f)
        params = config['postgresql']['parameters']
        params['synchronous_commit'] = 'on'
        params.pop('full_page_writes', None)
        initdb = config['bootstrap'].setdefault('initdb', [])
        if 'data-checksums' not in initdb:
            initdb.append('data-checksums')
        with open(path, 'w') as f:
            json.dump(config, f, indent=1)
        shutil.chown(path, 'postgres', 'postgres')
        return path


class PatroniMode(PatroniSystem):
    family = 'Patroni'

    def __init__(self, prof, mode, node_count=1, strict=False):
        super().__init__(prof)
        if mode == 'quorum':
            raise ValueError('Patroni 3.0.2 has no quorum mode')
        self.mode = mode
        self.name = 'Patroni %s' % MODE_TXT[mode]
        self.node_count = node_count
        self.dcs_extra = {} if mode == 'off' else {
            'synchronous_mode': True, 'synchronous_node_count': node_count,
            'synchronous_mode_strict': bool(strict)}

    def start(self):
        # bench/failover.py's PatroniSystem.start with BenchPatroniCluster
        ttl = self.prof['ttl']
        self.base = tempfile.mkdtemp(prefix='hapg-bench-sync-patroni-')
        os.chmod(self.base, 0o755)
        self.members = ['pat-0', 'pat-1', 'pat-2']
        tokens = {'tok-%s-%s' % (m, os.urandom(4).hex()): m for m in self.members}
        ddir = os.path.join(self.base, 'double')
        os.makedirs(ddir)
        os.chmod(ddir, 0o755)
        self.d = harness.Double(ddir, tls=True, tokens=tokens)
        self.d.start()
        self.c = BenchPatroniCluster(os.path.join(self.base, 'patroni'), self.d.url(self.d.api_port),
                                     self.d.ca_file, list(tokens), admin_token=harness.ADMIN_TOKEN,
                                     scope='pat', ttl=ttl, loop_wait=self.prof['loop_wait'],
                                     retry_timeout=self.prof['retry_timeout'],
                                     member_names=self.members, log_level='INFO',
                                     dcs_extra=self.dcs_extra)
        self.c.start()
        self.leader = self.c.wait_leader(6 * ttl + 60)
        self.leader = self.c.wait_steady(6 * ttl + 60)
        self.ports = {m: self.c.pg_port(m) for m in self.members}
        failover.prepare_table(self.ports[self.leader],
                               [self.ports[m] for m in self.members if m != self.leader], 3 * ttl + 60)
        return self

    def sync_now(self):
        port = self.ports[self.leader]
        ssn = show(port, 'synchronous_standby_names')
        states = repl_states(port)
        if self.mode == 'off':
            return {'ssn': ssn, 'sync': [], 'states': states}
        sync = sorted(n for n, (st, ss) in states.items() if ss == 'sync' and st == 'streaming')
        if len(sync) < self.node_count or not ssn:
            return None
        return {'ssn': ssn, 'sync': sync, 'states': states}

    def wait_sync(self, timeout):
        return harness.wait_for(self.sync_now, timeout, 'a synchronous standby of %s in '
                                'pg_stat_replication' % self.leader, interval=0.2)


def make_system(key, prof, args):
    fam, mode = key.split('-', 1)
    cls = HapgMode if fam == 'hapg' else PatroniMode
    return cls(prof, mode, node_count=args.node_count, strict=args.strict)


def start_ready(s, prof):
    """Start a fresh cluster and wait until its synchronous set is in force
    with synchronous_commit on; returns (seconds it took, sync state)."""
    t = time.monotonic()
    s.start()
    sync = s.wait_sync(6 * prof['ttl'] + 60)
    sc = show(s.ports[s.leader], 'synchronous_commit')
    if sc != 'on':
        raise harness.HarnessError('synchronous_commit is %r on the leader %s' % (sc, s.leader))
    return time.monotonic() - t, sync


# --------------------------------------------------------------------------
# part 1: throughput (pgbench)

def pgbench_bin():
    return os.path.join(harness.PGBIN, 'pgbench')


def parse_pgbench(out, logdir):
    """(tps, END mean ms, [transaction latencies in ms], failed) from
    pgbench's output and its -l logs."""
    m = re.search(r'^tps = ([\d.]+) \(without initial connection time\)', out, re.M)
    tps = float(m.group(1)) if m else None
    end = None
    for line in out.splitlines():
        mm = re.match(r'^\s*([\d.]+)\s+(?:\d+\s+)?END;\s*$', line)
        if mm:
            end = float(mm.group(1))
    lat, failed = [], 0
    for fn in sorted(os.listdir(logdir)):
        if not fn.startswith('tx.'):
            continue
        with open(os.path.join(logdir, fn)) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                try:
                    lat.append(int(parts[2]) / 1000.0)      # microseconds
                except ValueError:                          # failed / skipped
                    failed += 1
    return tps, end, lat, failed


def percentile(vals, q):
    """The q-quantile (0..1) of vals by the nearest-rank method."""
    if not vals:
        return None
    vs = sorted(vals)
    k = max(0, min(len(vs) - 1, int(-(-q * len(vs) // 1)) - 1))
    return vs[k]


def run_tps(key, prof, args):
    s = make_system(key, prof, args)
    failed = False
    tmp = None
    try:
        up, sync = start_ready(s, prof)
        port = s.ports[s.leader]
        log('  %s up in %.0f s, leader %s, synchronous_standby_names %r' % (
            s.name, up, s.leader, sync['ssn']))
        tmp = tempfile.mkdtemp(prefix='hapg-bench-sync-pgbench-')
        os.chmod(tmp, 0o755)
        harness._chown_pg(tmp)
        conn = ['-h', '127.0.0.1', '-p', str(port), '-U', 'postgres']
        harness.run_as_pg([pgbench_bin(), '-i', '-q', '-s', str(PGBENCH['scale'])] + conn + ['postgres'],
                          timeout=300, cwd=tmp)
        secs = args.tps_seconds
        p = harness.run_as_pg([pgbench_bin(), '-c', str(PGBENCH['clients']), '-j', str(PGBENCH['threads']),
                               '-T', str(secs), '-r', '-l', '--log-prefix', os.path.join(tmp, 'tx')]
                              + conn + ['postgres'], timeout=secs + 180, cwd=tmp)
        tps, end, lat, nfail = parse_pgbench(p.stdout, tmp)
        if tps is None or not lat:
            raise harness.HarnessError('could not read pgbench\'s results:\n' + p.stdout[-2000:])
        after = s.sync_now()
        return {'part': 'tps', 'key': key, 'system': s.family, 'mode': s.mode, 'up_s': up,
                'leader': s.leader, 'ssn': sync['ssn'], 'sync': sync['sync'],
                'sync_after': after['sync'] if after else None,
                'seconds': secs, 'tps': tps, 'transactions': len(lat), 'failed_tx': nfail,
                'lat_median_ms': statistics.median(lat), 'lat_p99_ms': percentile(lat, 0.99),
                'lat_max_ms': max(lat), 'commit_mean_ms': end}
    except BaseException:
        failed = True
        failover.log_failure(s)
        raise
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        s.stop(failed=failed)


# --------------------------------------------------------------------------
# part 2: node loss

class AckWriter:
    """An autocommit INSERT of (label, seq) into one member every
    POLL_INTERVAL on a kept connection, until stopped or max_seconds;
    records every acknowledged seq and, apart, every commit whose wait for
    synchronous replication was cancelled (a WARNING, not an error)."""

    def __init__(self, label, port, max_seconds):
        self.label, self.port = label, port
        self.deadline = time.monotonic() + max_seconds
        self.acked = []                 # (seq, monotonic time of the answer)
        self.cancelled = []             # (seq, time): committed locally, not acknowledged
        self.errors = 0
        self.last_error = None
        self.seq = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True, name='ackwriter-' + label)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)

    def acked_after(self, t0):
        return [(q, t) for q, t in list(self.acked) if t > t0]

    def _connect(self):
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=self.port, user='postgres',
                                dbname='postgres', connect_timeout=1,
                                options='-c statement_timeout=1000',
                                application_name='bench-sync')
        conn.autocommit = True
        return conn

    def _run(self):
        import psycopg2
        conn = None
        nxt = time.monotonic()
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            err = None
            seq = None
            try:
                if conn is None:
                    conn = self._connect()
                self.seq += 1
                seq = self.seq
                del conn.notices[:]
                with conn.cursor() as cur:
                    cur.execute('INSERT INTO ' + TABLE + ' (member, seq) VALUES (%s, %s)',
                                (self.label, seq))
            except psycopg2.Error as e:
                err = e
            t = time.monotonic()
            if err is None:
                if any(SYNC_CANCEL_RX.search(n) for n in conn.notices):
                    self.cancelled.append((seq, t))
                else:
                    self.acked.append((seq, t))
            else:
                self.errors += 1
                self.last_error = ('%s: %s' % (type(err).__name__,
                                               (str(err).strip().splitlines() or [''])[0]))[:160]
                if conn is not None and (conn.closed or isinstance(
                        err, (psycopg2.OperationalError, psycopg2.InterfaceError))):
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
            nxt += failover.POLL_INTERVAL
            now = time.monotonic()
            if nxt < now:
                nxt = now
            self.stop_ev.wait(nxt - now)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def prepare_sync_table(s, timeout):
    """The writers' table on the leader, replayed on every replica."""
    lp = s.ports[s.leader]
    pg_rows(lp, 'CREATE TABLE IF NOT EXISTS ' + TABLE + ' (member text, seq bigint, '
            'at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (member, seq))')
    for m in s.members:
        if m != s.leader:
            harness.wait_for(lambda m=m: pg_rows(s.ports[m], 'SELECT to_regclass(%s) IS NOT NULL',
                                                 (TABLE,))[0][0],
                             timeout, 'table %s replayed on %s' % (TABLE, m))


def first_ack(writers, t0, exclude):
    best = (None, None)
    for w in writers:
        if w.label == exclude:
            continue
        a = w.acked_after(t0)
        if a and (best[0] is None or a[0][1] < best[0]):
            best = (a[0][1], w.label)
    return best


def run_loss(key, prof, args, delay):
    ttl, lw = prof['ttl'], prof['loop_wait']
    s = make_system(key, prof, args)
    writers, watch, failed = [], None, False
    budget = ttl + 4 * lw + 3 * prof['retry_timeout'] + 30      # kill -> new leader, at most
    try:
        up, sync = start_ready(s, prof)
        leader = s.leader
        prepare_sync_table(s, 3 * ttl + 30)
        watch = s.watch(max_seconds=budget + 3 * lw + 240)
        watch.wait_event(lambda ev: ev['holder'] == leader, 0, 30, 'the lock held by %s' % leader)
        writers = [AckWriter(m, s.ports[m], budget + 3 * lw + 180).start() for m in s.members]
        by = {w.label: w for w in writers}
        harness.wait_for(lambda: len(by[leader].acked) >= 25, 30,
                         '25 acknowledged writes on the leader %s' % leader, interval=0.05)
        at_kill = s.sync_now()          # the set in force just before the kill
        if at_kill is None:
            raise harness.HarnessError('the synchronous set of %s is no longer in force' % leader)
        ev = watch.wait_event(lambda e: e['renewed'] and e['holder'] == leader, time.monotonic(),
                              3 * lw + 10, 'a renewal of the lock by %s' % leader)
        t_renew = ev['t']
        time.sleep(max(0.0, t_renew + delay - time.monotonic()))
        pids = s.leader_pids()
        t0 = time.monotonic()
        failover.kill_all(pids)
        s.after_kill()
        t_kill_done = time.monotonic()
        t_first, new = None, None
        deadline = t0 + budget
        while time.monotonic() < deadline:
            t_first, new = first_ack(writers, t0, leader)
            if new is not None:
                break
            time.sleep(0.02)
        if new is None:
            raise harness.WaitTimeout('no acknowledged write on %s within %ds after the kill of %s' % (
                [m for m in s.members if m != leader], budget, leader))
        # a few more acknowledged writes on the new leader, then the count
        harness.wait_for(lambda: len(by[new].acked_after(t_first)) >= 10, 30,
                         '10 more acknowledged writes on the new leader %s' % new, interval=0.05)
        for w in writers:
            w.stop()
        present = {(m, q) for m, q in pg_rows(s.ports[new], 'SELECT member, seq FROM ' + TABLE)}
        acked = {(w.label, q) for w in writers for q, _ in w.acked}
        cancelled = {(w.label, q) for w in writers for q, _ in w.cancelled}
        lost = sorted(acked - present)
        elsewhere = [(w.label, q) for w in writers if w.label not in (leader, new)
                     for q, _ in w.acked_after(t0)]
        old_before = [(q, t) for q, t in by[leader].acked if t <= t0]
        r = {'part': 'loss', 'key': key, 'system': s.family, 'mode': s.mode, 'up_s': up,
             'delay': delay, 'actual_delay': t0 - t_renew, 'left': ttl - (t0 - t_renew),
             'old_leader': leader, 'new_leader': new,
             'new_in_sync_set': (new in at_kill['sync']) if at_kill['sync'] else None,
             'ssn_at_kill': at_kill['ssn'], 'sync_at_kill': at_kill['sync'],
             'kill_s': t_kill_done - t0,
             'failover': t_first - t0,
             'acked': len(acked), 'acked_old_leader': len(old_before),
             'lost': len(lost), 'lost_ids': ['%s:%d' % x for x in lost[:20]],
             'cancelled': len(cancelled),
             'cancelled_after_kill': sum(1 for w in writers for _, t in w.cancelled if t > t0),
             'cancelled_missing': len(cancelled - present),
             'acked_elsewhere': len(elsewhere)}
        if lost:
            # how far before the kill the lost commits were acknowledged
            lost_set = set(q for m, q in lost if m == leader)
            ts = [t for q, t in by[leader].acked if q in lost_set]
            r['lost_window'] = (t0 - min(ts)) if ts else None
        if elsewhere:
            r['note'] = '%d writes acknowledged after the kill by neither the old nor the new leader' % (
                len(elsewhere))
        return r
    except BaseException:
        failed = True
        failover.log_failure(s)
        raise
    finally:
        failover.stop_run(s, writers, watch, failed)


# --------------------------------------------------------------------------
# the report

def fmt(x, unit=' s', digits=2):
    return 'n/a' if x is None else ('%.*f%s' % (digits, x, unit))


def ordered_keys(keys):
    """By mode (async, on, quorum), hapg beside Patroni."""
    return sorted(keys, key=lambda k: (MODES.index(k.split('-', 1)[1]), k.split('-', 1)[0] != 'hapg'))


def label(key):
    fam, mode = key.split('-', 1)
    return MODE_TXT[mode], 'hapg' if fam == 'hapg' else 'Patroni'


def tps_table(results, args):
    rows = ['| mode | system | synchronous_standby_names | TPS | vs own async | transaction latency: '
            'median | p99 | COMMIT (END) mean |',
            '|---|---|---|---:|---:|---:|---:|---:|']
    base = {}
    for k, rs in results.items():
        ok = [r for r in rs if 'tps' in r]
        if k.endswith('-off') and ok:
            base[k.split('-')[0]] = statistics.median(r['tps'] for r in ok)
    for k in ordered_keys(results):
        mode, sysn = label(k)
        rs = results[k]
        if any('na' in r for r in rs):
            rows.append('| %s | %s | n/a: %s | n/a | | | | |' % (mode, sysn, rs[0]['na']))
            continue
        ok = [r for r in rs if 'tps' in r]
        if not ok:
            rows.append('| %s | %s | failed: %s | | | | | |' % (
                mode, sysn, '; '.join(r.get('error', '')[:100].replace('|', '/') for r in rs)))
            continue
        tps = statistics.median(r['tps'] for r in ok)
        b = base.get(k.split('-')[0])
        rel = '' if k.endswith('-off') or not b else '%+.0f %%' % (100.0 * (tps / b - 1))
        rows.append('| %s | %s | %s | %.0f | %s | %s | %s | %s |' % (
            mode, sysn, '`%s`' % ok[0]['ssn'] if ok[0]['ssn'] else '(empty)', tps, rel,
            fmt(statistics.median(r['lat_median_ms'] for r in ok), ' ms'),
            fmt(statistics.median(r['lat_p99_ms'] for r in ok), ' ms'),
            fmt(statistics.median(r['commit_mean_ms'] for r in ok if r['commit_mean_ms'] is not None)
                if any(r['commit_mean_ms'] is not None for r in ok) else None, ' ms', 3)))
    head = ('### Throughput: pgbench tpcb-like, scale %d, %d clients, %d threads, %d s, against the leader '
            '(synchronous_commit on)' % (PGBENCH['scale'], PGBENCH['clients'], PGBENCH['threads'],
                                         args.tps_seconds))
    return '\n'.join([head, ''] + rows)


def loss_table(results, args):
    rows = ['| mode | system | runs | failover (kill → first acknowledged write): median | max '
            '| new leader from the synchronous set | acknowledged commits | lost: sum | runs with loss '
            '| sync-cancelled: sum | of those missing |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for k in ordered_keys(results):
        mode, sysn = label(k)
        rs = results[k]
        if any('na' in r for r in rs):
            rows.append('| %s | %s | n/a (%s) | | | | | | | | |' % (mode, sysn, rs[0]['na']))
            continue
        ok = [r for r in rs if 'failover' in r]
        bad = len(rs) - len(ok)
        n_txt = '%d' % len(ok) + (' (+%d failed)' % bad if bad else '')
        if not ok:
            rows.append('| %s | %s | %s | | | | | | | | |' % (mode, sysn, n_txt))
            continue
        fo = [r['failover'] for r in ok]
        ins = [r['new_in_sync_set'] for r in ok if r.get('new_in_sync_set') is not None]
        rows.append('| %s | %s | %s | %s | %s | %s | %d | %d | %d | %d | %d |' % (
            mode, sysn, n_txt, fmt(statistics.median(fo)), fmt(max(fo)),
            '%d of %d' % (sum(ins), len(ins)) if ins else '–',
            sum(r['acked'] for r in ok), sum(r['lost'] for r in ok), sum(1 for r in ok if r['lost']),
            sum(r['cancelled'] for r in ok), sum(r['cancelled_missing'] for r in ok)))
    head = ('### Node loss: SIGKILL of the leader\'s process tree, a writer every 20 ms on every member '
            '→ first acknowledged write on a new leader; acknowledged commits missing there')
    return '\n'.join([head, ''] + rows)


def runs_table(result_sets):
    out = ['### Runs', '',
           '| part | system | mode | up | leader | synchronous_standby_names | result | note |',
           '|---|---|---|---:|---|---|---|---|']
    for k, r in [(k, r) for results in result_sets for k in ordered_keys(results) for r in results[k]]:
        mode, sysn = label(k)
        if 'na' in r:
            continue
        if 'error' in r:
            out.append('| %s | %s | %s | | | | failed | %s |' % (
                r['part'], sysn, mode, r['error'][:150].replace('|', '/').replace('\n', ' ')))
            continue
        if r['part'] == 'tps':
            res = '%.0f TPS, %d tx, latency median %.2f ms, p99 %.2f ms, max %.1f ms' % (
                r['tps'], r['transactions'], r['lat_median_ms'], r['lat_p99_ms'], r['lat_max_ms'])
            note = '' if r['mode'] == 'off' or r['sync_after'] else 'sync set not in force after the run'
            out.append('| tps | %s | %s | %.0f s | %s | %s | %s | %s |' % (
                sysn, mode, r['up_s'], r['leader'], r['ssn'] or '(empty)', res, note))
        else:
            res = ('delay %.2f s, failover %.2f s to %s, %d acknowledged, %d lost, '
                   '%d sync-cancelled (%d after the kill, %d missing)' % (
                       r['actual_delay'], r['failover'], r['new_leader'], r['acked'], r['lost'],
                       r['cancelled'], r['cancelled_after_kill'], r['cancelled_missing']))
            note = r.get('note') or ''
            if r['lost']:
                note = ('lost: %s%s; ' % (', '.join(r['lost_ids'][:5]),
                                          ' (acknowledged up to %.2f s before the kill)' % r['lost_window']
                                          if r.get('lost_window') is not None else '')) + note
            out.append('| loss | %s | %s | %.0f s | %s | %s | %s | %s |' % (
                sysn, mode, r['up_s'], r['old_leader'], r['ssn_at_kill'] or '(empty)', res,
                note.replace('|', '/')))
    return '\n'.join(out)


def summary(tps_res, loss_res):
    parts = []
    for k in ordered_keys(set(tps_res) | set(loss_res)):
        mode, sysn = label(k)
        bits = []
        t = [r for r in tps_res.get(k, []) if 'tps' in r]
        if t:
            bits.append('%.0f TPS' % statistics.median(r['tps'] for r in t))
        ls = [r for r in loss_res.get(k, []) if 'failover' in r]
        if ls:
            bits.append('%d acknowledged commit(s) lost in %d node loss(es), failover median %.2f s' % (
                sum(r['lost'] for r in ls), len(ls), statistics.median(r['failover'] for r in ls)))
        if bits:
            parts.append('%s %s: %s' % (sysn, mode, ', '.join(bits)))
    return 'Summary: ' + ('; '.join(parts) if parts else 'no run succeeded') + '.'


def rerun_command():
    env = 'HAPG_PGBIN=%s ' % shlex.quote(os.environ['HAPG_PGBIN']) if os.environ.get('HAPG_PGBIN') else ''
    return '%s/usr/bin/python3 %s' % (env, ' '.join(shlex.quote(a) for a in
                                                    [os.path.relpath(os.path.abspath(sys.argv[0]),
                                                                     failover.ROOT)] + sys.argv[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--parts', default='tps,loss')
    ap.add_argument('--runs', type=int, default=5, help='node-loss runs per system/mode')
    ap.add_argument('--tps-seconds', type=int, default=20)
    ap.add_argument('--profile', default='fast', choices=sorted(PROFILES))
    ap.add_argument('--systems', default=','.join(SYSTEM_KEYS))
    ap.add_argument('--node-count', type=int, default=1)
    ap.add_argument('--strict', action='store_true')
    ap.add_argument('--json', default=None)
    ap.add_argument('--markdown', action='store_true')
    args = ap.parse_args()
    parts = [x.strip() for x in args.parts.split(',') if x.strip()]
    systems = []
    for x in args.systems.split(','):
        x = x.strip().replace('-async', '-off').replace('-sync', '-on')
        if not x:
            continue
        if x not in SYSTEM_KEYS:
            ap.error('unknown system %r (known: %s)' % (x, ', '.join(SYSTEM_KEYS)))
        if x not in systems:
            systems.append(x)
    for p in parts:
        if p not in ('tps', 'loss'):
            ap.error('unknown part %r (tps, loss)' % p)
    if not parts or not systems:
        ap.error('nothing to run')
    if not 1 <= args.runs <= 50 or not 3 <= args.tps_seconds <= 600 or not 1 <= args.node_count <= 2:
        ap.error('--runs 1..50, --tps-seconds 3..600, --node-count 1..2 (3 members)')
    if os.geteuid() != 0:
        ap.error('run as root (PostgreSQL and Patroni run as user postgres)')
    if 'tps' in parts and not os.path.exists(pgbench_bin()):
        ap.error('%s is missing (set HAPG_PGBIN)' % pgbench_bin())

    def on_term(signum, frame):
        raise SystemExit('terminated by signal %d' % signum)
    signal.signal(signal.SIGTERM, on_term)

    prof = PROFILES[args.profile]
    na = {'na': 'Patroni 3.0.2 has no quorum mode'}
    tps_res, loss_res = {}, {}
    t_all = time.monotonic()
    log('profile %s: ttl %d, loop_wait %d, retry_timeout %d; PGBIN %s' % (
        args.profile, prof['ttl'], prof['loop_wait'], prof['retry_timeout'], harness.PGBIN))
    if 'tps' in parts:
        for k in systems:
            if k == 'patroni-quorum':
                tps_res[k] = [dict(na)]
                continue
            log('tps: %s ...' % k)
            try:
                r = run_tps(k, prof, args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001
                log('  failed: %s: %s' % (type(e).__name__, e))
                tps_res[k] = [{'part': 'tps', 'key': k, 'error': '%s: %s' % (type(e).__name__, e)}]
                continue
            log('  %.0f TPS, latency median %.2f ms, p99 %.2f ms, COMMIT mean %s' % (
                r['tps'], r['lat_median_ms'], r['lat_p99_ms'], fmt(r['commit_mean_ms'], ' ms', 3)))
            tps_res[k] = [r]
    if 'loss' in parts:
        for k in systems:
            if k == 'patroni-quorum':
                loss_res[k] = [dict(na)]
                continue
            loss_res[k] = []
            for i in range(args.runs):
                delay = prof['loop_wait'] * (i + 0.5) / args.runs
                log('loss: %s run %d/%d, delay %.2f s ...' % (k, i + 1, args.runs, delay))
                try:
                    r = run_loss(k, prof, args, delay)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001
                    log('  failed: %s: %s' % (type(e).__name__, e))
                    loss_res[k].append({'part': 'loss', 'key': k, 'delay': delay,
                                        'error': '%s: %s' % (type(e).__name__, e)})
                    continue
                log('  %s -> %s: first acknowledged write after %.2f s; %d acknowledged, %d lost, '
                    '%d sync-cancelled (%d missing)%s' % (
                        r['old_leader'], r['new_leader'], r['failover'], r['acked'], r['lost'],
                        r['cancelled'], r['cancelled_missing'],
                        '; ' + r['note'] if r.get('note') else ''))
                loss_res[k].append(r)
    total = time.monotonic() - t_all
    out = []
    if tps_res:
        out += [tps_table(tps_res, args), '']
    if loss_res:
        out += [loss_table(loss_res, args), '']
    out.append('Each run: a fresh 3-member cluster on its own API double (127.0.0.1, TLS), profile %s '
               '(ttl %d s, loop_wait %d s, retry_timeout %d s); hapg = PostgreSQL 15 + hapg '
               '(tests/harness.py), hapg.synchronous_mode off / on / quorum, synchronous_node_count %d%s; '
               'Patroni = Debian Patroni 3.0.2, Kubernetes mode (tests/double/patroni/patroni_cluster.py), '
               'synchronous_mode false / true, synchronous_node_count %d%s, with synchronous_commit on, '
               'full_page_writes on and data checksums like hapg; fsync off in both. Measured after the '
               'synchronous standby is in force. On 2 shared cores: absolute TPS is the machine, compare rows.'
               % (args.profile, prof['ttl'], prof['loop_wait'], prof['retry_timeout'], args.node_count,
                  ', strict' if args.strict else '', args.node_count, ', strict' if args.strict else ''))
    if loss_res:
        out.append('Node loss: %d run(s) per row, the kill a delay after a renewal of the lock seen through a '
                   'watch, delays spread over [0, loop_wait); acknowledged = INSERT answered without a warning; '
                   'sync-cancelled = answered with "canceling wait for synchronous replication" '
                   '(a cancelled wait: committed locally, maybe not replicated, not acknowledged; statement_timeout does not cover the wait at commit); '
                   '"lost" = acknowledged and missing on the new leader.' % args.runs)
    if not args.markdown:
        out += ['', runs_table([tps_res, loss_res])]
    out += ['', summary(tps_res, loss_res),
            'Total benchmark time %.0f s.' % total,
            'Rerun: %s' % rerun_command()]
    print('\n'.join(out))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([r for rs in list(tps_res.values()) + list(loss_res.values()) for r in rs],
                      f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
