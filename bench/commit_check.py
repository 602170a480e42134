#!/usr/bin/python3
"""Benchmark (not a test): the cost of lease-bounded commits on the leader.

Two 1-member hapg clusters A and B, each member holding its Lease, so every
commit on them passes the check (one atomic read of writable_until and one
clock read before the commit record, the same after it) unless
hapg.lease_bounded_commits is off.  Each round runs pgbench (built-in
tpcb-like script) on A and on B at the same time for --seconds, with the
check on for one and off for the other, swapping every round.  Running side
by side, both see the same load from everything else on the machine, so the
ratio of their TPS in a round measures the check, not the machine's noise;
swapping cancels any difference between A and B.  It prints every round,
the median TPS of each side, and the median of the per-round ratios (the
figure to read), and what one check costs on its own (bench/check_cost.c,
timed over 10 million checks) beside the median transaction's time.  The harness runs PostgreSQL with fsync off, so commits are
cheap and the check's share of each one as large as it gets.

CLI: /usr/bin/python3 bench/commit_check.py [--rounds 8] [--seconds 10]
         [--clients 2] [--scale 10]
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

PROFILE = {'ttl': 10, 'loop_wait': 2, 'retry_timeout': 4}


def log(msg):
    print('bench/commit_check: %s' % msg, file=sys.stderr, flush=True)


def pgbench_argv(m, args, as_pg=True):
    argv = [os.path.join(PGBIN, 'pgbench'), '-h', '127.0.0.1', '-p', str(m.port),
            '-U', 'postgres'] + args + ['postgres']
    return (['runuser', '-u', 'postgres', '--'] + argv) if as_pg and os.geteuid() == 0 else argv


def tps(text):
    m = re.search(r'tps = ([0-9.]+) \(without initial connection time\)', text)
    if not m:
        raise RuntimeError('no tps in pgbench output:\n%s' % text)
    return float(m.group(1))


def set_check(c, mode):
    c.reload('pg-0', {'hapg.lease_bounded_commits': mode})
    wait_for(lambda: c.scalar('pg-0', 'SHOW hapg.lease_bounded_commits') == mode,
             10, 'hapg.lease_bounded_commits = %s' % mode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--seconds', type=int, default=10)
    ap.add_argument('--clients', type=int, default=2)
    ap.add_argument('--scale', type=int, default=10)
    a = ap.parse_args()
    clusters = [harness.Cluster(n=1, name='pg', profile=PROFILE),
                harness.Cluster(n=1, name='pg', profile=PROFILE)]
    on, off, ratios = [], [], []
    try:
        for c in clusters:
            c.start()
            c.wait_leader('pg-0')
            wait_for(lambda c=c: c.status('pg-0')['role'] == 'leader', 30, 'pg-0 to lead')
            run_as_pg(pgbench_argv(c.m('pg-0'), ['-i', '-q', '-s', str(a.scale)], as_pg=False), timeout=600)
        for i in range(a.rounds):
            checked = clusters[i % 2]
            modes = {id(checked): 'on'}
            for c in clusters:
                set_check(c, modes.get(id(c), 'off'))
            procs = [subprocess.Popen(pgbench_argv(c.m('pg-0'), ['-b', 'tpcb-like', '-c', str(a.clients),
                                                                 '-j', str(a.clients), '-T', str(a.seconds), '-n']),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for c in clusters]
            outs = [p.communicate(timeout=a.seconds + 120)[0] for p in procs]
            t = {modes.get(id(c), 'off'): tps(o) for c, o in zip(clusters, outs)}
            on.append(t['on'])
            off.append(t['off'])
            ratios.append(t['on'] / t['off'])
            log('round %d: check on (cluster %s) %.0f tps, off %.0f tps, ratio %.4f'
                % (i + 1, 'AB'[i % 2], t['on'], t['off'], ratios[-1]))
        for c in clusters:
            assert c.status('pg-0')['role'] == 'leader'
    finally:
        for c in clusters:
            c.stop()
    print('| pgbench tpcb-like, %d clients each, %d s rounds, scale %d, both at once | check on | check off | on / off |'
          % (a.clients, a.seconds, a.scale))
    print('|---|---:|---:|---:|')
    print('| median of %d rounds | %.0f tps | %.0f tps | %+.2f %% (median of the per-round ratios) |'
          % (a.rounds, statistics.median(on), statistics.median(off), (statistics.median(ratios) - 1) * 100))
    print('| per-round ratios, min–max | | | %+.2f %% – %+.2f %% |'
          % ((min(ratios) - 1) * 100, (max(ratios) - 1) * 100))
    ns = check_cost()
    txn_us = a.clients * 1e6 / statistics.median(off)
    print('| one check (bench/check_cost.c: writable_until, the clock, the rule) | %.0f ns | | '
          '2 per commit = %.3f %% of a %.0f µs transaction |' % (ns, 2 * ns / 1000 / txn_us * 100, txn_us))


def check_cost():
    """Build and run bench/check_cost.c: nanoseconds per check."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'hapg-check-cost-%d' % os.getpid())
    subprocess.run(['gcc', '-O2', '-I', os.path.join(root, 'src'), '-o', exe,
                    os.path.join(root, 'bench', 'check_cost.c'), os.path.join(root, 'src', 'commitrule.c'),
                    os.path.join(root, 'src', 'lease.c'), os.path.join(root, 'src', 'common.c')], check=True)
    try:
        out = subprocess.run([exe], stdout=subprocess.PIPE, text=True, check=True).stdout
    finally:
        os.unlink(exe)
    return float(out.split()[0])


if __name__ == '__main__':
    main()
