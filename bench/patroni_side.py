#!/usr/bin/env python3
"""Patroni's side of the benchmark: API requests per loop and memory of 3 Patroni members.

    from bench.patroni_side import run_patroni      (or put bench/ on sys.path)
    r = run_patroni(double_admin_url, api_url, ca_file, tokens, ttl=20, loop_wait=2,
                    retry_timeout=5, seconds=60, writer=False)

starts 3 Debian Patroni 3.0.2 members (tests/double/patroni/patroni_cluster.py) on the
given API double, waits for a leader and a steady cluster (leader + 2
streaming replicas), resets /_double/stats, measures `seconds` (optionally
with a client inserting rows into the leader all the time), then stops
everything.  api_url is one URL or a list of 3 (one per member); tokens are 3
bearer tokens, one per member, so their requests can be told apart.

Returns a dict:
    loops                 seconds / loop_wait
    requests_total        {verb: n} over the cluster (only the members' users)
    requests_per_loop     {verb: n / loops}, requests_per_loop_total
    by_member             {member: {verb: n}}
    memory_kb             {member: {"rss_kb": .., "pss_kb": ..}} of each Patroni process
    rss_kb_total, pss_kb_total, rows_written, leader, ttl, loop_wait, retry_timeout, seconds

CLI: python3 bench/patroni_side.py [--admin-url URL --api-url URL... --ca FILE --token T...]
     [--ttl 20 --loop-wait 2 --retry-timeout 5 --seconds 30 --writer]
Without --admin-url it starts its own double (TLS, 3 ports) and prints the JSON result.
"""

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'double', 'patroni'))

from patroni_cluster import PG_BIN, PatroniCluster  # noqa: E402

VERBS = ('get', 'list', 'watch', 'create', 'update', 'patch', 'delete')


def _admin(url, method, path, token=None, ctx=None):
    # one admin-API call to the double, JSON back
    req = urllib.request.Request(url.rstrip('/') + path, method=method, data=b'' if method == 'POST' else None)
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return json.loads(r.read() or b'null')


def _writer(host, port, stop, counter):
    """Insert rows into the leader until stop is set (one psql session fed through stdin)."""
    psql = os.path.join(PG_BIN, 'psql')
    base = [psql, '-X', '-q', '-h', host, '-p', str(port), '-U', 'postgres', '-d', 'postgres']
    subprocess.run(base + ['-c', 'CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, '
                                 't timestamptz DEFAULT now(), pad text)'],
                   check=False, timeout=30, capture_output=True)
    p = subprocess.Popen(base + ['-v', 'ON_ERROR_STOP=0'], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not stop.is_set() and p.poll() is None:
            p.stdin.write(b"INSERT INTO bench_rows (pad) VALUES (repeat('x', 100));\n")
            p.stdin.flush()
            counter[0] += 1
            stop.wait(0.01)
    except OSError:
        pass
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def run_patroni(double_admin_url, api_url, ca_file, tokens, ttl=20, loop_wait=2, retry_timeout=5,
                seconds=60, writer=False, namespace='patroni-bench', admin_token=None, workdir=None,
                startup_timeout=180):
    """Start 3 Patroni members on the double, measure `seconds` of steady state, stop them."""
    if loop_wait + 2 * retry_timeout > ttl:
        raise ValueError('loop_wait + 2 * retry_timeout must be <= ttl')
    tokens = list(tokens)
    if len(tokens) != 3:
        raise ValueError('want 3 tokens, one per member')
    urls = [api_url] * 3 if isinstance(api_url, str) else list(api_url)
    api_ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
    admin_ctx = api_ctx if double_admin_url.startswith('https') else None
    users = [_admin(double_admin_url, 'GET', '/_double/whoami', t, admin_ctx)['user'] for t in tokens]
    own_work = workdir is None
    work = workdir or tempfile.mkdtemp(prefix='pgb', dir='/tmp')
    c = PatroniCluster(work, urls, ca_file, tokens, admin_token=admin_token or tokens[0],
                       namespace=namespace, scope='patroni-bench', ttl=ttl, loop_wait=loop_wait,
                       retry_timeout=retry_timeout, log_level='WARNING')
    stop, counter, wthread = threading.Event(), [0], None
    try:
        c.start()
        leader = c.wait_leader(startup_timeout)
        c.wait_steady(startup_timeout)
        time.sleep(2 * loop_wait)                 # let the first post-bootstrap writes settle
        if writer:
            wthread = threading.Thread(target=_writer, args=('127.0.0.1', c.pg_port(leader), stop, counter),
                                       daemon=True)
            wthread.start()
            time.sleep(1)
        _admin(double_admin_url, 'POST', '/_double/stats/reset', ctx=admin_ctx)
        t0 = time.monotonic()
        time.sleep(max(0.0, float(seconds)))
        elapsed = time.monotonic() - t0
        stats = _admin(double_admin_url, 'GET', '/_double/stats', ctx=admin_ctx)
        memory = c.memory()
        leader_after = c.leader()
    finally:
        stop.set()
        if wthread:
            wthread.join(15)
        c.stop()
        try:
            c.delete_objects()            # the next run on this double starts clean
        except OSError:
            pass
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    by_member = {}
    total = {v: 0 for v in VERBS}
    for name, user in zip(c.names, users):
        per = stats['by_user'].get(user, {})
        by_member[name] = per
        for v, n in per.items():
            total[v] = total.get(v, 0) + n
    loops = elapsed / loop_wait
    per_loop = {v: round(n / loops, 3) for v, n in total.items()}
    rss = [m['rss_kb'] for m in memory.values() if m['rss_kb'] is not None]
    pss = [m['pss_kb'] for m in memory.values() if m['pss_kb'] is not None]
    return {'ttl': ttl, 'loop_wait': loop_wait, 'retry_timeout': retry_timeout, 'seconds': round(elapsed, 2),
            'loops': round(loops, 2), 'leader': leader, 'leader_after': leader_after,
            'requests_total': total, 'requests_per_loop': per_loop,
            'requests_per_loop_total': round(sum(total.values()) / loops, 3),
            'by_member': by_member, 'memory_kb': memory, 'rss_kb_total': sum(rss), 'pss_kb_total': sum(pss),
            'rows_written': counter[0], 'writer': bool(writer)}


class _OwnDouble:
    """A private double for the CLI: TLS on 3 ports plus a plain admin port."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='pgbd', dir='/tmp')
        subprocess.run(['sh', os.path.join(ROOT, 'apidouble', 'mkcerts.sh'), self.dir], check=True, timeout=60)
        pf = os.path.join(self.dir, 'ports')
        self.tokens = ['bench-0', 'bench-1', 'bench-2']
        cmd = [sys.executable, os.path.join(ROOT, 'apidouble', 'kubeapi.py'), '--quiet', '--port-file', pf,
               '--tls-cert', os.path.join(self.dir, 'server.crt'), '--tls-key', os.path.join(self.dir, 'server.key')]
        for i, t in enumerate(self.tokens):
            cmd += ['--listen', '127.0.0.1:0', '--token', '%s=patroni-%d' % (t, i)]
        cmd += ['--listen-plain', '127.0.0.1:0']
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        if not self.proc.stdout.readline().startswith('kubeapi listening'):
            raise RuntimeError('double did not start')
        ports = [int(x) for x in open(pf).read().split()]
        self.api_urls = ['https://127.0.0.1:%d' % p for p in ports[:3]]
        self.admin_url = 'http://127.0.0.1:%d' % ports[3]
        self.ca = os.path.join(self.dir, 'ca.crt')

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--admin-url')
    p.add_argument('--api-url', action='append')
    p.add_argument('--ca')
    p.add_argument('--token', action='append')
    p.add_argument('--ttl', type=int, default=20)
    p.add_argument('--loop-wait', type=int, default=2)
    p.add_argument('--retry-timeout', type=int, default=5)
    p.add_argument('--seconds', type=float, default=30)
    p.add_argument('--writer', action='store_true')
    a = p.parse_args(argv)
    own = None
    if not a.admin_url:
        own = _OwnDouble()
        a.admin_url, a.api_url, a.ca, a.token = own.admin_url, own.api_urls, own.ca, own.tokens
    try:
        r = run_patroni(a.admin_url, a.api_url if len(a.api_url) > 1 else a.api_url[0], a.ca, a.token,
                        a.ttl, a.loop_wait, a.retry_timeout, a.seconds, a.writer)
    finally:
        if own:
            own.close()
    print(json.dumps(r, indent=1, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
