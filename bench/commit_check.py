#!/usr/bin/python3
"""Benchmark (not a test): the cost of lease-bounded commits on the leader.

A 1-member hapg cluster (the member holds the Lease, so every commit passes
the check: one atomic read of writable_until and one clock read before the
commit record, the same after it).  pgbench (built-in tpcb-like script,
--clients/--jobs, --seconds per run) runs alternately with
hapg.lease_bounded_commits on and off (a reload between runs; the order of
each pair alternates too, so drift in the machine's load hits both sides
alike); it prints every run and the median TPS of each side with the
difference.  The harness runs PostgreSQL with fsync off, so commits are
cheap and the check's share of each one as large as it gets.

CLI: /usr/bin/python3 bench/commit_check.py [--pairs 5] [--seconds 10]
         [--clients 4] [--jobs 2] [--scale 10] [--markdown]
HAPG_PGBIN selects the PostgreSQL (and hapg) to run, as for the tests.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

import harness  # noqa: E402
from harness import PGBIN, run_as_pg, wait_for  # noqa: E402


def log(msg):
    print('bench/commit_check: %s' % msg, file=sys.stderr, flush=True)


def pgbench(m, args, timeout):
    out = run_as_pg([os.path.join(PGBIN, 'pgbench'), '-h', '127.0.0.1', '-p', str(m.port),
                     '-U', 'postgres'] + args + ['postgres'], timeout=timeout)
    return out.stdout if hasattr(out, 'stdout') else out


def tps(text):
    m = re.search(r'tps = ([0-9.]+) \(without initial connection time\)', text)
    if not m:
        raise RuntimeError('no tps in pgbench output:\n%s' % text)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pairs', type=int, default=5)
    ap.add_argument('--seconds', type=int, default=10)
    ap.add_argument('--clients', type=int, default=4)
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--scale', type=int, default=10)
    a = ap.parse_args()
    c = harness.Cluster(n=1, name='pg', profile={'ttl': 10, 'loop_wait': 2, 'retry_timeout': 4})
    runs = {'on': [], 'off': []}
    try:
        c.start()
        leader = c.wait_leader('pg-0')
        m = c.m(leader)
        wait_for(lambda: c.status(leader)['role'] == 'leader', 30, 'pg-0 to lead')
        pgbench(m, ['-i', '-q', '-s', str(a.scale)], timeout=600)
        for i in range(a.pairs):
            for mode in (('on', 'off') if i % 2 == 0 else ('off', 'on')):
                c.reload(leader, {'hapg.lease_bounded_commits': mode})
                wait_for(lambda mode=mode: c.scalar(leader, 'SHOW hapg.lease_bounded_commits') == mode,
                         10, 'hapg.lease_bounded_commits = %s' % mode)
                out = pgbench(m, ['-b', 'tpcb-like', '-c', str(a.clients), '-j', str(a.jobs),
                                  '-T', str(a.seconds), '-n'], timeout=a.seconds + 120)
                t = tps(out)
                runs[mode].append(t)
                log('pair %d, check %s: %.0f tps' % (i + 1, mode, t))
        assert c.status(leader)['role'] == 'leader'
    finally:
        c.stop()
    on, off = statistics.median(runs['on']), statistics.median(runs['off'])
    print('| pgbench tpcb-like, %d clients, %d s runs, scale %d | check on | check off | difference |'
          % (a.clients, a.seconds, a.scale))
    print('|---|---:|---:|---:|')
    print('| median TPS of %d runs each | %.0f | %.0f | %+.2f %% |' % (a.pairs, on, off, (on - off) / off * 100))
    ratios = [x / y for x, y in zip(runs['on'], runs['off'])]
    print('| median of the %d paired ratios (on / off, same pair) | | | %+.2f %% |'
          % (len(ratios), (statistics.median(ratios) - 1) * 100))
    print('| every run (on) | %s | | |' % ', '.join('%.0f' % x for x in runs['on']))
    print('| every run (off) | | %s | |' % ', '.join('%.0f' % x for x in runs['off']))


if __name__ == '__main__':
    main()
