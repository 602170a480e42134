"""HAProxy in front of a cluster, for tests/test_http.py and bench/haproxy.py:
kubernetes/haproxy/haproxy.cfg with its server lines replaced by local
members, Debian's haproxy run in the foreground, and a client writing
through it."""

import os
import shutil
import subprocess
import threading
import time

import psycopg2

from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, 'kubernetes', 'haproxy', 'haproxy.cfg')
HAPROXY = shutil.which('haproxy') or ('/usr/sbin/haproxy' if os.path.exists('/usr/sbin/haproxy') else None)


def render_config(servers, dirpath, template=TEMPLATE):
    """The example configuration with every backend's servers replaced by
    `servers` [(name, postgres port, check port)] on 127.0.0.1 and the
    listen ports by free local ones; (path, write port, read port)."""
    with open(template) as f:
        cfg = f.read()
    ports = {':5432': free_port(), ':5433': free_port(), ':8404': free_port()}
    out = []
    for line in cfg.splitlines():
        s = line.strip()
        if s.startswith('server ') and ' check' in s:
            continue
        if s.startswith('bind'):
            for k, p in ports.items():
                if k in s:
                    line = line.replace(s, 'bind 127.0.0.1:%d' % p)
        out.append(line)
        if s.startswith('backend '):
            for name, pg_port, check_port in servers:
                out.append('    server %s 127.0.0.1:%d check port %d' % (name, pg_port, check_port))
    path = os.path.join(dirpath, 'haproxy.cfg')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')
    return path, ports[':5432'], ports[':5433']


class HAProxy:
    """haproxy -db -f cfg, its output in dirpath/haproxy.log."""

    def __init__(self, cfg, dirpath):
        if HAPROXY is None:
            raise RuntimeError('haproxy (Debian package haproxy) is not installed')
        r = subprocess.run([HAPROXY, '-c', '-f', cfg], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError('haproxy -c: %s' % (r.stdout + r.stderr))
        self.log = open(os.path.join(dirpath, 'haproxy.log'), 'w')
        self.p = subprocess.Popen([HAPROXY, '-db', '-f', cfg], stdout=self.log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
        self.log.close()


def connect(port, timeout=2):
    conn = psycopg2.connect(host='127.0.0.1', port=port, user='postgres', dbname='postgres',
                            connect_timeout=timeout, application_name='hapg-haproxy-client')
    conn.autocommit = True
    return conn


def try_scalar(port, sql):
    """One value through a fresh connection, None on any error."""
    try:
        conn = connect(port)
    except psycopg2.Error:
        return None
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchone()[0]
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def wait_routed(write_port, read_port, timeout=30):
    """Until writes reach a primary and six reads in a row a standby
    (HAProxy starts with every server up: the wrong ones leave their
    backend after their first failed checks)."""
    wait_for(lambda: try_scalar(write_port, 'SELECT pg_is_in_recovery()') is False, timeout,
             'HAProxy to route writes to the leader')
    wait_for(lambda: all(try_scalar(read_port, 'SELECT pg_is_in_recovery()') is True
                         for _ in range(6)), timeout, 'HAProxy to route reads to replicas only')


class Writer:
    """Inserts a row every `interval` s into `table` through HAProxy's write
    port, reconnecting after any error; keeps each acknowledged write's
    monotonic time."""

    def __init__(self, port, table, interval=0.02):
        self.port, self.table, self.interval = port, table, interval
        self.acked = []
        self.errors = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)

    def run(self):
        conn = None
        i = 0
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = connect(self.port)
                    conn.cursor().execute("SET statement_timeout = '2s'")
                i += 1
                conn.cursor().execute('INSERT INTO %s VALUES (%%s, now())' % self.table, (i,))
                self.acked.append(time.monotonic())
            except psycopg2.Error:
                self.errors += 1
                try:
                    if conn is not None:
                        conn.close()
                except psycopg2.Error:
                    pass
                conn = None
                time.sleep(0.05)
            time.sleep(self.interval)
        if conn is not None:
            conn.close()

    def resumed_after(self, t):
        return bool(self.acked) and self.acked[-1] > t

    def gap_after(self, t0):
        """The longest time without an acknowledged write from t0 on."""
        ts = [t0] + [t for t in self.acked if t >= t0]
        return max(b - a for a, b in zip(ts, ts[1:])) if len(ts) > 1 else float('inf')
