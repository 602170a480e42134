"""The real Kubernetes API server as a test backend (Cluster(backend='real')).

`KubeApi` has the interface of harness.Double, so the multi-node tests run
unchanged against etcd + kube-apiserver started by
scripts/kube-control-plane.sh (built once, cached outside the repository):

- the harness itself talks to the API server as `hapg-admin` (a client
  certificate in system:masters); members use ServiceAccount tokens from the
  TokenRequest API (expirationSeconds 600, the API server's minimum), each
  bound to a Secret of its own, so `revoke_token` deletes that Secret and the
  API server refuses the token at once, as it does for a deleted Pod;
- per-member request counts (`stats`, `user_stats`, `resource_stats`,
  `forbidden`) come from the API server's audit log: the token's JTI is in
  every event (user.extra authentication.kubernetes.io/credential-id);
- faults: each member reaches the API server through a TCP proxy of its own
  (`TcpProxy`), which can refuse connections and reset the open ones
  (`close_port`) or stop forwarding (`add_fault(mode='hang')`, a black
  hole); `pause()` SIGSTOPs the API server itself.  HTTP-level faults
  (status codes, garbage, huge bodies) exist only in the double: such
  tests are marked double_only and `add_fault` raises `NotOnRealServer`.
"""

import base64
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness

SCRIPT = os.path.join(harness.REPO, 'scripts', 'kube-control-plane.sh')
TOKEN_SECONDS = 600
VERBS = ('get', 'list', 'watch', 'create', 'update', 'patch', 'delete')


class NotOnRealServer(harness.HarnessError):
    """A fault only the double can inject."""


def kube_bin():
    """The directory of the built binaries (builds them if they are missing)."""
    p = subprocess.run(['bash', SCRIPT, 'build'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=7200)
    if p.returncode != 0:
        raise harness.HarnessError('kube-control-plane.sh build failed:\n%s' % p.stderr[-4000:])
    return p.stdout.strip().splitlines()[-1]


def jwt_claims(token):
    """The payload of a JWT (not verified: the API server made it)."""
    part = token.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4)))


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> target, with three states: open,
    closed (listening socket closed, open connections reset: connection
    refused) and hung (connections stay, nothing is forwarded either way)."""

    def __init__(self, target_port, port=None):
        self.target = ('127.0.0.1', target_port)
        self.port = port or harness.free_port()
        self.lock = threading.Lock()
        self.conns = []             # (client, upstream) socket pairs
        self.hung = False
        self.lsock = None
        self.stopping = False
        self.thread = None
        self.accepted = 0
        self.hellos = []            # the first bytes clients sent (TLS ClientHellos), 20 at most

    def open(self):
        with self.lock:
            if self.lsock is not None:
                return
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', self.port))
            s.listen(64)
            self.lsock = s
        self.thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.thread.start()

    def close(self):
        """Refuse new connections, reset the open ones."""
        with self.lock:
            s, self.lsock = self.lsock, None
            conns, self.conns = self.conns, []
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for pair in conns:
            for x in pair:
                _reset(x)

    def reset_connections(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for pair in conns:
            for x in pair:
                _reset(x)

    def hang(self, on=True):
        self.hung = on

    def stop(self):
        self.stopping = True
        self.close()

    def _accept(self, s):
        while not self.stopping:
            try:
                r, _, _ = select.select([s], [], [], 0.5)
            except (OSError, ValueError):
                return
            if self.lsock is not s:
                return
            if not r:
                continue
            try:
                c, _ = s.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(c)
                continue
            self.accepted += 1
            with self.lock:
                self.conns.append((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, c, u):
        socks = [c, u]
        first = True
        try:
            while not self.stopping:
                with self.lock:
                    if (c, u) not in self.conns:
                        return
                if self.hung:
                    time.sleep(0.05)
                    continue
                r, _, _ = select.select(socks, [], [], 0.2)
                for x in r:
                    data = x.recv(65536)
                    if not data:
                        return
                    if x is c and first:
                        first = False
                        if len(self.hellos) < 20:
                            self.hellos.append(data)
                    (u if x is c else c).sendall(data)
        except OSError:
            return
        finally:
            with self.lock:
                if (c, u) in self.conns:
                    self.conns.remove((c, u))
            for x in socks:
                try:
                    x.close()
                except OSError:
                    pass


def alpn_offered(hello):
    """The ALPN protocols a TLS ClientHello offers ([] if none, None if
    `hello` is no ClientHello)."""
    try:
        if hello[0] != 0x16 or hello[5] != 0x01:
            return None
        i = 9 + 2 + 32                          # record and handshake headers, version, random
        i += 1 + hello[i]                       # session id
        i += 2 + int.from_bytes(hello[i:i + 2], 'big')      # cipher suites
        i += 1 + hello[i]                       # compression methods
        end = i + 2 + int.from_bytes(hello[i:i + 2], 'big')
        i += 2
        while i + 4 <= end:
            typ, ln = int.from_bytes(hello[i:i + 2], 'big'), int.from_bytes(hello[i + 2:i + 4], 'big')
            if typ == 16:
                out, j, stop = [], i + 6, i + 4 + ln
                while j < stop:
                    out.append(hello[j + 1:j + 1 + hello[j]].decode())
                    j += 1 + hello[j]
                return out
            i += 4 + ln
        return []
    except (IndexError, UnicodeDecodeError):
        return None


def _reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()
    except OSError:
        pass


class KubeApi(harness.Double):
    """etcd + kube-apiserver with the interface of harness.Double."""

    backend = 'real'

    def __init__(self, base_dir, namespace='default', quiet=None, **_):
        super().__init__(base_dir, tls=True)
        self.namespace = namespace
        self.state_dir = os.path.join(base_dir, 'kube')
        self.log_path = os.path.join(self.state_dir, 'apiserver.log')
        self.audit_path = os.path.join(self.state_dir, 'audit.log')
        self.proxies = {}           # user -> TcpProxy
        self.jti_user = {}          # token JTI -> user
        self.token_secret = {}      # token -> the Secret it is bound to
        self._audit_from = 0
        self._admin_ssl = None
        self._tok_seq = 0
        self._tok_lock = threading.Lock()
        self.apiserver_pid = None

    # -- lifecycle
    def start(self, timeout=180):
        kube_bin()
        os.makedirs(self.state_dir, exist_ok=True)
        p = subprocess.run(['bash', SCRIPT, 'up', self.state_dir], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout,
                           env=dict(os.environ, HAPG_KUBE_OWNER_PID=str(os.getpid())))
        if p.returncode != 0:
            raise harness.HarnessError('the control plane did not start:\n%s\n--- %s:\n%s' % (
                p.stderr[-3000:], self.log_path, harness._tail(self.log_path, 40)))
        out = dict(line.split('=', 1) for line in p.stdout.split() if '=' in line)
        self.kubeconfig_path = out['KUBECONFIG']
        self.api_port = self.admin_port = int(out['URL'].rsplit(':', 1)[1])
        pki = os.path.join(self.state_dir, 'pki')
        self.ca_file = os.path.join(pki, 'ca.crt')
        # members (the postgres user) read the CA
        for d in (self.base_dir, self.state_dir, pki):
            os.chmod(d, 0o755)
        os.chmod(self.ca_file, 0o644)
        self._ssl = ssl.create_default_context(cafile=self.ca_file)
        self._admin_ssl = ssl.create_default_context(cafile=self.ca_file)
        self._admin_ssl.load_cert_chain(os.path.join(pki, 'admin.crt'), os.path.join(pki, 'admin.key'))
        with open(os.path.join(self.state_dir, 'apiserver.pid')) as f:
            self.apiserver_pid = self.pid = int(f.read())
        harness._register(self)
        return self

    def stop(self):
        for px in self.proxies.values():
            px.stop()
        subprocess.run(['bash', SCRIPT, 'down', self.state_dir], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        harness._unregister(self)

    def healthy(self):
        try:
            return self.request('GET', '/readyz', timeout=2)[0] == 200
        except Exception:  # noqa: BLE001
            return False

    def running(self):
        return harness.pid_alive(self.apiserver_pid)

    # -- requests: the harness as hapg-admin (client certificate), others by token
    def request(self, method, path, body=None, token=harness.ADMIN_TOKEN, timeout=10,
                content_type='application/json', port=None):
        if path.startswith('/_double/'):
            raise NotOnRealServer('%s %s: the real API server has no /_double/ API' % (method, path))
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
        req = urllib.request.Request(self.url(port or self.admin_port) + path, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', content_type)
        ctx = self._admin_ssl
        if token and token != harness.ADMIN_TOKEN:
            req.add_header('Authorization', 'Bearer ' + token)
            ctx = self._ssl
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw.decode() or 'null')
        except ValueError:
            return status, raw.decode(errors='replace')

    def kubeconfig(self, path, namespace='default'):
        with open(self.kubeconfig_path) as f:
            text = f.read().replace('namespace: default', 'namespace: %s' % namespace)
        harness._write_file(path, text, mode=0o600)
        if harness._is_root():
            os.chown(path, 0, 0)
        return path

    # -- members: proxies and tokens
    def member_port(self, user):
        """A proxy of its own in front of the API server for `user`; its port."""
        if user not in self.proxies:
            px = TcpProxy(self.api_port)
            px.open()
            self.proxies[user] = px
        return self.proxies[user].port

    def issue_token(self, user, service_account='hapg', seconds=TOKEN_SECONDS):
        """A new ServiceAccount token for `user` from the TokenRequest API,
        bound to a Secret of its own (revoke_token deletes it)."""
        with self._tok_lock:
            self._tok_seq += 1
            secret = 'hapg-token-%s-%d' % (user, self._tok_seq)
        ns = self.namespace
        s = self._ok('POST', '/api/v1/namespaces/%s/secrets' % ns,
                     {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                      'metadata': {'name': secret, 'labels': {'hapg.io/test-token': user}}},
                     ok=(201,))
        tr = self._ok('POST', '/api/v1/namespaces/%s/serviceaccounts/%s/token' % (ns, service_account),
                      {'apiVersion': 'authentication.k8s.io/v1', 'kind': 'TokenRequest',
                       'spec': {'audiences': ['https://kubernetes.default.svc'],
                                'expirationSeconds': seconds,
                                'boundObjectRef': {'kind': 'Secret', 'apiVersion': 'v1', 'name': secret,
                                                   'uid': s['metadata']['uid']}}},
                      ok=(201,))
        token = tr['status']['token']
        self.jti_user[jwt_claims(token)['jti']] = user
        self.tokens[token] = user
        self.token_secret[token] = secret
        return token

    def add_token(self, token, user):
        raise NotOnRealServer('the real API server issues its own tokens: use issue_token(%r)' % user)

    def revoke_token(self, token):
        secret = self.token_secret.get(token)
        if secret is None:
            raise harness.HarnessError('revoke_token: not a token issued here')
        self._ok('DELETE', '/api/v1/namespaces/%s/secrets/%s' % (self.namespace, secret), ok=(200, 404))
        self.tokens.pop(token, None)

    def set_rbac(self, user, identity):
        """Nothing to do: a ServiceAccount token is subject to RBAC as that ServiceAccount."""
        return {}

    def clear_rbac(self, user=None):
        raise NotOnRealServer('RBAC cannot be switched off for a ServiceAccount token')

    def whoami(self, token):
        """The user name the API server authenticates `token` as (SelfSubjectReview)."""
        st, out = self.request('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews',
                               {'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'},
                               token=token)
        if st != 201:
            raise harness.HarnessError('SelfSubjectReview -> %s %r' % (st, out))
        return out['status']['userInfo']

    # -- faults: what a network (or a stopped process) can do
    def _proxies_of(self, user):
        if user in (None, '*'):
            return list(self.proxies.values())
        if user not in self.proxies:
            raise harness.HarnessError('no proxy for %r' % user)
        return [self.proxies[user]]

    def add_fault(self, user=None, mode='error', status=None, verbs=None, resources=None,
                  count=None, **extra):
        if mode != 'hang' or verbs or resources or count or extra:
            raise NotOnRealServer('fault %r (status %s, verbs %s, resources %s) exists only in the double'
                                  % (mode, status, verbs, resources))
        for px in self._proxies_of(user):
            px.hang(True)
        return {}

    def clear_faults(self, user=None):
        for px in self._proxies_of(user):
            px.hang(False)
        return {}

    def close_port(self, port=None):
        for px in self._by_port(port):
            px.close()
        return {}

    def open_port(self, port=None):
        for px in self._by_port(port):
            px.open()
        return {}

    def _by_port(self, port):
        if port in (None, self.api_port):
            return list(self.proxies.values())
        got = [px for px in self.proxies.values() if px.port == port]
        if not got:
            raise harness.HarnessError('no proxy listens on %s' % port)
        return got

    def pause(self):
        """SIGSTOP the API server (a hung control plane: connections stay open, nothing answers)."""
        os.kill(self.apiserver_pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.apiserver_pid, signal.SIGCONT)

    # -- statistics from the audit log
    def _events(self):
        try:
            with open(self.audit_path, 'rb') as f:
                f.seek(self._audit_from)
                data = f.read()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue        # a line still being written
            user = self._user_of(ev)
            if user is not None:
                yield user, ev

    def _user_of(self, ev):
        for cid in ((ev.get('user') or {}).get('extra') or {}).get(
                'authentication.kubernetes.io/credential-id', []):
            if cid.startswith('JTI='):
                return self.jti_user.get(cid[4:])
        return None

    def stats(self):
        by_user, by_res, forbidden = {}, {}, {}
        for user, ev in self._events():
            verb = ev.get('verb')
            res = (ev.get('objectRef') or {}).get('resource', '')
            if ev.get('stage') == 'RequestReceived':
                by_user.setdefault(user, {}).setdefault(verb, 0)
                by_user[user][verb] += 1
                r = by_res.setdefault(user, {}).setdefault(res, {})
                r[verb] = r.get(verb, 0) + 1
            elif ev.get('stage') == 'ResponseComplete' and \
                    (ev.get('responseStatus') or {}).get('code') == 403:
                f = forbidden.setdefault(user, {}).setdefault(res, {})
                f[verb] = f.get(verb, 0) + 1
        return {'by_user': by_user, 'by_user_resource': by_res, 'forbidden': forbidden}

    def reset_stats(self):
        try:
            self._audit_from = os.path.getsize(self.audit_path)
        except FileNotFoundError:
            self._audit_from = 0
        return {}

    def metrics(self):
        """apiserver_request_total from /metrics: {(verb, resource, code): n}."""
        st, text = self.request('GET', '/metrics', timeout=10)
        if st != 200:
            raise harness.HarnessError('GET /metrics -> %s' % st)
        out = {}
        for line in text.splitlines():
            if not line.startswith('apiserver_request_total{'):
                continue
            labels, _, value = line.rpartition(' ')
            kv = dict(x.split('=', 1) for x in labels[len('apiserver_request_total{'):-1].split(',')
                      if '=' in x)
            key = tuple(kv.get(k, '').strip('"') for k in ('verb', 'resource', 'code'))
            out[key] = out.get(key, 0) + float(value)
        return out
