#!/usr/bin/python3
"""Benchmark (not a test): write availability through a Kubernetes API
outage, hapg with and without failsafe mode vs Patroni 3.0.2 with
`failsafe_mode: true`, 3 members each on the same API double, same ttl /
loop_wait / retry_timeout (bench/failover.py's profiles and writers).

Scenarios, each on a fresh 3-member cluster:

api-down    every member's API requests answer 503 for --outage seconds
            (the API server down for everyone: a control-plane upgrade)
leader-cut  only the leader's requests answer 503, for --outage seconds

A writer per member sends an autocommit INSERT every 20 ms on a kept
connection from before the fault until the cluster writes again after it.
Reported per run: `unavailable` = the total time within [fault, fault end
+ recovery] during which no member acknowledged a write for longer than
0.25 s (the sum of such gaps), the longest gap, whether the leader changed
and whether the old leader ever refused a write (it fenced or demoted).
The goal for hapg with failsafe mode: 0 s of unavailability, no failover.

CLI:
  /usr/bin/python3 bench/outage.py [--runs N] [--profile fast|default]
      [--outage S] [--scenarios api-down,leader-cut]
      [--systems hapg-failsafe,hapg,patroni-failsafe] [--json F] [--markdown]
Runs as root (PostgreSQL and Patroni run as user postgres); everything on
127.0.0.1; every wait is bounded; progress goes to stderr.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import failover  # noqa: E402
from failover import PROFILES, HapgSystem, PatroniSystem, Writer, harness, log  # noqa: E402

GAP = 0.25          # a pause in acknowledged writes longer than this counts


class HapgFailsafe(HapgSystem):
    name = 'hapg failsafe'
    extra_conf = dict(failover.HAPG_EXTRA_CONF, **{'hapg.failsafe_mode': 'on'})


class HapgPlain(HapgSystem):
    name = 'hapg'


class PatroniFailsafe(PatroniSystem):
    name = 'Patroni failsafe'
    dcs_extra = {'failsafe_mode': True}


SYSTEMS = {'hapg-failsafe': HapgFailsafe, 'hapg': HapgPlain, 'patroni-failsafe': PatroniFailsafe}


def gaps(times, t0, t1):
    """Pauses longer than GAP between acknowledged writes in [t0, t1]."""
    ts = [t0] + sorted(t for t in times if t0 <= t <= t1) + [t1]
    return [b - a for a, b in zip(ts, ts[1:]) if b - a > GAP]


def run_once(system_cls, prof, scenario, outage):
    """One fresh cluster, one outage; returns a dict of figures (seconds)."""
    ttl = prof['ttl']
    s = system_cls(prof)
    writers, watch, failed = [], None, False
    budget = outage + 6 * ttl + 60
    try:
        s.start()
        leader = s.leader
        watch = s.watch(max_seconds=budget + 120)
        watch.wait_event(lambda ev: ev['holder'] == leader, 0, 30, 'the lock held by %s' % leader)
        writers = [Writer(m, s.ports[m], budget + 60).start() for m in s.members]
        harness.wait_for(lambda: any(w.oks > 10 for w in writers), 30, 'writes on the leader')
        ev = watch.wait_event(lambda e: e['renewed'] and e['holder'] == leader, time.monotonic(),
                              3 * prof['loop_wait'] + 10, 'a renewal by %s' % leader)
        time.sleep(max(0.0, ev['t'] + 0.1 - time.monotonic()))
        users = s.members if scenario == 'api-down' else [s.fault_user()]
        t0 = time.monotonic()
        for w in writers:
            w.arm(t0)
        for u in users:
            s.double().add_fault(user=u, mode='error', status=503)
        time.sleep(outage)
        t1 = time.monotonic()
        s.double().clear_faults()
        # the cluster writes again, and has for a while
        harness.wait_for(lambda: any(w.last_ok and w.last_ok > t1 + 3 for w in writers),
                         6 * ttl + 60, 'writes after the outage', interval=0.1)
        t_end = time.monotonic()
        oks = [t for w in writers for t in w.ok_times]
        gs = gaps(oks, t0, t_end)
        lw = {w.label: w for w in writers}[leader]
        refused = lw.first_fail is not None
        with watch.cond:
            holders = [e['holder'] for e in watch.events if e['t'] >= t0 and e['holder']]
        r = {'system': s.name, 'scenario': scenario, 'outage': outage,
             'unavailable': sum(gs), 'longest_gap': max(gs) if gs else 0.0,
             'failover': any(h != leader for h in holders),
             'old_leader_refused': refused,
             'writes': sum(1 for t in oks if t0 <= t <= t_end),
             'old_leader': leader}
        return r
    except BaseException:
        failed = True
        failover.log_failure(s)
        raise
    finally:
        failover.stop_run(s, writers, watch, failed)


def table(results, markdown, outage, prof):
    rows = ['| system | scenario | runs | unavailable (median, max) | longest gap (max) | '
            'failovers | old leader refused writes |',
            '| --- | --- | --- | --- | --- | --- | --- |']
    for (sysname, sc), rs in results.items():
        ok = [r for r in rs if 'error' not in r]
        if not ok:
            rows.append('| %s | %s | 0 of %d | %s | | | |' % (
                sysname, sc, len(rs), '; '.join(r['error'][:80] for r in rs)))
            continue
        un = [r['unavailable'] for r in ok]
        rows.append('| %s | %s | %d | %.2f s, %.2f s | %.2f s | %d | %d |' % (
            sysname, sc, len(ok), statistics.median(un), max(un),
            max(r['longest_gap'] for r in ok), sum(r['failover'] for r in ok),
            sum(r['old_leader_refused'] for r in ok)))
    head = ('Write availability through a %.0f s API outage (503 to every request), profile '
            'ttl %d / loop_wait %d / retry_timeout %d; unavailable = sum of pauses > %.2f s '
            'between acknowledged writes (writer every 20 ms on every member) from the fault to '
            'the cluster writing again.' % (outage, prof['ttl'], prof['loop_wait'],
                                            prof['retry_timeout'], GAP))
    return head + '\n\n' + '\n'.join(rows) if markdown else head + '\n' + '\n'.join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=2)
    ap.add_argument('--profile', default='fast', choices=sorted(PROFILES))
    ap.add_argument('--outage', type=float, default=60.0)
    ap.add_argument('--scenarios', default='api-down,leader-cut')
    ap.add_argument('--systems', default='hapg-failsafe,hapg,patroni-failsafe')
    ap.add_argument('--json', default=None)
    ap.add_argument('--markdown', action='store_true')
    args = ap.parse_args()
    scenarios = [x for x in args.scenarios.split(',') if x]
    systems = [x for x in args.systems.split(',') if x]
    for sc in scenarios:
        if sc not in ('api-down', 'leader-cut'):
            ap.error('unknown scenario %r' % sc)
    for sy in systems:
        if sy not in SYSTEMS:
            ap.error('unknown system %r (known: %s)' % (sy, ', '.join(SYSTEMS)))
    if not 1 <= args.runs <= 20 or not 5 <= args.outage <= 600:
        ap.error('--runs 1..20, --outage 5..600')
    if os.geteuid() != 0:
        ap.error('run as root (PostgreSQL and Patroni run as user postgres)')
    prof = PROFILES[args.profile]
    results = {}
    t_all = time.monotonic()
    for sc in scenarios:
        for sy in systems:
            cls = SYSTEMS[sy]
            key = (cls.name, sc)
            results[key] = []
            for i in range(args.runs):
                log('%s %s run %d/%d ...' % (cls.name, sc, i + 1, args.runs))
                try:
                    r = run_once(cls, prof, sc, args.outage)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001
                    log('  failed: %s: %s' % (type(e).__name__, e))
                    results[key].append({'error': '%s: %s' % (type(e).__name__, e)})
                    continue
                log('  unavailable %.2f s, longest gap %.2f s, failover %s, old leader refused %s'
                    % (r['unavailable'], r['longest_gap'], r['failover'], r['old_leader_refused']))
                results[key].append(r)
    print(table(results, args.markdown, args.outage, prof))
    print('Total benchmark time %.0f s.' % (time.monotonic() - t_all))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([dict(r, key=list(k)) for k, rs in results.items() for r in rs], f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
