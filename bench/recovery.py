#!/usr/bin/python3
"""Benchmark (not a test): how long after a leader change until both other
members stream from the new leader.

One 3-member cluster under bin/hapg-launcher (each member on its own API
port), profile ttl 5 / loop_wait 1 / retry_timeout 2 (the fault campaign's),
PostgreSQL's default wal_retrieve_retry_interval (5 s) unless
--retry-interval says otherwise.  Each run: wait for one leader with two
streaming replicas, then the fault:

fence    the leader is cut off from the API (the double answers 503 to its
         token) until a replica has taken over: it fences at its deadline,
         and is rewound by its launcher and comes back as a standby;
sigstop  the leader's whole process tree is stopped for 2 x ttl, then
         resumed: it fences, is rewound and comes back.

Measured on this process's clock, polling every 20 ms:
    write     fault -> first INSERT accepted by another member
    recovery  that first write -> both other members streaming from the new
              leader and having replayed a commit made on it just after
              its first write (a standby that diverged cannot do that)
    replica   that first write -> the other replica streaming so
    old       the old leader streaming so, from when it could act again
              (fence: the first write, when its API access is restored;
              sigstop: SIGCONT)
and, from the members' logs during the run, how often a WAL receiver failed
for want of its slot ("replication slot ... does not exist") and how often
the startup process waited wal_retrieve_retry_interval ("waiting for WAL to
become available").

CLI: /usr/bin/python3 bench/recovery.py [--runs N] [--fault fence,sigstop]
         [--retry-interval 5s] [--markdown]
HAPG_PGBIN selects the PostgreSQL (and hapg) to run, as for the tests.
Runs as root; everything on 127.0.0.1; every wait is bounded.
"""

import argparse
import os
import re
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

import psycopg2  # noqa: E402

import harness  # noqa: E402
from harness import descendants_of, wait_for  # noqa: E402

PROFILE = {'ttl': 5, 'loop_wait': 1, 'retry_timeout': 2}
MEMBERS = ['pg-0', 'pg-1', 'pg-2']


def log(msg):
    print('bench/recovery: %s' % msg, file=sys.stderr, flush=True)


def try_insert(c, m):
    try:
        conn = psycopg2.connect(host='127.0.0.1', port=c.m(m).port, user='postgres',
                                dbname='postgres', connect_timeout=1)
    except psycopg2.Error:
        return None
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute('INSERT INTO rb VALUES (clock_timestamp()) RETURNING pg_current_wal_lsn()::text')
        return cur.fetchone()[0]
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def lsn_int(s):
    hi, lo = s.split('/')
    return (int(hi, 16) << 32) | int(lo, 16)


def caught_up(c, new, member, marker):
    try:
        if member not in {r['application_name'] for r in c.sql(
                new, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")}:
            return False
        r = c.sql1(member, 'SELECT pg_is_in_recovery() AS rec, pg_last_wal_replay_lsn()::text AS lsn')
        return bool(r['rec'] and r['lsn'] and lsn_int(r['lsn']) >= marker)
    except Exception:  # noqa: BLE001
        return False


def healthy(c, timeout=120):
    def ok():
        try:
            h = c.holder()
            if h not in MEMBERS or c.primaries() != [h]:
                return None
            rows = c.sql(h, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
            if {m for m in MEMBERS if m != h} <= {r['application_name'] for r in rows}:
                return h
        except Exception:  # noqa: BLE001
            return None
        return None
    return wait_for(ok, timeout, 'a leader with two streaming replicas', interval=0.2)


def tree_pids(c, member):
    m = c.m(member)
    pids = []
    if m.launcher_alive():
        pids += [m.launcher.pid] + descendants_of(m.launcher.pid)
    return pids + [p for p in c.server_pids(m) if p not in pids]


def one_run(c, fault):
    old = healthy(c)
    marks = {m: c.log_mark(m) for m in MEMBERS}
    time.sleep(0.5)
    pids = []
    t_fault = time.monotonic()
    if fault == 'fence':
        c.double.add_fault(user=old, mode='error', status=503)
    else:
        pids = tree_pids(c, old)
        for p in pids:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
    new = None
    t_write = None
    deadline = t_fault + 6 * PROFILE['ttl']
    while time.monotonic() < deadline and new is None:
        for m in MEMBERS:
            if m != old and try_insert(c, m):
                new, t_write = m, time.monotonic()
                break
        time.sleep(0.02)
    if fault == 'fence':
        c.double.clear_faults()     # the old leader can reach the API again
    if new is None:
        raise RuntimeError('no new leader after the fault on %s' % old)
    marker = lsn_int(try_insert(c, new) or '0/0')
    others = [m for m in MEMBERS if m != new]
    done = {}
    t_back = t_write if fault == 'fence' else None     # the old leader can act again
    deadline = time.monotonic() + 120
    while len(done) < 2 and time.monotonic() < deadline:
        if t_back is None and time.monotonic() >= t_fault + 2 * PROFILE['ttl']:
            for p in pids:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            t_back = time.monotonic()
        for m in others:
            if m not in done and caught_up(c, new, m, marker):
                done[m] = time.monotonic()
        time.sleep(0.02)
    c.double.clear_faults()
    if len(done) < 2:
        raise RuntimeError('members %s did not stream from %s' % (sorted(set(others) - set(done)), new))
    text = ''.join(c.log(m, marks[m]) for m in MEMBERS)
    res = {
        'old': old, 'new': new,
        'write': t_write - t_fault,
        'recovery': max(done.values()) - t_write,
        'replica': done[[m for m in others if m != old][0]] - t_write,
        'old_leader': done[old] - t_back,
        'no_slot': len(re.findall(r'replication slot "[^"]+" does not exist', text)),
        'retry_waits': len(re.findall(r'waiting for WAL to become available', text)),
    }
    log('%s: %s -> %s: first write %.2fs after the fault, both streaming %.2fs later '
        '(replica %.2fs, old leader %.2fs); slot missing %d, retry waits %d'
        % (fault, old, new, res['write'], res['recovery'], res['replica'], res['old_leader'],
           res['no_slot'], res['retry_waits']))
    return res


def fmt(xs):
    return '%.2f s (%.2f–%.2f)' % (statistics.median(xs), min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--fault', default='fence,sigstop')
    ap.add_argument('--retry-interval', default='5s', help='wal_retrieve_retry_interval')
    ap.add_argument('--markdown', action='store_true')
    a = ap.parse_args()
    c = harness.Cluster(n=3, name='pg', launcher=True, member_ports=True, profile=PROFILE,
                        extra_conf={'wal_retrieve_retry_interval': a.retry_interval})
    results = {}
    try:
        c.start()
        c.wait_leader('pg-0')
        c.sql('pg-0', 'CREATE TABLE IF NOT EXISTS rb (at timestamptz)')
        for fault in a.fault.split(','):
            results[fault] = [one_run(c, fault) for _ in range(a.runs)]
    finally:
        c.stop()
    build = os.environ.get('HAPG_PGBIN', '/usr/lib/postgresql/15/bin')
    print('| fault | build | first write after the fault | both others streaming after that '
          '| the other replica | the old leader (from when it can act) | slot missing | retry waits | N |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for fault, rs in results.items():
        print('| %s | %s | %s | %s | %s | %s | %d | %d | %d |' % (
            fault, build, fmt([r['write'] for r in rs]), fmt([r['recovery'] for r in rs]),
            fmt([r['replica'] for r in rs]), fmt([r['old_leader'] for r in rs]),
            sum(r['no_slot'] for r in rs), sum(r['retry_waits'] for r in rs), len(rs)))


if __name__ == '__main__':
    main()
