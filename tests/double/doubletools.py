"""Helpers for the API double's tests: run kubeapi.py, talk to it, read watch events.

The double runs as a subprocess on ephemeral ports (read back from --port-file)
and is always killed at teardown.  `Double.call` is a small http.client based
client that gives tests the status, headers and decoded body of one request.
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KUBEAPI = os.path.join(ROOT, 'apidouble', 'kubeapi.py')
MKCERTS = os.path.join(ROOT, 'apidouble', 'mkcerts.sh')
KUBECTL = shutil.which('kubectl', path='/usr/bin:/usr/local/bin') or '/usr/bin/kubectl'
sys.path.insert(0, HERE)

TOKENS = {'tok-admin': 'tester', 'tok-0': 'pg-0', 'tok-1': 'pg-1', 'tok-2': 'pg-2'}


class Double:
    """A running kubeapi.py: API ports (ports[i]), a plain admin port, tokens and a client."""

    def __init__(self, tmpdir, tls_dir=None, listens=1, tokens=TOKENS, extra=()):
        self.tmpdir, self.tls_dir = tmpdir, tls_dir
        self.port_file = os.path.join(tmpdir, 'ports')
        self.stderr_path = os.path.join(tmpdir, 'kubeapi.err')
        cmd = [sys.executable, KUBEAPI, '--port-file', self.port_file, '--bookmark-interval', '0.5']
        for _ in range(listens):
            cmd += ['--listen', '127.0.0.1:0']
        cmd += ['--listen-plain', '127.0.0.1:0']
        if tls_dir:
            cmd += ['--tls-cert', os.path.join(tls_dir, 'server.crt'),
                    '--tls-key', os.path.join(tls_dir, 'server.key')]
        for tok, user in (tokens or {}).items():
            cmd += ['--token', '%s=%s' % (tok, user)]
        cmd += list(extra)
        self.err = open(self.stderr_path, 'wb')
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()  # blocks until ready (or exit)
        if not line.startswith('kubeapi listening on'):
            self.kill()
            raise RuntimeError('double did not start: %r %s' % (line, open(self.stderr_path).read()))
        self.banner = line.strip()
        ports = [int(x) for x in open(self.port_file).read().split()]
        self.ports, self.admin_port = ports[:-1], ports[-1]
        self.scheme = 'https' if tls_dir else 'http'
        self.urls = ['%s://127.0.0.1:%d' % (self.scheme, p) for p in self.ports]
        self.url = self.urls[0]
        self.admin_url = 'http://127.0.0.1:%d' % self.admin_port
        self.ca = os.path.join(tls_dir, 'ca.crt') if tls_dir else None

    # -- client ---------------------------------------------------------------
    def connection(self, port=None, timeout=5, admin=False):
        port = self.admin_port if admin else (port or self.ports[0])
        if self.scheme == 'https' and not admin:
            ctx = ssl.create_default_context(cafile=self.ca)
            return http.client.HTTPSConnection('127.0.0.1', port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)

    def call(self, method, path, body=None, token='tok-admin', ctype='application/json', port=None,
             timeout=5, headers=None, conn=None):
        """One request; returns (status, headers, decoded JSON body or raw bytes)."""
        own = conn is None
        conn = conn or self.connection(port, timeout)
        hdrs = dict(headers or {})
        if token:
            hdrs['Authorization'] = 'Bearer ' + token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs['Content-Type'] = ctype
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
        finally:
            if own:
                conn.close()
        try:
            out = json.loads(raw)
        except ValueError:
            out = raw
        return r.status, r.headers, out

    def admin(self, method, path, body=None):
        conn = self.connection(admin=True)
        try:
            status, _, out = self.call(method, path, body, token=None, conn=conn)
        finally:
            conn.close()
        return status, out

    def watch(self, path, token='tok-admin', timeout=10, port=None):
        """Open a watch; returns (connection, response) to read events with read_event()."""
        conn = self.connection(port, timeout)
        conn.request('GET', path, headers={'Authorization': 'Bearer ' + token} if token else {})
        return conn, conn.getresponse()

    # -- lifecycle ---------------------------------------------------------------
    def log(self):
        with open(self.stderr_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.close()
        if self.proc.stdout:
            self.proc.stdout.close()


def read_event(resp):
    """Next watch event (dict), or None at the end of the stream."""
    line = resp.readline()
    if not line:
        return None
    return json.loads(line)

def write_kubeconfig(path, server, ca, token, namespace='default', context='double'):
    cfg = {'apiVersion': 'v1', 'kind': 'Config', 'current-context': context,
           'clusters': [{'name': 'double', 'cluster': {'server': server, 'certificate-authority': ca}}],
           'users': [{'name': 'u', 'user': {'token': token}}],
           'contexts': [{'name': context, 'context': {'cluster': 'double', 'user': 'u',
                                                      'namespace': namespace}}]}
    with open(path, 'w') as f:
        json.dump(cfg, f)
    return path


def wait_for(pred, timeout, interval=0.1):
    """Poll pred() until truthy or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
