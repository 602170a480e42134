#!/usr/bin/python3
"""Benchmark (not a test): the write gap through HAProxy across a planned
switchover and across the loss of the leader's node, hapg beside Patroni.

Both systems: 3 members on the Kubernetes API double, the same ttl /
loop_wait / retry_timeout, and in front of them Debian's HAProxy with the
same configuration, kubernetes/haproxy/haproxy.cfg (writes to the server
whose `OPTIONS /primary` answers 200, reads by `/replica?lag=1MB`; checks
every 1 s, fall 2, rise 1, on-marked-down shutdown-sessions), its server
lines pointing at the members' PostgreSQL ports, checked on hapg's HTTP
endpoint (hapg.http_port) or Patroni's REST API.  hapg members run under
bin/hapg-launcher (bench/switchover.py's HapgSide); Patroni is Debian's
Patroni 3.0.2 in Kubernetes mode (PatroniSide, tests/double/patroni_cluster.py).

A client writes one row every 20 ms through HAProxy's write port on one
connection, reconnecting after any error (tests/haproxy_tools.py Writer).

switchover  hapg_switchover(candidate) on the other replica / patronictl
            switchover --candidate (the replicas alternate)
failover    SIGKILL of the leader's whole node: hapg, its launcher and every
            server process (harness kill9_tree); Patroni, the patroni
            daemon and its postmaster; the member is started again after
            the run and must rejoin before the next one.

Per run: the longest time without an acknowledged write from the trigger
until 2 s after writes reached the new leader through HAProxy (the write
gap), and the time until HAProxy routed writes to the new leader.

Usage, as root:  /usr/bin/python3 bench/haproxy.py [--runs 3] [--no-patroni]
                 [--profile fast|default] [--json F]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import switchover as sw  # noqa: E402  (puts tests/ and tests/double/ on sys.path)
from failover import PROFILES, log  # noqa: E402

import harness  # noqa: E402
import haproxy_tools  # noqa: E402

TABLE = 'bench_haproxy'
SETTLE = 2.0


def check_ports(side):
    """Each member's health-check port: hapg's HTTP endpoint, Patroni's REST API."""
    if side.name == 'hapg':
        return {m: side.c.m(m).http_port for m in side.members}
    return {m: side.c.rest_ports[m] for m in side.members}


def server_port(wport):
    return haproxy_tools.try_scalar(wport, 'SELECT inet_server_port()')


def kill_node(side, leader):
    if side.name == 'hapg':
        side.c.kill9_tree(leader)
    else:
        side.c.kill(leader)


def one_run(side, scenario, i, wport, w, prof):
    ttl = prof['ttl']
    leader = side.wait_healthy(3 * ttl + 90)
    replicas = sorted(m for m in side.members if m != leader)
    harness.wait_for(lambda: server_port(wport) == side.ports[leader], 30,
                     'HAProxy to route writes to %s' % leader)
    harness.wait_for(lambda: w.resumed_after(time.monotonic() - 0.2), 10, 'writes on %s' % leader)
    r = {'system': side.name, 'scenario': scenario, 'run': i + 1, 'old_leader': leader}
    t0 = time.monotonic()
    if scenario == 'switchover':
        cand = replicas[i % 2]
        via = replicas[1 - i % 2]
        new, _ = side.switchover(leader, cand, via, 3 * ttl + 60)
        r['call'] = time.monotonic() - t0
    else:
        kill_node(side, leader)
        new = None
    deadline = 3 * ttl + 60

    def routed():
        p = server_port(wport)
        if p is None or p == side.ports[leader]:
            return None
        return next((m for m, port in side.ports.items() if port == p), None)
    new_routed = harness.wait_for(routed, deadline, 'HAProxy to route writes away from %s' % leader,
                                  interval=0.05)
    r['routed'] = time.monotonic() - t0
    t_r = time.monotonic()
    harness.wait_for(lambda: w.resumed_after(t_r), 15, 'writes through HAProxy on %s' % new_routed)
    time.sleep(SETTLE)
    r['gap'] = w.gap_after(t0)
    r['new_leader'] = new_routed
    if new is not None and new != new_routed:
        r['problem'] = 'the switchover named %s, HAProxy routes to %s' % (new, new_routed)
    if scenario == 'failover':
        if side.name == 'hapg':
            side.c.start_member(leader, wait=False)
        else:
            side.restart(leader)
    side.wait_healthy(3 * ttl + 120)
    return r


def run_system(cls, prof, runs, scenarios):
    side = cls(prof).start()
    tmp = tempfile.mkdtemp(prefix='hapg-bench-haproxy-')
    os.chmod(tmp, 0o755)
    hp = w = None
    out = []
    try:
        leader = side.wait_healthy(3 * prof['ttl'] + 90)
        sw.fo._pg(side.ports[leader], 'CREATE TABLE IF NOT EXISTS %s (i int, at timestamptz)' % TABLE)
        chk = check_ports(side)
        cfg, wport, rport = haproxy_tools.render_config(
            [(m, side.ports[m], chk[m]) for m in side.members], tmp)
        hp = haproxy_tools.HAProxy(cfg, tmp)
        haproxy_tools.wait_routed(wport, rport, timeout=60)
        w = haproxy_tools.Writer(wport, TABLE).start()
        for sc in scenarios:
            for i in range(runs):
                r = one_run(side, sc, i, wport, w, prof)
                log('%s %s run %d: write gap %.2f s, HAProxy routed to %s after %.2f s%s' % (
                    side.name, sc, i + 1, r['gap'], r['new_leader'], r['routed'],
                    ('; ' + r['problem']) if 'problem' in r else ''))
                out.append(r)
    finally:
        if w is not None:
            w.stop()
        if hp is not None:
            hp.stop()
        side.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--profile', default='fast', choices=sorted(PROFILES))
    ap.add_argument('--scenarios', default='switchover,failover')
    ap.add_argument('--no-patroni', action='store_true')
    ap.add_argument('--json')
    a = ap.parse_args()
    prof = PROFILES[a.profile]
    scenarios = a.scenarios.split(',')
    systems = [sw.HapgSide] + ([] if a.no_patroni else [sw.PatroniSide])
    results = []
    for cls in systems:
        results += run_system(cls, prof, a.runs, scenarios)
    print('Write gap through HAProxy (kubernetes/haproxy/haproxy.cfg), profile %s: ttl %d s, '
          'loop_wait %d s, retry_timeout %d s' % (a.profile, prof['ttl'], prof['loop_wait'],
                                                 prof['retry_timeout']))
    print('| system | scenario | write gap median (min-max) | routed to the new leader after | N |')
    print('| --- | --- | --- | --- | --- |')
    for name in [c.name for c in systems]:
        for sc in scenarios:
            rs = [r for r in results if r['system'] == name and r['scenario'] == sc]
            if not rs:
                continue
            g = [r['gap'] for r in rs]
            t = [r['routed'] for r in rs]
            print('| %s | %s | %.2f s (%.2f-%.2f) | %.2f s (%.2f-%.2f) | %d |' % (
                name, sc, statistics.median(g), min(g), max(g), statistics.median(t), min(t), max(t),
                len(rs)))
    bad = [r for r in results if 'problem' in r]
    for r in bad:
        print('problem: %s %s run %d: %s' % (r['system'], r['scenario'], r['run'], r['problem']))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
