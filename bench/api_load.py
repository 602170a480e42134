#!/usr/bin/python3
"""Benchmark (not a test): Kubernetes API load and agent memory, hapg vs
Patroni, 3 members each on the API double, same timing settings.

For N loops (default 15) of loop_wait L seconds (default 2) in steady state,
idle and while a client inserts continuously into the primary, it counts the
API requests per loop by verb (from the double's /_double/stats, all members
together) and measures the agent's memory: for hapg the background worker
(pid from hapg_status().worker_pid), RSS and PSS from /proc/PID/smaps_rollup.
Patroni's numbers come from bench/patroni_side.py's run_patroni(...).

Prints one markdown table, side by side.  With --real, hapg is measured a
second time on the real kube-apiserver (scripts/kube-control-plane.sh, built
or reused): a second table gives its requests per loop by verb from the API
server's own apiserver_request_total metric (/metrics, every client: the
API server's own identity Lease in kube-system renews every 10 s too) and
from its audit log (the three members only), beside the double's counters.

  /usr/bin/python3 bench/api_load.py [--loop-wait 2] [--loops 15] [--ttl 20]
                                      [--retry-timeout 5] [--skip-patroni] [--real]
Runs as root (PostgreSQL runs as user postgres).
"""

import argparse
import os
import shutil
import tempfile
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))
sys.path.insert(0, HERE)

import harness  # noqa: E402

VERBS = ('get', 'list', 'watch', 'create', 'update', 'patch', 'delete')
METRIC_VERBS = {'GET': 'get', 'LIST': 'list', 'WATCH': 'watch', 'POST': 'create', 'PUT': 'update',
                'PATCH': 'patch', 'DELETE': 'delete', 'APPLY': 'patch'}


class Inserter:
    """A client inserting continuously into the primary (bounded in time)."""

    def __init__(self, connect, max_seconds):
        self.connect = connect
        self.max_seconds = max_seconds
        self.stop_ev = threading.Event()
        self.rows = 0
        self.error = None
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            conn = self.connect()
            with conn.cursor() as cur:
                cur.execute('CREATE TABLE IF NOT EXISTS bench_load(id bigserial primary key, v text)')
                deadline = time.monotonic() + self.max_seconds
                while not self.stop_ev.is_set() and time.monotonic() < deadline:
                    cur.execute("INSERT INTO bench_load(v) SELECT repeat('x', 200) FROM generate_series(1, 20)")
                    self.rows += 20
            conn.close()
        except Exception as e:  # noqa: BLE001
            self.error = e

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(30)


def per_loop(total_stats, loops):
    return {v: total_stats.get(v, 0) / float(loops) for v in VERBS}


def measure_window(double, users, loops, loop_wait, metrics=None):
    """Reset the double's counters, let `loops` loops pass, return
    {verb: requests per loop} summed over `users`, and per user.  On the
    real server `metrics` (a dict) also gets apiserver_request_total's
    increase per verb over the window, per loop."""
    double.reset_stats()
    m0 = double.metrics() if metrics is not None else None
    t0 = time.monotonic()
    time.sleep(loops * loop_wait)      # the measurement window itself
    st = double.stats()
    elapsed = time.monotonic() - t0
    n = elapsed / loop_wait
    if metrics is not None:
        m1 = double.metrics()
        for (verb, resource, code), v in m1.items():
            d = v - m0.get((verb, resource, code), 0)
            # the metric names HTTP verbs (PUT, POST, ...); hapg's resources only
            # (the /metrics reads themselves are not counted)
            key = METRIC_VERBS.get(verb, verb.lower())
            if d > 0 and resource in ('leases', 'pods'):
                metrics[key] = metrics.get(key, 0) + d / n
    by_user = st.get('by_user') or {}
    total = {v: sum(int((by_user.get(u) or {}).get(v, 0)) for u in users) for v in VERBS}
    per_user = {u: {v: int((by_user.get(u) or {}).get(v, 0)) / n for v in VERBS} for u in users}
    return per_loop(total, n), per_user


def run_hapg(loop_wait, loops, ttl, retry_timeout, backend='double'):
    prof = {'ttl': ttl, 'loop_wait': loop_wait, 'retry_timeout': retry_timeout}
    if backend == 'real':
        os.environ.setdefault('HAPG_KUBE_TOKEN_REFRESH', '3600')   # no token requests in the windows
    c = harness.Cluster(n=3, profile=prof, backend=backend)
    real = backend == 'real'
    out = {}
    try:
        c.start()
        print('hapg: cluster up in %s; waiting for steady state ...' % c.base_dir, file=sys.stderr)
        c.wait_leader('pg-0', timeout=3 * ttl + 20)
        c.wait_labels({'pg-0': 'primary', 'pg-1': 'replica', 'pg-2': 'replica'}, timeout=3 * ttl + 20)
        harness.wait_for(lambda: all(c.status(m)['api_ok'] for m in c.names), 3 * ttl,
                         'every member api_ok')
        time.sleep(2 * loop_wait)       # let start-up writes drain
        print('hapg: measuring %d idle loops ...' % loops, file=sys.stderr)
        out['idle_metrics'] = {} if real else None
        out['idle'], out['idle_by_user'] = measure_window(c.double, c.names, loops, loop_wait,
                                                          out['idle_metrics'])
        print('hapg: measuring %d loops with a client inserting ...' % loops, file=sys.stderr)
        with Inserter(lambda: c.connect('pg-0'), loops * loop_wait + 60) as ins:
            time.sleep(loop_wait)
            out['insert_metrics'] = {} if real else None
            out['insert'], out['insert_by_user'] = measure_window(c.double, c.names, loops, loop_wait,
                                                                  out['insert_metrics'])
        if ins.error:
            raise ins.error
        out['rows_inserted'] = ins.rows
        mem = {}
        for m in c.names:
            pid = c.worker_pid(m)
            mem[m] = harness.proc_memory(pid)
        out['mem'] = mem
        out['rss_kb'] = mem['pg-0'].get('rss_kb')
        out['pss_kb'] = mem['pg-0'].get('pss_kb')
        out['rss_kb_replica'] = mem['pg-1'].get('rss_kb')
        out['pss_kb_replica'] = mem['pg-1'].get('pss_kb')
    except BaseException:
        c.failed = True
        print(c.log_tails(20), file=sys.stderr)
        raise
    finally:
        c.stop()
    return out


def call_patroni(loop_wait, loops, ttl, retry_timeout):
    """Patroni's numbers from bench/patroni_side.py's run_patroni (helper-1's),
    on a fresh API double: one idle window and one with a writer."""
    try:
        from patroni_side import run_patroni
    except ImportError as e:
        return None, 'bench/patroni_side.py (run_patroni) is not available: %s' % e
    base = tempfile.mkdtemp(prefix='hapg-bench-patroni-')
    tokens = {'patroni-tok-%d-%s' % (i, os.urandom(4).hex()): 'patroni-%d' % i for i in range(3)}
    d = harness.Double(base, tls=True, tokens=tokens)
    out = {}
    notes = []
    try:
        d.start()
        for key, writer in (('idle', False), ('insert', True)):
            print('patroni: measuring %d loops%s ...' % (loops, ' with a writer' if writer else ''),
                  file=sys.stderr)
            try:
                # a namespace per run: the first run's objects (initialize key,
                # leader lock) must not be seen by the second cluster
                r = run_patroni(d.url(d.admin_port), d.url(d.api_port), d.ca_file, list(tokens),
                                ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout,
                                seconds=loops * loop_wait, writer=writer,
                                namespace='patroni-bench-' + key)
            except Exception as e:  # noqa: BLE001
                notes.append('%s run failed: %s: %s' % (key, type(e).__name__, e))
                out[key] = None
                continue
            out[key] = {v: float(r['requests_per_loop'].get(v, 0)) for v in VERBS}
            out[key + '_raw'] = r
            mem = r.get('memory_kb') or {}
            if key == 'idle' or 'rss_kb' not in out:
                leader = mem.get(r.get('leader')) or {}
                replica = next((v for k, v in sorted(mem.items()) if k != r.get('leader')), {})
                out['rss_kb'], out['pss_kb'] = leader.get('rss_kb'), leader.get('pss_kb')
                out['rss_kb_replica'] = replica.get('rss_kb')
                out['pss_kb_replica'] = replica.get('pss_kb')
            if writer:
                out['rows_inserted'] = r.get('rows_written')
    except Exception as e:  # noqa: BLE001
        notes.append('failed: %s: %s' % (type(e).__name__, e))
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)
    if out.get('idle') is None and out.get('insert') is None:
        return None, 'run_patroni ' + '; '.join(notes)
    return out, ('; '.join(notes) or None)


def fmt(x, digits=2):
    if x is None:
        return 'n/a'
    return ('%.' + str(digits) + 'f') % x


def mib(kb):
    return 'n/a' if kb is None else '%.1f MiB' % (kb / 1024.0)


def table(h, p, a, patroni_note):
    cols = ['hapg idle', 'hapg inserting', 'Patroni idle', 'Patroni inserting']
    lines = ['| requests per loop (3 members) | ' + ' | '.join(cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for v in VERBS + ('total',):
        def val(d):
            if d is None:
                return None
            return sum(d.values()) if v == 'total' else d.get(v)
        row = [val(h['idle']), val(h['insert']),
               val(p['idle']) if p else None, val(p['insert']) if p else None]
        lines.append('| %s | %s |' % (v, ' | '.join(fmt(x) for x in row)))
    writes = lambda d: None if d is None else sum(d.get(v, 0) for v in ('create', 'update', 'patch', 'delete'))
    lines.append('| writes (create+update+patch+delete) | %s |' % ' | '.join(
        fmt(x) for x in [writes(h['idle']), writes(h['insert']),
                         writes(p['idle']) if p else None, writes(p['insert']) if p else None]))
    lines.append('| agent RSS (leader) | %s | | %s | |' % (mib(h.get('rss_kb')), mib(p.get('rss_kb')) if p else 'n/a'))
    lines.append('| agent PSS (leader) | %s | | %s | |' % (mib(h.get('pss_kb')), mib(p.get('pss_kb')) if p else 'n/a'))
    lines.append('| agent RSS / PSS (a replica) | %s / %s | | %s / %s | |' % (
        mib(h.get('rss_kb_replica')), mib(h.get('pss_kb_replica')),
        mib(p.get('rss_kb_replica')) if p else 'n/a', mib(p.get('pss_kb_replica')) if p else 'n/a'))
    notes = ['',
             'Settings for both: ttl=%d s, loop_wait=%d s, retry_timeout=%d s; %d loops per window; '
             '3 members on the API double (127.0.0.1).' % (a.ttl, a.loop_wait, a.retry_timeout, a.loops),
             'hapg agent = its background worker process (/proc/PID/smaps_rollup; PSS shares the '
             'postgres binary and shared memory with the server); Patroni agent = the patroni '
             'Python process.',
             'Rows inserted during the inserting window: hapg %s, Patroni %s (Patroni\'s writer '
             'is one psql session, one row per statement; hapg\'s inserts 20 rows per statement).'
             % (h.get('rows_inserted'), p.get('rows_inserted') if p else 'n/a')]
    if patroni_note:
        notes.append('Patroni: %s' % patroni_note)
    return '\n'.join(lines + notes)


def real_table(h, r, a):
    """hapg on the double beside hapg on kube-apiserver, requests per loop by verb."""
    cols = ['double idle', 'double inserting', 'real idle (audit: members)', 'real inserting (audit)',
            'real idle (apiserver_request_total: all)', 'real inserting (apiserver_request_total)']
    lines = ['| hapg, requests per loop (3 members) | ' + ' | '.join(cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for v in VERBS + ('total',):
        def val(d):
            if d is None:
                return None
            return sum(d.get(x, 0) for x in VERBS) if v == 'total' else d.get(v, 0)
        row = [val(h['idle']), val(h['insert']), val(r['idle']), val(r['insert']),
               val(r['idle_metrics']), val(r['insert_metrics'])]
        lines.append('| %s | %s |' % (v, ' | '.join(fmt(x) for x in row)))
    lines += ['', 'Real server: kube-apiserver %s (scripts/kube-control-plane.sh), same settings; '
              'apiserver_request_total: leases and pods, every client, the API server\'s own identity '
              'Lease (kube-system, renewed every 10 s) included.' % real_release()]
    return '\n'.join(lines)


def real_release():
    import subprocess
    p = subprocess.run(['bash', os.path.join(os.path.dirname(HERE), 'scripts', 'kube-control-plane.sh'), 'env'],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    return dict(x.split('=', 1) for x in p.stdout.split()).get('KUBE_RELEASE', '?')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--loop-wait', type=int, default=2)
    ap.add_argument('--loops', type=int, default=15)
    ap.add_argument('--ttl', type=int, default=None,
                    help='default max(20, loop_wait + 2*retry_timeout) (Patroni accepts ttl >= 20)')
    ap.add_argument('--retry-timeout', type=int, default=None, help='default max(loop_wait, 5)')
    ap.add_argument('--skip-patroni', action='store_true')
    ap.add_argument('--real', action='store_true', help='hapg on kube-apiserver too (second table)')
    a = ap.parse_args()
    if a.retry_timeout is None:
        a.retry_timeout = max(a.loop_wait, 5)
    if a.ttl is None:
        a.ttl = max(20, a.loop_wait + 2 * a.retry_timeout)
    if a.loop_wait + 2 * a.retry_timeout > a.ttl:
        ap.error('loop_wait + 2*retry_timeout must be <= ttl')
    if a.loops < 1 or a.loops > 1000:
        ap.error('--loops must be in 1..1000')
    h = run_hapg(a.loop_wait, a.loops, a.ttl, a.retry_timeout)
    p_raw, note = (None, 'skipped (--skip-patroni)') if a.skip_patroni else call_patroni(
        a.loop_wait, a.loops, a.ttl, a.retry_timeout)
    p = p_raw
    print(table(h, p, a, note))
    if a.real:
        r = run_hapg(a.loop_wait, a.loops, a.ttl, a.retry_timeout, backend='real')
        print()
        print(real_table(h, r, a))
    return 0


if __name__ == '__main__':
    sys.exit(main())
