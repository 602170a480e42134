#!/usr/bin/python3
"""Benchmark (not a test): write unavailability of a planned switchover and of
a clean stop of the leader, hapg vs Patroni, 3 members each on the same
Kubernetes API double, same ttl / loop_wait / retry_timeout.

One cluster per (profile, system), used for all the runs of both scenarios in
turn (every run starts from a healthy cluster: one leader, two replicas
streaming from it and caught up; hapg: every member agreeing, no switchover
pending).  hapg members run under bin/hapg-launcher (the harness's launcher
mode, one API port per member); Patroni is Debian's Patroni 3.0.2 in
Kubernetes mode (tests/double/patroni/patroni_cluster.py, through bench/failover.py).

Writer: one thread, an autocommit INSERT of a fresh sequence number every
15 ms through whichever member currently takes writes: the member that
accepted the last write is tried first, on failure the others in turn (one
kept connection per member, connect_timeout 1 s, statement_timeout 1 s).
Every acknowledged INSERT is kept with its sequence number, member and the
monotonic time it returned.

switchover  hapg: `SELECT hapg_switchover(candidate)` on a replica (even runs:
            candidate NULL, called on one replica; odd runs: a named
            candidate, called on the other replica; the replicas alternate);
            it returns once the new leader accepts writes.  Patroni:
            `patronictl -c <member config> switchover --leader L
            [--candidate C] --force` (same alternation of candidates).
sigterm     SIGTERM to the leader's agent while the writer runs: hapg, its
            hapg-launcher (a fast shutdown; the Lease is handed to the best
            replica once the server is down); Patroni, the patroni daemon
            (it stops Postgres and deletes its leader key).  The stopped
            member is started again after the run and must rejoin (here
            a pg_rewind is only reported: hapg's launcher runs it, and it
            finds nothing to rewind, because the server left behind was a
            primary).

Per run: the longest gap between two consecutive acknowledged INSERTs from
the last one before the trigger to the end of the run (= write
unavailability); the time from the trigger to the first write on the new
leader; for a switchover the duration of the call.  Afterwards every
acknowledged row must be on the new leader (a missing row fails the run), no
member other than the new leader may acknowledge a write after the new
leader's first one, and for hapg the old leader must come back as a replica
of the new one without pg_rewind ("rewinding from" in its launcher log, the
member's postgres.log).  Cells report median, min-max and N.

Usage, as root:
  /usr/bin/python3 bench/switchover.py --profiles fast --runs 3 --no-patroni
  /usr/bin/python3 bench/switchover.py --markdown --json runs.json
Options: --runs N for every profile (otherwise fast 8, default 3);
--profiles fast,default (fast: ttl 5 s, loop_wait 1 s, retry_timeout 2 s;
default: 30/10/10); --scenarios switchover,sigterm; --no-patroni;
--markdown (the tables only, no line per run); --out F (the printed text
again); --json F (every run's figures); --from-json F, repeatable (print the
tables of saved runs and run nothing).
Runs as root (PostgreSQL and Patroni run as user postgres); everything on
127.0.0.1; every wait is bounded; progress goes to stderr.
"""

import argparse
import bisect
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import failover as fo   # bench/failover.py (puts tests/ and tests/double/ on sys.path)
from failover import PROFILES, DEFAULT_RUNS, TABLE, log, cell, med, fmt_s

import harness  # noqa: E402

SCENARIOS = ('switchover', 'sigterm')
WRITE_INTERVAL = 0.015
PATRONICTL = '/usr/bin/patronictl'
SETTLE = 1.0            # the writer keeps going this long after the first write on the new leader


class RunProblem(Exception):
    """The system misbehaved in a run (the run's figures are kept)."""


# --------------------------------------------------------------------------
# the writer

class LeaderWriter:
    """INSERTs a fresh sequence number every WRITE_INTERVAL through whichever
    member takes it: the one that took the last write first, then the others.
    acks: [(monotonic time, seq, member)] of the acknowledged ones."""

    def __init__(self, ports, first, seq0, max_seconds):
        self.ports = dict(ports)
        self.last = first
        self.seq = seq0
        self.deadline = time.monotonic() + max_seconds
        self.acks = []
        self.errors = []            # (time, member, first line of the error), the first 500
        self.conns = {}
        self.cond = threading.Condition()
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True, name='leader-writer')

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(15)

    def _conn(self, m):
        import psycopg2
        conn = self.conns.get(m)
        if conn is None or conn.closed:
            conn = psycopg2.connect(host='127.0.0.1', port=self.ports[m], user='postgres',
                                    dbname='postgres', connect_timeout=1,
                                    options='-c statement_timeout=1000',
                                    application_name='bench-switchover')
            conn.autocommit = True
            self.conns[m] = conn
        return conn

    def _drop(self, m):
        conn = self.conns.pop(m, None)
        with contextlib.suppress(Exception):
            if conn is not None:
                conn.close()

    def _try(self, m):
        import psycopg2
        self.seq += 1
        try:
            with self._conn(m).cursor() as cur:
                cur.execute('INSERT INTO ' + TABLE + ' (id, member) VALUES (%s, %s)', (self.seq, m))
        except psycopg2.Error as e:
            if len(self.errors) < 500:
                first = (str(e).strip().splitlines() or [''])[0]
                self.errors.append((time.monotonic(), m, ('%s: %s' % (type(e).__name__, first))[:160]))
            if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) or \
                    (m in self.conns and self.conns[m].closed):
                self._drop(m)
            return False
        with self.cond:
            self.acks.append((time.monotonic(), self.seq, m))
            self.cond.notify_all()
        self.last = m
        return True

    def _run(self):
        nxt = time.monotonic()
        try:
            while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
                for m in [self.last] + sorted(x for x in self.ports if x != self.last):
                    if self._try(m):
                        break
                nxt = max(nxt + WRITE_INTERVAL, time.monotonic())
                self.stop_ev.wait(nxt - time.monotonic())
        finally:
            for m in list(self.conns):
                self._drop(m)

    def wait_ack(self, pred, timeout, what):
        """The first ack with pred(ack), waiting at most timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for a in self.acks:
                    if pred(a):
                        return a
                left = deadline - time.monotonic()
                if left <= 0 or not self.t.is_alive():
                    raise harness.WaitTimeout('timed out after %.0fs waiting for %s (last writer '
                                              'errors: %s)' % (timeout, what, self.errors[-3:]))
                self.cond.wait(min(left, 0.2))


def stamp_exit(proc, out, timeout):
    """Append the monotonic time proc exits to out (nothing after timeout)."""
    try:
        proc.wait(timeout)
        out.append(time.monotonic())
    except subprocess.TimeoutExpired:
        pass


def write_figures(acks, t0):
    """Longest gap between consecutive acks from the last one before t0 on,
    with where it lies (relative to t0), and the usual gap before t0."""
    times = [a[0] for a in acks]
    i = max(0, bisect.bisect_right(times, t0) - 1)
    best, at = None, None
    for k in range(i, len(times) - 1):
        g = times[k + 1] - times[k]
        if best is None or g > best:
            best, at = g, k
    before = [b - a for a, b in zip(times[:i], times[1:i + 1])]
    return {'gap': best,
            'gap_from': (times[at] - t0) if at is not None else None,
            'gap_to': (times[at + 1] - t0) if at is not None else None,
            'usual_gap': statistics.median(before) if before else None}


def caught_up(ports, leader):
    """The two other members stream from leader and have replayed its WAL
    position of now (so they follow it on its timeline)."""
    rows = fo._pg(ports[leader], "SELECT application_name FROM pg_stat_replication "
                                 "WHERE state = 'streaming'")
    others = [m for m in ports if m != leader]
    if not set(others) <= {r[0] for r in rows}:
        return False
    if fo._pg(ports[leader], 'SELECT pg_is_in_recovery()')[0][0]:
        return False
    fo._pg(ports[leader], 'SELECT txid_current()')
    pos = fo._pg(ports[leader], 'SELECT pg_current_wal_lsn()')[0][0]
    for m in others:
        r = fo._pg(ports[m], 'SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn',
                   (pos,))[0]
        if not r[0]:
            return False
        if not r[1]:
            harness.wait_for(lambda m=m: fo._pg(ports[m], 'SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn',
                                                (pos,))[0][0], 5, '%s to replay %s' % (m, pos), 0.05)
    return True


# --------------------------------------------------------------------------
# the two systems

class HapgSide:
    name = 'hapg'

    def __init__(self, prof):
        self.prof = prof
        self.c = None
        self.next_seq = 1

    def start(self):
        ttl = self.prof['ttl']
        self.c = harness.Cluster(n=3, name='sw', profile=self.prof, launcher=True, member_ports=True)
        self.c.start()
        self.members = list(self.c.names)
        self.ports = {m: self.c.m(m).port for m in self.members}
        self.leader = self.wait_healthy(3 * ttl + 60)
        fo.prepare_table(self.ports[self.leader], [self.ports[m] for m in self.members
                                                   if m != self.leader], 3 * ttl + 30)
        return self

    def _agreed_leader(self):
        h = self.c.holder()
        if h not in self.members:
            return None
        for m in self.members:
            st = self.c.status(m)
            if (st['leader'] != h or not st['api_ok'] or st['pending_switchover']
                    or st['role'] != ('leader' if m == h else 'replica')):
                return None
            # what a switchover request is judged on: a replica knows the
            # others' streaming state from the leader's last renewal
            view = self.c.members_view(m)
            if sorted(view) != sorted(self.members) or any(
                    v['state'] != 'streaming' for k, v in view.items() if k != h):
                return None
        return h if caught_up(self.ports, h) else None

    def wait_healthy(self, timeout):
        """The leader, once the cluster is healthy (see the module docstring)."""
        return harness.wait_for(self._agreed_leader, timeout, 'one leader, every member agreeing and '
                                'seeing two streaming replicas that follow it', interval=0.2)

    def switchover(self, leader, candidate, via, timeout):
        """SELECT hapg_switchover(candidate) on member via; (new leader, detail)."""
        import psycopg2
        conn = psycopg2.connect(host='127.0.0.1', port=self.ports[via], user='postgres', dbname='postgres',
                                connect_timeout=3, application_name='bench-switchover',
                                options='-c statement_timeout=%d' % (timeout * 1000))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT hapg_switchover(%s)', (candidate,))
                new = cur.fetchone()[0]
        except psycopg2.Error as e:
            raise RunProblem('hapg_switchover(%r) on %s failed: %s' % (
                candidate, via, ' '.join(str(e).split())[:400]))
        finally:
            conn.close()
        return new, ' '.join(n.strip() for n in conn.notices)[:200]

    def stop_leader(self, leader):
        pid = self.c.launcher_pid(leader)
        if pid is None:
            raise harness.HarnessError('no launcher for %s' % leader)
        os.kill(pid, signal.SIGTERM)

    def agent(self, member):
        """The Popen of the member's launcher (runuser, which exits with it)."""
        return self.c.m(member).launcher

    def restart(self, member):
        self.c.start_member(member, timeout=60, wait=False)

    def log_mark(self, member):
        return self.c.log_mark(member)

    def rejoin_problems(self, member, mark):
        text = self.c.log(member, since=mark)
        out = []
        if re.search(r'hapg-launcher: .*rewinding from', text):
            out.append('pg_rewind ran' + (' (no rewind required)' if 'no rewind required' in text else ''))
        if re.search(r'hapg-launcher: .*base backup', text):
            out.append('base backup')
        return out

    def logs(self):
        return self.c.log_tails(30) if self.c else ''

    def files(self):
        return self.c.base_dir

    def snapshot(self):
        """The Lease and every member's hapg_status(), for the record of a failed run."""
        out = {'lease': harness._safe(self.c.lease)}
        for m in self.members:
            out[m] = harness._safe(lambda m=m: {k: str(v) for k, v in (self.c.status(m) or {}).items()})
        return out

    def stop(self, failed=False):
        if self.c is not None:
            self.c.failed = self.c.failed or failed
            self.c.stop()


class PatroniSide(fo.PatroniSystem):
    next_seq = 1

    def wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout

        def ok():
            leader = self.c.wait_steady(max(1, deadline - time.monotonic()))
            return leader if caught_up(self.ports, leader) else None
        return harness.wait_for(ok, timeout, 'one leader and two replicas following it', interval=0.5)

    def _member_file(self, member, fn):
        return os.path.join(self.c.workdir, member, fn)

    def switchover(self, leader, candidate, via, timeout):
        """patronictl switchover with the config of member via; (new leader, output)."""
        argv = [PATRONICTL, '-c', self._member_file(via, 'patroni.yml'), 'switchover',
                '--leader', leader, '--force'] + (['--candidate', candidate] if candidate else [])
        env = {'PATH': '/usr/bin:/bin', 'HOME': self.c.workdir, 'LANG': 'C.UTF-8',
               'KUBECONFIG': self._member_file(via, 'kubeconfig')}
        try:
            p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunProblem('patronictl switchover did not return within %d s' % timeout)
        out = ' '.join((p.stdout + ' ' + p.stderr).split())
        m = re.search(r'Successfully switched over to "([^"]+)"', out)
        if p.returncode != 0 or not m:
            raise RunProblem('patronictl switchover (exit %s): %s' % (p.returncode, out[-400:]))
        return m.group(1), m.group(0)

    def stop_leader(self, leader):
        os.kill(self.c.procs[leader].pid, signal.SIGTERM)

    def agent(self, member):
        return self.c.procs[member]

    def restart(self, member):
        self.c.start_member(self.c.names.index(member))

    def log_mark(self, member):
        try:
            return os.path.getsize(self._member_file(member, 'patroni.log'))
        except OSError:
            return 0

    def rejoin_problems(self, member, mark):
        try:
            with open(self._member_file(member, 'patroni.log'), 'rb') as f:
                f.seek(mark)
                text = f.read().decode(errors='replace')
        except OSError:
            return []
        return [w for w in ('running pg_rewind', 'reinitializing') if w in text]

    def files(self):
        return self.base

    def snapshot(self):
        """The leader ConfigMap and every Pod's status annotation."""
        return {'lock': harness._safe(self.c.lock_object),
                'pods': harness._safe(lambda: {n: self.c.pod_status(p) for n, p in self.c.pods().items()})}


# --------------------------------------------------------------------------
# one run

def run_once(s, scenario, i, prof):
    """One switchover or SIGTERM on a healthy cluster; a dict of figures (s)."""
    ttl = prof['ttl']
    budget = ttl + 2 * prof['loop_wait'] + 2 * prof['retry_timeout'] + 60
    leader = s.wait_healthy(3 * ttl + 90)
    replicas = sorted(m for m in s.members if m != leader)
    k = (i // 2) % 2
    candidate = None if i % 2 == 0 or scenario != 'switchover' else replicas[k]
    via = replicas[k] if candidate is None else replicas[1 - k]
    r = {'system': s.name, 'scenario': scenario, 'run': i + 1, 'old_leader': leader,
         'candidate': candidate, 'via': via if scenario == 'switchover' else None, 'problems': []}
    exited = []
    marks = {m: s.log_mark(m) for m in s.members}
    w = LeaderWriter(s.ports, leader, s.next_seq, 3 * budget + 60).start()
    try:
        w.wait_ack(lambda a: a[2] == leader and a[1] >= s.next_seq + 30, 15, '30 writes on %s' % leader)
        t0 = time.monotonic()
        if scenario == 'switchover':
            try:
                r['reported'], r['detail'] = s.switchover(leader, candidate, via, budget)
            except RunProblem as e:
                r['reported'] = None
                r['problems'].append(str(e))
            r['call'] = time.monotonic() - t0
        else:
            stamp = threading.Thread(target=stamp_exit, args=(s.agent(leader), exited, 90), daemon=True)
            s.stop_leader(leader)
            stamp.start()
        if r.get('reported', True) is None:
            # the call failed: measure until writes resume, wherever
            resumed = s.wait_healthy(3 * ttl + 90)
            t_h = time.monotonic()
            w.wait_ack(lambda a: a[0] > t_h and a[2] == resumed, 15, 'a write on %s' % resumed)
        else:
            w.wait_ack(lambda a: a[0] > t0 and a[2] != leader, budget,
                       'a write on a member other than %s' % leader)
        if scenario == 'sigterm':
            stamp.join(95)
            r['agent_exit'] = (exited[0] - t0) if exited else None
            if not exited:
                r['problems'].append('the agent of %s did not exit within 90 s of the SIGTERM' % leader)
        time.sleep(SETTLE)
    finally:
        w.stop()
        s.next_seq = w.seq + 1
    acks = list(w.acks)
    r.update(write_figures(acks, t0))
    if r.get('reported', True) is None:     # writes resumed at the end of the longest gap
        first = next(a for a in acks if a[0] - t0 == r['gap_to'])
    else:
        first = next(a for a in acks if a[0] > t0 and a[2] != leader)
    new = first[2]
    r['new_leader'] = new
    r['first_new'] = first[0] - t0
    old_last = [a[0] for a in acks if a[2] == leader and a[0] < first[0]]
    r['last_old'] = (old_last[-1] - t0) if old_last else None
    r['acked'] = len(acks)
    r['writer_errors'] = len(w.errors)
    late = [a for a in acks if a[0] > first[0] and a[2] != new]
    if late:
        r['problems'].append('%d writes acknowledged by %s after the first one on %s' % (
            len(late), sorted({a[2] for a in late}), new))
    if scenario == 'switchover' and r['reported'] not in (None, new):
        r['problems'].append('the call named %s, the writer found %s' % (r.get('reported'), new))
    if candidate and new != candidate:
        r['problems'].append('the candidate was %s, %s took over' % (candidate, new))
    # every acknowledged row on the new leader
    ids = [a[1] for a in acks]
    have = {x[0] for x in fo._pg(s.ports[new], 'SELECT id FROM ' + TABLE + ' WHERE id BETWEEN %s AND %s',
                                 (min(ids), max(ids)), timeout=5)}
    missing = [a for a in acks if a[1] not in have]
    r['missing'] = len(missing)
    if missing:
        r['problems'].append('%d acknowledged rows missing on %s: %s' % (
            len(missing), new, ', '.join('#%d on %s at %+.3f s' % (a[1], a[2], a[0] - t0)
                                         for a in missing[:8])))
    # the old leader comes back as a replica of the new one
    if scenario == 'sigterm':
        s.restart(leader)
    t_back = time.monotonic()
    try:
        if s.wait_healthy(3 * ttl + 90) != new:
            r['problems'].append('the leader changed again after the run')
        r['rejoined'] = time.monotonic() - (t0 if scenario == 'switchover' else t_back)
    except harness.WaitTimeout as e:
        r['problems'].append('%s did not rejoin: %s' % (leader, str(e)[:300]))
    r['rejoin_problems'] = s.rejoin_problems(leader, marks[leader])
    if s.name == 'hapg' and scenario == 'switchover' and r['rejoin_problems']:
        r['problems'].append('%s rejoined with %s' % (leader, ', '.join(r['rejoin_problems'])))
    r['first_errors'] = [(round(t - t0, 3), m, e) for t, m, e in w.errors if t > t0][:6]
    return r


def run_cell(sys_cls, prof, scenarios, n, label):
    """Both scenarios, n runs each, on one cluster (a fresh one after a
    run that leaves it unhealthy); {scenario: [run dicts]}."""
    out = {sc: [] for sc in scenarios}
    s, failed = None, False
    try:
        for sc in scenarios:
            for i in range(n):
                if s is None:
                    log('%s %s: starting a 3-member cluster ...' % (label, sys_cls.name))
                    t = time.monotonic()
                    s = sys_cls(prof)
                    s.start()
                    log('  up in %.1f s, leader %s' % (time.monotonic() - t, s.leader))
                log('%s %s %s run %d/%d ...' % (label, sys_cls.name, sc, i + 1, n))
                try:
                    r = run_once(s, sc, i, prof)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001
                    err = '%s: %s' % (type(e).__name__, ' '.join(str(e).split())[:600])
                    snap = s.snapshot()
                    log('  failed: %s\n  state: %s\n%s' % (err, json.dumps(snap, default=str), s.logs()))
                    out[sc].append({'system': s.name, 'scenario': sc, 'run': i + 1, 'error': err,
                                    'snapshot': snap, 'files': s.files()})
                    failed = True
                    try:
                        s.wait_healthy(3 * prof['ttl'] + 90)
                    except Exception:  # noqa: BLE001
                        log('  cluster unhealthy: starting a fresh one (files of this one kept)')
                        s.stop(failed=True)
                        s = None
                    continue
                if r['problems']:
                    failed = True
                    log('  PROBLEM: %s' % '; '.join(r['problems']))
                out[sc].append(r)
                log('  %s -> %s: longest write gap %s (%s .. %s), first write on %s %s%s%s' % (
                    r['old_leader'], r['new_leader'], fmt_s(r['gap']), fmt_s(r['gap_from']),
                    fmt_s(r['gap_to']), r['new_leader'], fmt_s(r['first_new']),
                    '; call %s' % fmt_s(r['call']) if 'call' in r else '',
                    '; %d rows, %d missing' % (r['acked'], r['missing'])))
    finally:
        if s is not None:
            if failed:
                log('keeping the files of the %s cluster (a run failed)' % sys_cls.name)
            s.stop(failed=failed)
    return out


# --------------------------------------------------------------------------
# the report

def n_text(rs, bad):
    return '%d' % len(rs) + (' (+%d failed)' % len(bad) if bad else '')


def rewinds(rs):
    """'none' or 'k of n runs (what)' for the rejoin findings of runs."""
    found = [', '.join(r['rejoin_problems']) for r in rs if r.get('rejoin_problems')]
    if not found:
        return 'none (%d runs)' % len([r for r in rs if 'rejoin_problems' in r])
    return '%d of %d runs (%s)' % (len(found), len([r for r in rs if 'rejoin_problems' in r]),
                                   '; '.join(sorted(set(found))))


def build_note():
    """Which hapg build and source ran (both change under development)."""
    import hashlib
    so = os.path.join(harness.PGBIN.replace('/bin', '/lib'), 'hapg.so')
    try:
        with open(so, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(os.path.getmtime(so)))
    except OSError as e:
        digest, built = '?', str(e)
    head = subprocess.run(['git', '-C', fo.ROOT, 'log', '-1', '--format=%h %s'], capture_output=True,
                          text=True, timeout=10).stdout.strip()
    return 'hapg build: %s sha256 %s.. (installed %s); source HEAD %s.' % (so, digest, built, head[:100])


def _sums(rs, bad):
    return '%d / %d' % (sum(r.get('acked', 0) for r in rs + bad), sum(r.get('missing', 0) for r in rs + bad))


# per scenario: title, then (header, cell(good runs, failed runs)) after profile, system
COLUMNS = {
    'switchover': ('Planned switchover: longest gap between acknowledged writes', [
        ('write unavailability: median (min–max)', lambda rs, bad: cell([r['gap'] for r in rs])),
        ('N', lambda rs, bad: n_text(rs, bad)),
        ('first write on the new leader after the call started',
         lambda rs, bad: cell([r['first_new'] for r in rs])),
        ('call returns after', lambda rs, bad: cell([r['call'] for r in rs])),
        ('rows acknowledged / missing', _sums),
        ('healthy again after (median)', lambda rs, bad: med([r.get('rejoined') for r in rs])),
        ('old leader rejoined with', lambda rs, bad: rewinds(rs + bad))]),
    'sigterm': ('Clean stop of the leader (SIGTERM to its agent) → first write on the new leader', [
        ('SIGTERM → first write on the new leader: median (min–max)',
         lambda rs, bad: cell([r['first_new'] for r in rs])),
        ('N', lambda rs, bad: n_text(rs, bad)),
        ('longest write gap', lambda rs, bad: cell([r['gap'] for r in rs])),
        ('agent exited after (median)', lambda rs, bad: med([r['agent_exit'] for r in rs])),
        ('rows acknowledged / missing', _sums),
        ('healthy again after its restart (median)',
         lambda rs, bad: med([r.get('rejoined') for r in rs])),
        ('it rejoined with', lambda rs, bad: rewinds(rs + bad))]),
}


def tables(results, profiles, scenarios, notes):
    out = []
    for sc in scenarios:
        title, cols = COLUMNS[sc]
        out += ['### ' + title, '',
                '| ' + ' | '.join(['profile (ttl/loop_wait/retry_timeout)', 'system'] + [c[0] for c in cols]) + ' |',
                '|---|---|' + '---:|' * (len(cols) - 1) + '---|']
        for p in profiles:
            pr = PROFILES[p]
            for sysn in ('hapg', 'Patroni'):
                every = results.get((p, sysn, sc))
                if every is None:
                    continue
                rs = [r for r in every if 'error' not in r and not r['problems']]
                bad = [r for r in every if r not in rs]
                row = ['%s (%d/%d/%d)' % (p, pr['ttl'], pr['loop_wait'], pr['retry_timeout']), sysn]
                out.append('| ' + ' | '.join(row + [fn(rs, bad) for _, fn in cols]) + ' |')
        out.append('')
    usual = [r['usual_gap'] for rs in results.values() for r in rs if r.get('usual_gap')]
    out.append('One writer, an autocommit INSERT every %d ms through whichever member takes it (the last '
               'one that did first, then the others; connect_timeout 1 s); "write unavailability" is the '
               'longest time between two acknowledged INSERTs from the last one before the trigger on '
               '(usual gap between writes: %s). Every acknowledged row was looked up on the new leader '
               'afterwards. A run fails when a row is missing, another member acknowledges a write after '
               'the new leader\'s first one, the call fails, or (hapg, switchover) the old leader needs pg_rewind; '
               'failed runs are left out of the medians. "Healthy again": both replicas stream from the '
               'leader and have replayed its current position; for hapg also every member names the '
               'leader and shows both replicas streaming in hapg_members (a replica learns that from the '
               'leader\'s renewals, every loop_wait), which a switchover request is judged on.'
               % (WRITE_INTERVAL * 1000, '%.0f ms' % (1000 * statistics.median(usual)) if usual else 'n/a'))
    out += notes
    return '\n'.join(out)


def run_row(key, r):
    """The cells of one run's line."""
    head = list(key) + [str(r['run'])]
    if 'error' in r:
        return head + [''] * 7 + ['failed: ' + r['error'][:300]]
    notes = r['problems'] or (['rejoin: ' + ', '.join(r['rejoin_problems'])] if r['rejoin_problems'] else [])
    return head + ['%s → %s' % (r['old_leader'], r['new_leader']),
                   '%s / %s' % (r['candidate'] or 'NULL', r['via'] or '-'),
                   '%s (%s .. %s)' % (fmt_s(r['gap']), fmt_s(r['gap_from']), fmt_s(r['gap_to'])),
                   fmt_s(r['first_new']), fmt_s(r.get('call', r.get('agent_exit'))),
                   '%d / %d' % (r['acked'], r['missing']), fmt_s(r.get('rejoined')), '; '.join(notes)[:400]]


def per_run_lines(results):
    lines = ['| profile | system | scenario | run | old → new | candidate / via | longest gap (from .. to) '
             '| first write on new | call / agent exit | rows / missing | healthy again | problems |',
             '|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|']
    lines += ['| %s |' % ' | '.join(c.replace('|', '/') for c in run_row(key, r))
              for key, rs in results.items() for r in rs]
    return '\n### Runs\n\n' + '\n'.join(lines)


def output(results, args, notes):
    """Print the tables (and the runs); --out gets the same text, --json the runs."""
    text = '\n'.join([tables(results, args.profiles, args.scenarios, notes)]
                     + ([] if args.markdown else [per_run_lines(results)]))
    print(text)
    saved = [dict(r, profile=k[0]) for k, rs in results.items() for r in rs]
    for path, data in ((args.out, text + '\n'), (args.json, json.dumps(saved, indent=1, default=str))):
        if path:
            with open(path, 'w') as f:
                f.write(data)


def load_saved(paths, args):
    """Runs saved by --json, those of the chosen profiles, scenarios and systems."""
    results = {}
    for fn in paths:
        with open(fn) as f:
            saved = json.load(f)
        for r in saved:
            key = (r['profile'], r['system'], r['scenario'])
            if key[0] in args.profiles and key[2] in args.scenarios and key[1] in args.systems:
                results.setdefault(key, []).append(r)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, help='runs per cell (default: fast 8, default 3)')
    ap.add_argument('--profiles', default='fast,default')
    ap.add_argument('--scenarios', default=','.join(SCENARIOS))
    ap.add_argument('--no-patroni', action='store_true')
    ap.add_argument('--markdown', action='store_true', help='print only the markdown tables')
    ap.add_argument('--out', help='also write the output to this file')
    ap.add_argument('--json', help="write every run's figures to this file")
    ap.add_argument('--from-json', action='append', metavar='F', help='print the tables of saved runs')
    args = ap.parse_args()
    args.profiles = [x for x in args.profiles.split(',') if x]
    args.scenarios = [x for x in args.scenarios.split(',') if x]
    args.systems = ['hapg'] + ([] if args.no_patroni else ['Patroni'])
    if not set(args.profiles) <= set(PROFILES) or not set(args.scenarios) <= set(SCENARIOS):
        ap.error('profiles: %s; scenarios: %s' % (', '.join(PROFILES), ', '.join(SCENARIOS)))
    if args.runs is not None and not 1 <= args.runs <= 100:
        ap.error('--runs must be in 1..100')
    if args.from_json:
        output(load_saved(args.from_json, args), args,
               ['Tables made from saved runs: %s.' % ', '.join(args.from_json)])
        return 0
    if os.geteuid() != 0:
        ap.error('run as root: PostgreSQL and Patroni run as the OS user postgres')
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit('terminated by signal %d' % signum))
    notes = ([] if 'Patroni' in args.systems else ['Patroni: skipped (--no-patroni).']) + [build_note()]
    results = {}
    t_all = time.monotonic()
    for p in args.profiles:
        for sys_cls in (HapgSide, PatroniSide):
            if sys_cls.name in args.systems:
                got = run_cell(sys_cls, PROFILES[p], args.scenarios, args.runs or DEFAULT_RUNS[p], p)
                results.update({(p, sys_cls.name, sc): rs for sc, rs in got.items()})
    notes.append('Total benchmark time %.0f s.' % (time.monotonic() - t_all))
    if build_note() != notes[-2]:
        notes.append('The installed hapg build changed during the run (members started later load the new '
                     'one): now ' + build_note())
    output(results, args, notes)
    failed = sum(1 for rs in results.values() for r in rs if 'error' in r or r['problems'])
    log('done: %d runs, %d failed' % (sum(len(rs) for rs in results.values()), failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
