#!/usr/bin/python3
"""Start/stop/show a detached hapg demo cluster (API double + N members) using
tests/harness.py.  Used by scripts/demo.sh.

  cluster.py start --dir DIR [--members 3] [--profile default|fast] [--no-tls]
  cluster.py show  --dir DIR
  cluster.py stop  --dir DIR

The state (ports, paths, pids) is kept in DIR/state.json; the kubeconfig for
kubectl in DIR/kubeconfig.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

import harness  # noqa: E402

PROFILES = {'default': harness.DEFAULT_PROFILE, 'fast': harness.FAST_PROFILE}


def table(rows):
    if not rows:
        return '(no rows)'
    cols = list(rows[0].keys())
    data = [[('' if r[c] is None else str(r[c])) for c in cols] for r in rows]
    w = [max(len(c), *(len(d[i]) for d in data)) for i, c in enumerate(cols)]
    out = [' | '.join(c.ljust(w[i]) for i, c in enumerate(cols)),
           '-+-'.join('-' * x for x in w)]
    out += [' | '.join(d[i].ljust(w[i]) for i in range(len(cols))) for d in data]
    return '\n'.join(out)


def status_vertical(row):
    w = max(len(k) for k in row)
    return '\n'.join('%s | %s' % (k.ljust(w), '' if v is None else v) for k, v in row.items())


def state_path(d):
    return os.path.join(d, 'state.json')


def cmd_start(a):
    d = os.path.abspath(a.dir)
    if os.path.exists(state_path(d)):
        c = harness.Cluster.load_state(state_path(d))
        if c.double.running() or any(m.running() for m in c.members.values()):
            print('a demo cluster is already running from %s; stop it first: scripts/demo.sh stop' % d)
            return 1
        shutil.rmtree(d, ignore_errors=True)
    elif os.path.exists(d):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    profile = PROFILES[a.profile]
    c = harness.Cluster(n=a.members, name=a.cluster, profile=profile, base_dir=d,
                        tls=not a.no_tls, detach=True, keep=True, launcher=True)
    print('starting the Kubernetes API double and %d members in %s (profile %s: ttl=%d loop_wait=%d retry_timeout=%d)'
          % (a.members, d, a.profile, profile['ttl'], profile['loop_wait'], profile['retry_timeout']))
    c.start()
    c.save_state(state_path(d))
    c.double.kubeconfig(os.path.join(d, 'kubeconfig'))
    expect = {m: ('primary' if i == 0 else 'replica') for i, m in enumerate(c.names)}
    t0 = time.monotonic()
    print('waiting for the leader lease and the role labels (up to ~%ds) ...' % (3 * profile['ttl'] + 10))
    c.wait_leader(c.names[0])
    c.wait_labels(expect)
    def view_ok():
        v = c.members_view(c.names[0])
        return (sorted(v) == sorted(c.names) and v[c.names[0]]['role'] == 'leader' and
                all(v[m]['state'] == 'streaming' for m in c.names[1:]))
    harness.wait_for(view_ok, 3 * profile['ttl'] + 10,
                     'hapg_members on %s to show every standby streaming' % c.names[0])
    print('leader %s and labels in place after %.1fs' % (c.holder(), time.monotonic() - t0))
    show(c, d)
    return 0


def show(c, d):
    primary = c.holder() or c.names[0]
    print('\n== SELECT * FROM hapg_members;  (on %s)' % primary)
    print(table(c.sql(primary, 'SELECT * FROM hapg_members ORDER BY member')))
    print('\n== SELECT * FROM hapg_status();  (on %s)' % primary)
    print(status_vertical(c.sql1(primary, 'SELECT * FROM hapg_status()')))
    print('\n== Lease %s' % c.name)
    lease = c.lease() or {}
    print(json.dumps(lease.get('spec'), indent=1))
    psql = os.path.join(harness.PGBIN, 'psql')
    print('\n== How to connect')
    for m in c.members.values():
        print('  %-6s psql -h 127.0.0.1 -p %d -U postgres   # %s; log: %s' % (
            m.name, m.port, 'primary' if m.name == primary else 'standby', m.logfile))
    print('  (psql is %s; e.g. %s -h 127.0.0.1 -p %d -U postgres -c "SELECT * FROM hapg_members")'
          % (psql, psql, c.m(primary).port))
    for m in c.members.values():
        print('  %-6s curl -s http://127.0.0.1:%d/cluster   # health checks (/primary, /replica, ...) and /metrics'
              % (m.name, m.http_port))
    kc = os.path.join(d, 'kubeconfig')
    if shutil.which('kubectl'):
        print('  kubectl --kubeconfig %s get pods -L role' % kc)
        print('  kubectl --kubeconfig %s get lease %s -o yaml' % (kc, c.name))
    else:
        print('  (kubectl is not installed -- it is not in Debian 12; with it: '
              'kubectl --kubeconfig %s get pods -L role)' % kc)
    print('  the API double: %s (CA %s, log %s)' % (c.double.url(c.double.admin_port),
                                                   c.double.ca_file or '-', c.double.log_path))
    print('\n== How to stop')
    print('  scripts/demo.sh stop')


def cmd_show(a):
    d = os.path.abspath(a.dir)
    if not os.path.exists(state_path(d)):
        print('no demo cluster in %s' % d)
        return 1
    show(harness.Cluster.load_state(state_path(d)), d)
    return 0


def cmd_stop(a):
    d = os.path.abspath(a.dir)
    if not os.path.exists(state_path(d)):
        print('no demo cluster in %s (nothing to stop)' % d)
        return 0
    c = harness.Cluster.load_state(state_path(d))
    c.stop(keep=True)
    print('stopped the demo cluster (files kept in %s; remove with: rm -rf %s)' % (d, shlex.quote(d)))
    os.rename(state_path(d), state_path(d) + '.stopped')
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('command', choices=['start', 'show', 'stop'])
    ap.add_argument('--dir', default='/tmp/hapg-demo')
    ap.add_argument('--members', type=int, default=3)
    ap.add_argument('--cluster', default='c1')
    ap.add_argument('--profile', choices=sorted(PROFILES), default='default')
    ap.add_argument('--no-tls', action='store_true')
    a = ap.parse_args()
    return {'start': cmd_start, 'show': cmd_show, 'stop': cmd_stop}[a.command](a)


if __name__ == '__main__':
    sys.exit(main())
