"""Multi-node test harness for hapg: the Kubernetes API double plus real
PostgreSQL 15 members, used by the pytest suite, scripts/demo.sh and bench/.

Typical use::

    from harness import Cluster
    c = Cluster(n=3, profile={'ttl': 6, 'loop_wait': 1, 'retry_timeout': 2})
    c.start()
    try:
        c.wait_for(lambda: (c.lease() or {}).get('spec', {}).get('holderIdentity') == 'pg-0',
                   30, 'pg-0 holds the lease')
        print(c.sql('pg-0', 'SELECT * FROM hapg_status()'))
    finally:
        c.stop()

Everything runs on 127.0.0.1.  As root, PostgreSQL runs as OS user `postgres`
(data under a directory it owns); as another user, everything runs as that user.
Every wait is bounded in time; failures raise `WaitTimeout` with what was waited
for and the last value/exception seen.

The double listens on two ports: `api_port` (what the members use; it can be
closed by a fault) and `admin_port` (what the harness uses; never closed).

Each member has its own token (double user = member name), so the double's
stats and faults address one member.  Member files: BASE/<member>/data,
BASE/<member>/postgres.log; the double's: BASE/double/ (certs, double.log).

member_ports=True: the double also listens on one port per member
(`Member.api_port`), and each member talks to the API only through its own
port, so `double.close_port(c.m(x).api_port)` cuts off member x alone.

launcher=True: each member runs under bin/hapg-launcher (as the OS user
postgres: `runuser -u postgres -- bin/hapg-launcher --pgdata D --bindir B
--log BASE/<member>/postgres.log`; the launcher's own event lines go to the
same log).  `start_member` starts the launcher and waits until the server
answers SQL, `stop_member` SIGTERMs the launcher (fast shutdown),
`kill9_tree` SIGKILLs the launcher, the postmaster and every process of the
server at once (node loss), `kill9` SIGKILLs only the postmaster (a crash the
launcher recovers from).

Environment: HAPG_KEEP=1 keeps BASE even on success; HAPG_TMP (parent of
BASE, default /tmp); HAPG_DOUBLE_VERBOSE=1 logs every request of the double;
HAPG_PGBIN, HAPG_PYTHON, HAPG_DOUBLE, HAPG_MKCERTS, HAPG_LAUNCHER override the
tools used.
"""

import atexit
import datetime
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGBIN = os.environ.get('HAPG_PGBIN', '/usr/lib/postgresql/15/bin')
PYTHON = os.environ.get('HAPG_PYTHON', '/usr/bin/python3')
DOUBLE = os.environ.get('HAPG_DOUBLE', os.path.join(REPO, 'apidouble', 'kubeapi.py'))
MKCERTS = os.environ.get('HAPG_MKCERTS', os.path.join(REPO, 'apidouble', 'mkcerts.sh'))
LAUNCHER = os.environ.get('HAPG_LAUNCHER', os.path.join(REPO, 'bin', 'hapg-launcher'))
ADMIN_TOKEN = 'hapg-harness-admin-token'
ADMIN_USER = 'harness-admin'

FAST_PROFILE = {'ttl': 6, 'loop_wait': 1, 'retry_timeout': 2}
DEFAULT_PROFILE = {'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10}

_registry = []          # live Cluster/Double objects, torn down at exit
_registry_lock = threading.Lock()


class HarnessError(Exception):
    pass


class WaitTimeout(AssertionError):
    """Raised by wait_for; an AssertionError so pytest shows it as a failure."""


# --------------------------------------------------------------------------
# small utilities

_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now and was not handed out before
    by this process."""
    with _ports_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(('127.0.0.1', 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise HarnessError('could not find a free port')


def wait_for(predicate, timeout, what, interval=0.2):
    """Poll `predicate()` until it returns a truthy value (returned) or
    `timeout` seconds pass (raises WaitTimeout naming `what`, the last value
    and the last exception).  Exceptions from the predicate count as falsy."""
    deadline = time.monotonic() + timeout
    last, last_exc, tries = None, None, 0
    while True:
        tries += 1
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            msg = 'timed out after %.1fs (%d tries) waiting for: %s; last value: %r' % (
                timeout, tries, what, last)
            if last_exc is not None:
                msg += '; last error: %s: %s' % (type(last_exc).__name__, last_exc)
            raise WaitTimeout(msg)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def parse_k8s_time(s):
    """RFC 3339 (micro) time -> aware datetime."""
    if s is None:
        return None
    m = re.match(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$', s)
    if not m:
        raise ValueError('not an RFC 3339 time: %r' % (s,))
    base = datetime.datetime.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S')
    frac = float(m.group(2)) if m.group(2) else 0.0
    tz = m.group(3)
    if tz == 'Z':
        off = datetime.timezone.utc
    else:
        sign = 1 if tz[0] == '+' else -1
        off = datetime.timezone(sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return (base + datetime.timedelta(seconds=frac)).replace(tzinfo=off)


def k8s_time(dt=None):
    dt = dt or datetime.datetime.now(datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def seconds(v):
    """interval/float/int/str -> float seconds (None stays None)."""
    if v is None:
        return None
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, (int, float)):
        return float(v)
    try:
        import decimal
        if isinstance(v, decimal.Decimal):
            return float(v)
    except ImportError:
        pass
    return float(v)


def lsn_to_int(lsn):
    hi, lo = str(lsn).split('/')
    return (int(hi, 16) << 32) | int(lo, 16)


def _is_root():
    return os.geteuid() == 0


def _pg_user():
    return 'postgres' if _is_root() else pwd.getpwuid(os.geteuid()).pw_name


def _chown_pg(path):
    if _is_root():
        pw = pwd.getpwnam('postgres')
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _write_file(path, text, mode=0o600, atomic=True):
    """Write (atomically) a file readable by the postgres user."""
    d = os.path.dirname(path)
    if atomic:
        fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp-')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.chmod(tmp, mode)
        _chown_pg(tmp)
        os.replace(tmp, path)
    else:
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)
        _chown_pg(path)


def run_as_pg(argv, timeout=120, check=True, env=None, cwd=None):
    """Run argv as the postgres user (as root) or as ourselves; returns
    CompletedProcess with text output; raises HarnessError with output on
    failure when check."""
    full = list(argv)
    if _is_root():
        full = ['runuser', '-u', 'postgres', '--'] + full
    e = dict(os.environ)
    e.setdefault('LC_ALL', 'C.UTF-8')
    if env:
        e.update(env)
    try:
        p = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, env=e, cwd=cwd or '/')
    except subprocess.TimeoutExpired as ex:
        raise HarnessError('timed out after %ss: %s\n%s' % (timeout, ' '.join(argv), ex.output or ''))
    if check and p.returncode != 0:
        raise HarnessError('command failed (%d): %s\n%s' % (p.returncode, ' '.join(argv), p.stdout))
    return p


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open('/proc/%d/stat' % pid) as f:
            st = f.read().rsplit(')', 1)[1].split()[0]
        return st != 'Z'
    except OSError:
        return False


def descendants_of(pid):
    """Every descendant of pid (children, grandchildren, ...), parents first."""
    parent = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                parent[int(d)] = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        kids = sorted(c for c, pp in parent.items() if pp == p)
        out += kids
        todo += kids
    return out


class DetachedProcess:
    """Enough of subprocess.Popen for a launcher started by another process
    (a detached demo cluster re-attached from its state file)."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
                with open('/proc/%d/stat' % self.pid) as f:
                    if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                        self.returncode = 0
            except (OSError, IndexError):
                self.returncode = 0
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired('launcher %d' % self.pid, timeout)
            time.sleep(0.1)
        return self.returncode


def children_of(pid):
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def proc_memory(pid):
    """{'rss_kb':..., 'pss_kb':...} from /proc/PID/smaps_rollup (or status)."""
    res = {}
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                k, _, rest = line.partition(':')
                if k in ('Rss', 'Pss', 'Pss_Anon', 'Pss_Shmem', 'Private_Dirty', 'Shared_Clean'):
                    res[k.lower() + '_kb'] = int(rest.split()[0])
    except OSError:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    res['rss_kb'] = int(line.split()[1])
    return res


# --------------------------------------------------------------------------
# manifests (for Cluster(rbac=...))

# kind -> (API prefix, resource, namespaced)
RBAC_KINDS = {'ServiceAccount': ('/api/v1', 'serviceaccounts', True)}
RBAC_KINDS.update((kind, ('/apis/rbac.authorization.k8s.io/v1', kind.lower() + 's',
                          not kind.startswith('Cluster')))
                  for kind in ('Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding'))


def object_path(obj):
    """The API path of one of the RBAC_KINDS objects."""
    prefix, plural, namespaced = RBAC_KINDS[obj['kind']]
    md = obj['metadata']
    if namespaced:
        return '%s/namespaces/%s/%s/%s' % (prefix, md.get('namespace') or 'default', plural, md['name'])
    return '%s/%s/%s' % (prefix, plural, md['name'])


def load_manifests(source, double=None):
    """Objects from a list/dict, or a YAML or JSON file (multi-document, List
    kinds flattened).  YAML needs python3-yaml, or else kubectl (converting
    against `double`)."""
    if isinstance(source, dict):
        docs = [source]
    elif isinstance(source, (list, tuple)):
        docs = list(source)
    else:
        with open(source) as f:
            text = f.read()
        if text.lstrip()[:1] in ('{', '['):
            docs = json.loads(text)
            docs = docs if isinstance(docs, list) else [docs]
        else:
            try:
                import yaml
                docs = list(yaml.safe_load_all(text))
            except ImportError:
                docs = [_kubectl_to_json(source, double)]
    out = []
    for d in docs:
        if isinstance(d, dict) and d.get('kind', '').endswith('List') and 'items' in d:
            out += load_manifests(d['items'])
        elif isinstance(d, dict) and d.get('kind'):
            out.append(d)
    return out


def _kubectl_to_json(path, double):
    # YAML -> JSON without python3-yaml: kubectl (it asks the double for the kinds)
    if double is None:
        raise HarnessError('reading %s needs python3-yaml or a running double' % path)
    cfg = double.kubeconfig(os.path.join(double.base_dir, 'kubeconfig-convert'))
    p = subprocess.run(['kubectl', '--kubeconfig', cfg, 'create', '--dry-run=client', '--validate=false',
                        '-o', 'json', '-f', path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    if p.returncode != 0:
        raise HarnessError('kubectl could not read %s: %s' % (path, p.stderr))
    return json.loads(p.stdout)


# --------------------------------------------------------------------------
# the Kubernetes API double

class Double:
    """The Kubernetes API double (apidouble/kubeapi.py), HTTPS by default with
    a CA made by apidouble/mkcerts.sh, one bearer token per user."""

    backend = 'double'

    def __init__(self, base_dir, tls=True, tokens=None, quiet=None, detach=False,
                 extra_ports=0):
        self.base_dir = base_dir
        self.extra_ports_wanted = extra_ports
        self.extra_ports = []           # more API ports (Cluster(member_ports=True))
        self.tls = tls
        self.tokens = dict(tokens or {})          # token -> user
        self.tokens[ADMIN_TOKEN] = ADMIN_USER
        self.quiet = (not os.environ.get('HAPG_DOUBLE_VERBOSE')) if quiet is None else quiet
        self.detach = detach
        self.proc = None
        self.pid = None
        self.api_port = None
        self.admin_port = None
        self.log_path = os.path.join(base_dir, 'double.log')
        self.cert_dir = os.path.join(base_dir, 'certs')
        self.ca_file = os.path.join(self.cert_dir, 'ca.crt') if tls else ''
        self._ssl = None

    # -- lifecycle
    def _make_certs(self):
        if not os.path.exists(MKCERTS):
            raise HarnessError('%s is missing (helper-1 provides it)' % MKCERTS)
        os.makedirs(self.cert_dir, exist_ok=True)
        p = subprocess.run(['bash', MKCERTS, self.cert_dir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        if p.returncode != 0 or not os.path.exists(self.ca_file):
            raise HarnessError('mkcerts.sh failed (%d):\n%s' % (p.returncode, p.stdout))
        self.cert_file = self.key_file = None
        for fn in sorted(os.listdir(self.cert_dir)):
            full = os.path.join(self.cert_dir, fn)
            if fn == 'ca.crt':
                continue
            if fn.endswith('.crt') and self.cert_file is None:
                self.cert_file = full
            elif fn.endswith('.key') and not fn.startswith('ca') and self.key_file is None:
                self.key_file = full
        for cand in ('server.crt', 'tls.crt'):
            if os.path.exists(os.path.join(self.cert_dir, cand)):
                self.cert_file = os.path.join(self.cert_dir, cand)
        for cand in ('server.key', 'tls.key'):
            if os.path.exists(os.path.join(self.cert_dir, cand)):
                self.key_file = os.path.join(self.cert_dir, cand)
        if not self.cert_file or not self.key_file:
            raise HarnessError('mkcerts.sh made no server cert/key in %s: %s' % (
                self.cert_dir, os.listdir(self.cert_dir)))
        # the CA must be readable by the postgres user
        os.chmod(self.cert_dir, 0o755)
        os.chmod(self.ca_file, 0o644)
        self._ssl = ssl.create_default_context(cafile=self.ca_file)

    def start(self, timeout=20):
        if not os.path.exists(DOUBLE):
            raise HarnessError('%s is missing (helper-1 provides it)' % DOUBLE)
        if self.tls:
            self._make_certs()
        last_err = None
        for attempt in range(3):
            self.api_port, self.admin_port = free_port(), free_port()
            self.extra_ports = [free_port() for _ in range(self.extra_ports_wanted)]
            argv = [PYTHON, DOUBLE, '--listen', '127.0.0.1:%d' % self.api_port,
                    '--listen', '127.0.0.1:%d' % self.admin_port]
            for port in self.extra_ports:
                argv += ['--listen', '127.0.0.1:%d' % port]
            if self.tls:
                argv += ['--tls-cert', self.cert_file, '--tls-key', self.key_file]
            for tok, user in sorted(self.tokens.items()):
                argv += ['--token', '%s=%s' % (tok, user)]
            if self.quiet:
                argv += ['--quiet']
            logf = open(self.log_path, 'ab')
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.base_dir)
            logf.close()
            self.pid = self.proc.pid
            if not self.detach:
                _register(self)
            try:
                wait_for(lambda: self.proc.poll() is not None or self.healthy(),
                         timeout, 'the API double to answer /_double/healthz')
                if self.proc.poll() is None:
                    return self
                last_err = 'exited with %s' % self.proc.returncode
            except WaitTimeout as e:
                last_err = str(e)
                self.stop()
        raise HarnessError('the API double did not start: %s\n--- %s:\n%s' % (
            last_err, self.log_path, _tail(self.log_path, 40)))

    def healthy(self):
        try:
            st, _ = self.request('GET', '/_double/healthz', timeout=2, port=self.admin_port)
            return st == 200
        except Exception:  # noqa: BLE001
            return False

    def running(self):
        return pid_alive(self.pid)

    def stop(self):
        pid = self.pid
        if pid and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pid_alive(pid):
                if self.proc is not None:
                    self.proc.poll()
                time.sleep(0.05)
            if pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        _unregister(self)

    # -- URLs
    def url(self, port=None):
        return '%s://127.0.0.1:%d' % ('https' if self.tls else 'http', port or self.api_port)

    # -- raw requests
    def request(self, method, path, body=None, token=ADMIN_TOKEN, timeout=10,
                content_type='application/json', port=None):
        """(status, parsed JSON or text) from the double, on the admin port."""
        url = self.url(port or self.admin_port) + path
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', content_type)
        if token:
            req.add_header('Authorization', 'Bearer ' + token)
        kw = {'timeout': timeout}
        if self.tls:
            kw['context'] = self._ssl or ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, **kw) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw.decode() or 'null')
        except ValueError:
            return status, raw.decode(errors='replace')

    def _ok(self, method, path, body=None, ok=(200, 201, 204), **kw):
        st, out = self.request(method, path, body, **kw)
        if st not in ok:
            raise HarnessError('%s %s -> %s %r' % (method, path, st, out))
        return out

    # -- admin API (/_double/)
    def add_fault(self, user=None, mode='error', status=None, verbs=None,
                  resources=None, count=None, **extra):
        body = {'mode': mode}
        if user is not None:
            body['user'] = user
        if status is not None:
            body['status'] = status
        if verbs is not None:
            body['verbs'] = list(verbs)
        if resources is not None:
            body['resources'] = list(resources)
        if count is not None:
            body['count'] = count
        body.update(extra)
        return self._ok('POST', '/_double/faults', body, token=None)

    def clear_faults(self, user=None):
        q = '?user=' + urllib.parse.quote(user) if user else ''
        return self._ok('DELETE', '/_double/faults' + q, token=None)

    def close_port(self, port=None):
        return self._ok('POST', '/_double/ports/%d/close' % (port or self.api_port), token=None)

    def open_port(self, port=None):
        return self._ok('POST', '/_double/ports/%d/open' % (port or self.api_port), token=None)

    def add_token(self, token, user):
        self.tokens[token] = user
        return self._ok('POST', '/_double/tokens', {'token': token, 'user': user}, token=None)

    def revoke_token(self, token):
        self.tokens.pop(token, None)
        return self._ok('DELETE', '/_double/tokens?token=' + urllib.parse.quote(token), token=None)

    def stats(self):
        return self._ok('GET', '/_double/stats', token=None)

    def reset_stats(self):
        return self._ok('POST', '/_double/stats/reset', token=None)

    def user_stats(self, user):
        """{verb: count} for one user (missing verbs are 0)."""
        s = (self.stats().get('by_user') or {}).get(user) or {}
        return {v: int(s.get(v, 0)) for v in
                ('get', 'list', 'watch', 'create', 'update', 'patch', 'delete')}

    def resource_stats(self, user, resource):
        """{verb: count} of one user on one resource ('leases', 'pods')."""
        s = ((self.stats().get('by_user_resource') or {}).get(user) or {}).get(resource) or {}
        return {v: int(s.get(v, 0)) for v in
                ('get', 'list', 'watch', 'create', 'update', 'patch', 'delete')}

    def pause(self):
        """SIGSTOP the double: connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def issue_token(self, user, **_):
        """A new token for `user` (on the real server: from the TokenRequest API)."""
        token = 'tok-%s-%s' % (user, os.urandom(4).hex())
        self.add_token(token, user)
        return token

    def set_rbac(self, user, identity):
        """Make `user` subject to RBAC, authorized as `identity`."""
        return self._ok('POST', '/_double/rbac', {'user': user, 'as': identity}, token=None)

    def clear_rbac(self, user=None):
        q = '?user=' + urllib.parse.quote(user) if user else ''
        return self._ok('DELETE', '/_double/rbac' + q, token=None)

    def forbidden(self, user=None):
        """Requests RBAC refused: {user: {resource: {verb: n}}} (or one user's part)."""
        f = self.stats().get('forbidden') or {}
        return f if user is None else f.get(user, {})

    # -- Kubernetes objects (as the harness admin user)
    def put_object(self, obj):
        """Create `obj`, or replace it if it exists; returns it as stored."""
        path = object_path(obj)
        st, cur = self.request('GET', path)
        if st == 404:
            return self._ok('POST', path.rsplit('/', 1)[0], obj, ok=(201,))
        if st != 200:
            raise HarnessError('GET %s -> %s %r' % (path, st, cur))
        obj = dict(obj, metadata=dict(obj['metadata'], resourceVersion=cur['metadata']['resourceVersion']))
        return self._ok('PUT', path, obj, ok=(200,))

    def get_obj(self, path):
        st, out = self.request('GET', path)
        if st == 404:
            return None
        if st != 200:
            raise HarnessError('GET %s -> %s %r' % (path, st, out))
        return out

    def kubeconfig(self, path, namespace='default'):
        """Write a kubeconfig for kubectl talking to the member-facing port."""
        cfg = {
            'apiVersion': 'v1', 'kind': 'Config',
            'clusters': [{'name': 'double', 'cluster': dict(
                {'server': self.url(self.admin_port)},
                **({'certificate-authority': self.ca_file} if self.tls else {}))}],
            'users': [{'name': 'admin', 'user': {'token': ADMIN_TOKEN}}],
            'contexts': [{'name': 'double', 'context': {
                'cluster': 'double', 'user': 'admin', 'namespace': namespace}}],
            'current-context': 'double',
        }
        _write_file(path, json.dumps(cfg, indent=1) + '\n', mode=0o600)
        if _is_root():
            os.chown(path, 0, 0)
        return path


# --------------------------------------------------------------------------
# the PostgreSQL members

class Member:
    def __init__(self, cluster, name, index):
        self.cluster = cluster
        self.name = name
        self.index = index
        self.dir = os.path.join(cluster.base_dir, name)
        self.datadir = os.path.join(self.dir, 'data')
        self.logfile = os.path.join(self.dir, 'postgres.log')
        self.token_file = os.path.join(cluster.base_dir, 'tokens', 'token-' + name)
        self.token = 'tok-%s-%s' % (name, os.urandom(4).hex())
        self.port = free_port()
        self.http_port = free_port()    # hapg's HTTP endpoint (tests/test_http.py)
        self.api_port = None        # own API port (member_ports=True)
        self.launcher = None        # Popen of `runuser ... hapg-launcher` (launcher=True)
        self.overrides = {}

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self):
        return self.postmaster_pid() is not None

    def launcher_alive(self):
        return self.launcher is not None and self.launcher.poll() is None

    def __repr__(self):
        return '<Member %s port=%d>' % (self.name, self.port)


class Cluster:
    """n PostgreSQL 15 members with hapg on one API double.

    standbys=True: pg-0 is initdb'd, the others are pg_basebackup'd standbys
    streaming from it (application_name = member name).  standbys=False: every
    member is its own initdb'd primary (for leader-race tests).
    launcher=True: members run under bin/hapg-launcher (see the module
    docstring); member_ports=True: one API port per member.
    rbac=PATH (default None: off): install the ServiceAccount, Role(s) and
    RoleBinding(s) of a YAML/JSON manifest (e.g. kubernetes/rbac.yaml) in
    the cluster's namespace and make every member's token subject to RBAC
    as that ServiceAccount (`rbac_identity`), each member keeping its own
    user name in the double for faults and stats (see install_rbac).
    """

    def __init__(self, n=3, name='c1', profile=None, base_dir=None, tls=True,
                 names=None, standbys=True, create_pods=True, extra_conf=None,
                 member_conf=None, namespace='default', double=None, detach=False,
                 keep=None, role_label='role', launcher=False, member_ports=False, rbac=None,
                 backend=None):
        self.name = name
        self.backend = backend or os.environ.get('HAPG_BACKEND', 'double')
        if self.backend not in ('double', 'real'):
            raise HarnessError('backend %r: double or real' % self.backend)
        self._rbac_renamed = False
        if self.backend == 'real' and rbac is None:
            # on the real server a member is always a ServiceAccount: that of
            # the repository's kubernetes/rbac.yaml, its Role's resourceNames
            # (the Lease "pg", the ConfigMap "pg-bootstrap") renamed after
            # this cluster
            rbac = os.path.join(REPO, 'kubernetes', 'rbac.yaml')
            self._rbac_renamed = True
        self.rbac = rbac
        self.rbac_sa = None             # the ServiceAccount the members are (rbac=)
        self._token_lock = threading.Lock()
        self.tokens_held = set()        # members whose token a test manages (no refresh)
        self._refresher = None
        self.rbac_identity = None       # system:serviceaccount:<ns>:<name> with rbac=
        self.rbac_objects = []          # the RBAC objects installed with rbac=, as stored
        self.launcher = launcher
        self.member_ports = member_ports
        if member_ports and double is not None:
            raise HarnessError('member_ports needs a double of its own')
        self.names = list(names) if names else ['pg-%d' % i for i in range(n)]
        self.profile = dict(FAST_PROFILE if profile is None else profile)
        self.tls = tls
        self.standbys = standbys
        self.create_pods = create_pods
        self.extra_conf = dict(extra_conf or {})
        self.member_conf = {k: dict(v) for k, v in (member_conf or {}).items()}
        self.namespace = namespace
        self.role_label_name = role_label
        self.detach = detach
        self.keep = keep if keep is not None else bool(os.environ.get('HAPG_KEEP'))
        self.failed = False
        self._own_dir = base_dir is None
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix='hapg-', dir=os.environ.get('HAPG_TMP', '/tmp'))
        os.makedirs(base_dir, exist_ok=True)
        self.base_dir = os.path.abspath(base_dir)
        os.chmod(self.base_dir, 0o755)
        self._own_double = double is None
        self.double = double
        self.members = {nm: Member(self, nm, i) for i, nm in enumerate(self.names)}
        self.started = False
        self.stopped = False

    # -- identity helpers
    def m(self, member):
        if isinstance(member, Member):
            return member
        if isinstance(member, int):
            return self.members[self.names[member]]
        return self.members[member]

    def __repr__(self):
        return '<Cluster %s %s at %s>' % (self.name, self.names, self.base_dir)

    # -- set-up
    def start(self, timeout=120):
        """Start the double (unless given one), create the Pods, make and start
        the members.  Tears everything down again if anything fails."""
        if not self.detach:
            _register(self)
        try:
            self._start(timeout)
        except BaseException:
            self.failed = True
            print('hapg harness: cluster start failed; files kept in %s' % self.base_dir,
                  file=sys.stderr)
            self.keep = True
            self.stop()
            raise
        self.started = True
        return self

    def _start(self, timeout):
        so = os.path.join(PGBIN.replace('/bin', '/lib'), 'hapg.so')
        if not os.path.exists(so):
            raise HarnessError('%s is not installed: run `make && make install` first' % so)
        tokdir = os.path.join(self.base_dir, 'tokens')
        os.makedirs(tokdir, exist_ok=True)
        os.chmod(tokdir, 0o755)
        if self.double is None and self.backend == 'real':
            import realkube
            self.double = realkube.KubeApi(os.path.join(self.base_dir, 'double'),
                                           namespace=self.namespace)
            os.makedirs(self.double.base_dir, exist_ok=True)
            self.double.start()
        elif self.double is None:
            self.double = Double(os.path.join(self.base_dir, 'double'), tls=self.tls,
                                 tokens={m.token: m.name for m in self.members.values()},
                                 detach=self.detach,
                                 extra_ports=len(self.members) if self.member_ports else 0)
            os.makedirs(self.double.base_dir, exist_ok=True)
            os.chmod(self.double.base_dir, 0o755)
            self.double.start()
            if self.member_ports:
                for m, port in zip(self.members.values(), self.double.extra_ports):
                    m.api_port = port
        else:
            for m in self.members.values():
                self.double.add_token(m.token, m.name)
        if self.rbac is not None:
            self.install_rbac(self.rbac)
        if self.backend == 'real':
            # each member: a token of the ServiceAccount from the TokenRequest
            # API, and a proxy of its own in front of the API server (faults)
            for m in self.members.values():
                m.token = self.double.issue_token(m.name, service_account=self.rbac_sa)
                m.api_port = self.double.member_port(m.name)
            self._refresher = TokenRefresher(self)
        for m in self.members.values():
            self.write_token(m, m.token)
            if self.create_pods:
                self.create_pod(m)
        first = self.m(0)
        for m in self.members.values():
            os.makedirs(m.dir, exist_ok=True)
            _chown_pg(m.dir)
            os.chmod(m.dir, 0o755)
        if self.standbys:
            self._initdb(first)
            self.start_member(first, timeout=timeout)
            self.sql(first, 'CREATE EXTENSION IF NOT EXISTS hapg')
            for m in list(self.members.values())[1:]:
                self._basebackup(m, first, timeout)
                self.start_member(m, timeout=timeout)
            for m in list(self.members.values())[1:]:
                self.wait_streaming(first, m.name, timeout)
        else:
            for m in self.members.values():
                self._initdb(m)
                self.start_member(m, timeout=timeout)
                self.sql(m, 'CREATE EXTENSION IF NOT EXISTS hapg')

    def install_rbac(self, source):
        """Install the ServiceAccount, Roles and RoleBindings of `source` (a
        YAML/JSON file such as kubernetes/rbac.yaml, or a list of objects)
        in the cluster's namespace and make every member's token subject to
        RBAC as that ServiceAccount (the double's /_double/rbac), while the
        double still knows each member by its own name (faults, stats).
        Other kinds in the file are ignored.  Returns the identity."""
        objs = load_manifests(source, self.double)
        rbac = [o for o in objs if o.get('kind') in RBAC_KINDS]
        sas = [o['metadata']['name'] for o in rbac if o['kind'] == 'ServiceAccount']
        sa = next((((o.get('spec') or {}).get('template') or {}).get('spec', {}).get('serviceAccountName')
                   for o in objs if o.get('kind') == 'StatefulSet'), None) or (sas[0] if sas else None)
        if sa is None:
            raise HarnessError('rbac=%r has no ServiceAccount' % (source,))
        self.rbac_objects = []
        for o in rbac:
            o = json.loads(json.dumps(o))
            md = o.setdefault('metadata', {})
            for f in ('resourceVersion', 'uid', 'creationTimestamp', 'managedFields'):
                md.pop(f, None)
            if RBAC_KINDS[o['kind']][2]:
                md['namespace'] = self.namespace
            else:
                md.pop('namespace', None)
            for sub in o.get('subjects') or []:
                if sub.get('kind') == 'ServiceAccount':
                    sub['namespace'] = self.namespace
            if self._rbac_renamed:
                for rule in o.get('rules') or []:
                    if rule.get('resourceNames'):
                        rule['resourceNames'] = [self.name + n[2:] if n.startswith('pg') else n
                                                 for n in rule['resourceNames']]
            self.rbac_objects.append(self.double.put_object(o))
        self.rbac_sa = sa
        self.rbac_identity = 'system:serviceaccount:%s:%s' % (self.namespace, sa)
        for m in self.members.values():
            self.double.set_rbac(m.name, self.rbac_identity)
        return self.rbac_identity

    def rbac_object(self, kind, name=None):
        """One of the objects installed with rbac= as it is now (None if gone)."""
        for o in self.rbac_objects:
            if o['kind'] == kind and (name is None or o['metadata']['name'] == name):
                return self.double.get_obj(object_path(o))
        return None

    def write_token(self, member, token):
        """(Re)write a member's token file atomically ('' = no token)."""
        m = self.m(member)
        with self._token_lock:
            _write_file(m.token_file, token + ('\n' if token else ''), mode=0o600)

    def pod_body(self, m):
        return {
            'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': m.name, 'namespace': self.namespace,
                         'labels': {'hapg.io/cluster': self.name}},
            'spec': {'containers': [{'name': 'postgres', 'image': 'postgres:15'}]},
            'status': {'phase': 'Running', 'podIP': '127.0.0.1'},
        }

    def create_pod(self, member):
        """Create the member's Pod, then write the status a kubelet would
        report (Running, Ready, podIP) through the /status subresource: a new
        Pod is Pending on the real server and on the double alike."""
        m = self.m(member)
        body = self.pod_body(m)
        body.pop('status')
        if self.rbac_sa:
            body['spec'].update({'serviceAccountName': self.rbac_sa, 'automountServiceAccountToken': False,
                                 'enableServiceLinks': False})
        self.double._ok('POST', '/api/v1/namespaces/%s/pods' % self.namespace, body, ok=(201,))
        now = k8s_time(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))[:19] + 'Z'
        cond = [{'type': t, 'status': 'True', 'lastTransitionTime': now}
                for t in ('PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady',
                          'PodScheduled')]
        status = {'status': {
            'phase': 'Running', 'podIP': '127.0.0.1', 'podIPs': [{'ip': '127.0.0.1'}],
            'hostIP': '127.0.0.1', 'hostIPs': [{'ip': '127.0.0.1'}], 'startTime': now,
            'conditions': cond,
            'containerStatuses': [{'name': 'postgres', 'image': 'postgres:15', 'imageID': '',
                                   'ready': True, 'started': True, 'restartCount': 0,
                                   'state': {'running': {'startedAt': now}}}]}}
        return self.double._ok('PATCH', '/api/v1/namespaces/%s/pods/%s/status' % (self.namespace, m.name),
                               status, ok=(200,), content_type='application/merge-patch+json')

    def delete_pod(self, member):
        m = self.m(member)
        return self.double._ok('DELETE', '/api/v1/namespaces/%s/pods/%s' % (self.namespace, m.name),
                               ok=(200, 202, 404))

    def conf(self, m):
        """The settings of one member (dict)."""
        p = self.profile
        conf = {
            'listen_addresses': '127.0.0.1',
            'port': m.port,
            'unix_socket_directories': m.dir,
            'shared_preload_libraries': 'hapg',
            'wal_level': 'replica',
            'hot_standby': 'on',
            'wal_log_hints': 'on',
            'max_wal_senders': 10,
            'max_replication_slots': 10,
            'wal_keep_size': '128MB',
            'shared_buffers': '16MB',
            'max_connections': 30,
            'fsync': 'off',
            'synchronous_commit': 'on',
            'log_line_prefix': '%m [%p] %b ',
            'log_min_messages': 'info',
            'log_checkpoints': 'off',
            'hapg.cluster_name': self.name,
            'hapg.member_name': m.name,
            'hapg.namespace': self.namespace,
            'hapg.kubernetes_url': (self.double.url(m.api_port or self.double.api_port)
                                    if self.double else ''),
            'hapg.token_file': m.token_file,
            'hapg.ca_file': self.double.ca_file if (self.double and self.tls) else '',
            'hapg.ttl': p['ttl'],
            'hapg.loop_wait': p['loop_wait'],
            'hapg.retry_timeout': p['retry_timeout'],
            'hapg.connect_address': '127.0.0.1:%d' % m.port,
            'hapg.role_label': self.role_label_name,
            'hapg.replication_conninfo': 'user=postgres',
            'wal_retrieve_retry_interval': '500ms',
            'hapg.http_port': m.http_port,
            'hapg.http_listen_addresses': '127.0.0.1',
        }
        conf.update(self.extra_conf)
        conf.update(self.member_conf.get(m.name, {}))
        return conf

    @staticmethod
    def _conf_line(k, v):
        if v is None:
            return ''
        return "%s = '%s'\n" % (k, str(v).replace("'", "''"))

    def write_conf(self, member):
        m = self.m(member)
        text = '# written by tests/harness.py for member %s\n' % m.name
        for k, v in self.conf(m).items():
            text += self._conf_line(k, v)
        text += "include_if_exists = 'harness_overrides.conf'\n"
        _write_file(os.path.join(m.datadir, 'postgresql.conf'), text, mode=0o600)
        self._write_overrides(m)

    def _write_overrides(self, m):
        text = '# runtime overrides written by tests/harness.py reload()\n'
        for k, v in m.overrides.items():
            text += self._conf_line(k, v)
        _write_file(os.path.join(m.datadir, 'harness_overrides.conf'), text, mode=0o600)

    def _initdb(self, m):
        if os.path.exists(m.datadir):
            shutil.rmtree(m.datadir)
        run_as_pg([os.path.join(PGBIN, 'initdb'), '-D', m.datadir, '--data-checksums',
                   '--auth=trust', '--username=postgres', '-E', 'UTF8', '--locale=C',
                   '--no-sync'], timeout=180)
        self.write_conf(m)

    def _basebackup(self, m, source, timeout):
        if os.path.exists(m.datadir):
            shutil.rmtree(m.datadir)
        # the copy itself runs under the default application_name
        # (pg_basebackup), so the leader never mistakes it for the member
        src = self.m(source)
        run_as_pg([os.path.join(PGBIN, 'pg_basebackup'), '-D', m.datadir,
                   '-d', 'host=127.0.0.1 port=%d user=postgres connect_timeout=5' % src.port,
                   '-X', 'stream',
                   '-c', 'fast', '--no-sync'], timeout=timeout)
        self.write_conf(m)
        self.set_standby(m, source)

    def primary_conninfo(self, m, source):
        s = self.m(source)
        return 'host=127.0.0.1 port=%d user=postgres application_name=%s connect_timeout=5' % (
            s.port, m.name)

    def set_standby(self, member, source):
        """Make `member` (stopped) a standby of `source`: standby.signal and
        primary_conninfo with application_name = member name."""
        m = self.m(member)
        _write_file(os.path.join(m.datadir, 'standby.signal'), '', mode=0o600)
        auto = ('# written by tests/harness.py\n'
                + self._conf_line('primary_conninfo', self.primary_conninfo(m, source)))
        _write_file(os.path.join(m.datadir, 'postgresql.auto.conf'), auto, mode=0o600)

    # -- member lifecycle
    def start_member(self, member, timeout=60, wait=True):
        """Start a member (pg_ctl start, or its launcher in launcher mode) and,
        with wait, wait until it accepts connections."""
        m = self.m(member)
        if self.launcher:
            self._start_launcher(m, timeout, wait)
            return m
        args = [os.path.join(PGBIN, 'pg_ctl'), '-D', m.datadir, '-l', m.logfile,
                '-t', str(int(timeout))]
        args += ['-w'] if wait else ['-W']
        run_as_pg(args + ['start'], timeout=timeout + 30)
        return m

    def start_members(self, members=None, timeout=60):
        """Start several members concurrently (for races)."""
        ms = [self.m(x) for x in (members or self.names)]
        errs = []

        def go(mm):
            try:
                self.start_member(mm, timeout=timeout)
            except Exception as e:  # noqa: BLE001
                errs.append(e)
        barrier_threads = [threading.Thread(target=go, args=(mm,)) for mm in ms]
        for t in barrier_threads:
            t.start()
        for t in barrier_threads:
            t.join(timeout + 60)
        if errs:
            raise errs[0]

    def _launcher_argv(self, m):
        argv = [LAUNCHER, '--pgdata', m.datadir, '--bindir', PGBIN, '--log', m.logfile]
        if _is_root():
            argv = ['runuser', '-u', 'postgres', '--'] + argv
        return argv

    def _start_launcher(self, m, timeout, wait):
        if not m.launcher_alive():
            if not os.path.exists(LAUNCHER):
                raise HarnessError('%s is missing' % LAUNCHER)
            if not os.path.exists(m.logfile):
                _write_file(m.logfile, '', mode=0o600, atomic=False)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith('PG') and k not in ('LANG', 'LANGUAGE')}
            env['LC_ALL'] = 'C.UTF-8'
            with open(m.logfile, 'ab') as logf:
                m.launcher = subprocess.Popen(self._launcher_argv(m), stdin=subprocess.DEVNULL,
                                              stdout=logf, stderr=logf, env=env, cwd=m.dir,
                                              start_new_session=True)
        if not wait:
            return

        def ready():
            if not m.launcher_alive():
                raise HarnessError('the launcher of %s exited with %s:\n%s' % (
                    m.name, m.launcher.returncode, _tail(m.logfile, 40)))
            try:
                return self.scalar(m, 'SELECT 1', timeout=2) == 1
            except HarnessError:
                raise
            except Exception:  # noqa: BLE001 - not up yet
                return False
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if time.monotonic() >= deadline:
                raise WaitTimeout('%s (launcher mode) did not accept connections within %ss:\n%s'
                                  % (m.name, timeout, _tail(m.logfile, 40)))
            time.sleep(0.2)

    def launcher_pid(self, member):
        """PID of the member's hapg-launcher process itself (the child of
        runuser when run as root), or None."""
        m = self.m(member)
        if not m.launcher_alive():
            return None
        if not _is_root():
            return m.launcher.pid
        for pid in children_of(m.launcher.pid):
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    if b'hapg-launcher' in f.read():
                        return pid
            except OSError:
                continue
        return None

    def _stop_launcher(self, m, timeout):
        lpid = self.launcher_pid(m)
        if lpid is None:
            # runuser has not started it yet (or it is going away): wait a moment
            wait_for(lambda: not m.launcher_alive() or self.launcher_pid(m), 5,
                     'the launcher of %s to appear' % m.name)
            lpid = self.launcher_pid(m)
        if lpid is not None:
            try:
                os.kill(lpid, signal.SIGTERM)      # runuser would SIGKILL it after 2 s
            except ProcessLookupError:
                pass
        try:
            m.launcher.wait(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            print('hapg harness: the launcher of %s did not stop in %ss: killing everything'
                  % (m.name, timeout + 15), file=sys.stderr)
            self.kill9_tree(m)

    def stop_member(self, member, mode='fast', timeout=30):
        """Stop a member: pg_ctl stop, or SIGTERM to its launcher (a fast
        shutdown) in launcher mode."""
        m = self.m(member)
        if m.launcher_alive():
            self._stop_launcher(m, timeout)
            return
        pid = m.postmaster_pid()
        if pid is None:
            return
        try:
            run_as_pg([os.path.join(PGBIN, 'pg_ctl'), '-D', m.datadir, '-m', mode,
                       '-t', str(int(timeout)), '-w', 'stop'], timeout=timeout + 15)
        except HarnessError as e:
            print('hapg harness: pg_ctl stop of %s failed, killing: %s' % (m.name, e),
                  file=sys.stderr)
            self.kill9(m)

    def restart_member(self, member, timeout=60):
        self.stop_member(member)
        self.start_member(member, timeout=timeout)

    def kill9(self, member, timeout=30):
        """SIGKILL the member's postmaster and wait until all its children are
        gone too (so it can be started again).  In launcher mode the launcher
        survives and starts the server again by itself."""
        m = self.m(member)
        pid = m.postmaster_pid()
        if pid is None:
            return None
        kids = children_of(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        alive = [p for p in [pid] + kids if pid_alive(p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if pid_alive(p)]
        for p in alive:        # children that ignore postmaster death
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The dead postmaster may stay a zombie for a while (it is reaped by
        # whoever adopted it), and PostgreSQL takes a zombie's pid in
        # postmaster.pid for a running server.  Once every process is gone,
        # the lock files are stale: remove them so the member can start again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(p) for p in [pid] + kids):
            time.sleep(0.05)
        # (a running launcher reaps the old postmaster itself and may already
        # have started a new one: leave its lock files alone)
        if not m.launcher_alive() and not any(pid_alive(p) for p in [pid] + kids):
            self._remove_lock_files(m)
        return pid

    @staticmethod
    def _remove_lock_files(m):
        for f in (os.path.join(m.datadir, 'postmaster.pid'),
                  os.path.join(m.dir, '.s.PGSQL.%d.lock' % m.port)):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

    def server_pids(self, member):
        """Every process of the member's server: those whose working
        directory is its data directory (PostgreSQL's processes all chdir
        there), also after the directory was deleted."""
        m = self.m(member)
        want = os.path.realpath(m.datadir)
        out = []
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                cwd = os.readlink('/proc/%s/cwd' % d)
            except OSError:
                continue
            if cwd.endswith(' (deleted)'):
                cwd = cwd[:-len(' (deleted)')]
            if cwd == want and pid_alive(int(d)):
                out.append(int(d))
        return out

    def kill9_tree(self, member, timeout=30):
        """Node loss: SIGKILL the member's launcher (and runuser), its
        postmaster and every other process of its server (and a running
        pg_rewind / pg_basebackup) at once, wait until all are gone, and
        remove the stale lock files.  Returns the monotonic time of the kill
        (before the first signal)."""
        m = self.m(member)
        top = []
        if m.launcher_alive():
            top.append(m.launcher.pid)
            top += descendants_of(m.launcher.pid)
        pm = m.postmaster_pid()
        order = [p for p in top if p != pm]
        order += [p for p in ([pm] if pm else []) if p not in order]
        order += [p for p in self.server_pids(m) if p not in order]
        t_kill = time.monotonic()
        for p in order:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in order if pid_alive(p)]
            alive += [p for p in self.server_pids(m) if p not in alive]
            if not alive:
                break
            if time.monotonic() >= deadline:
                raise HarnessError('kill9_tree(%s): processes still alive after %ss: %r'
                                   % (m.name, timeout, alive))
            for p in alive:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        if m.launcher is not None:
            try:
                m.launcher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._remove_lock_files(m)
        return t_kill

    def reclone(self, member, source, timeout=120):
        """Replace a (stopped) member's data directory by a fresh base backup
        of `source` and make it a standby of it (not started)."""
        m = self.m(member)
        if m.launcher_alive() or m.running():
            raise HarnessError('reclone(%s): stop it first' % m.name)
        deadline = time.monotonic() + 30
        while os.path.exists(m.datadir):
            shutil.rmtree(m.datadir, ignore_errors=True)
            if time.monotonic() > deadline:
                raise HarnessError('could not remove %s' % m.datadir)
        self._basebackup(m, source, timeout)

    def promote(self, member, timeout=60):
        m = self.m(member)
        run_as_pg([os.path.join(PGBIN, 'pg_ctl'), '-D', m.datadir, '-w', '-t',
                   str(int(timeout)), 'promote'], timeout=timeout + 15)

    def reload(self, member, settings):
        """Set (value) or remove (None) settings in the member's override file
        and `pg_ctl reload`."""
        m = self.m(member)
        for k, v in settings.items():
            if v is None:
                m.overrides.pop(k, None)
            else:
                m.overrides[k] = v
        self._write_overrides(m)
        run_as_pg([os.path.join(PGBIN, 'pg_ctl'), '-D', m.datadir, 'reload'], timeout=30)

    # -- teardown
    def stop(self, keep=None):
        """Fast shutdown of every member, kill the double.  Never raises.
        Removes base_dir unless it should be kept (keep=True, self.keep, a
        failure recorded in self.failed, or HAPG_KEEP set)."""
        if keep is not None:
            self.keep = keep
        if self._refresher is not None:
            self._refresher.stop()
        for m in self.members.values():
            try:
                self.stop_member(m, timeout=20)
            except Exception as e:  # noqa: BLE001
                print('hapg harness: stopping %s: %s' % (m.name, e), file=sys.stderr)
                try:
                    if self.launcher:
                        self.kill9_tree(m)
                    else:
                        self.kill9(m)
                except Exception:  # noqa: BLE001
                    pass
        if self._own_double and self.double is not None:
            try:
                self.double.stop()
            except Exception as e:  # noqa: BLE001
                print('hapg harness: stopping the double: %s' % e, file=sys.stderr)
        self.stopped = True
        _unregister(self)
        if self.keep or self.failed:
            print('hapg harness: cluster files kept in %s (member logs: %s)' % (
                self.base_dir, ', '.join(m.logfile for m in self.members.values())),
                file=sys.stderr)
        elif self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- SQL
    def connect(self, member, dbname='postgres', timeout=5):
        import psycopg2
        m = self.m(member)
        conn = psycopg2.connect(host='127.0.0.1', port=m.port, user='postgres',
                                dbname=dbname, connect_timeout=timeout,
                                options='-c statement_timeout=20000',
                                application_name='hapg-harness')
        conn.autocommit = True
        return conn

    def sql(self, member, query, params=None, dbname='postgres', timeout=5):
        """Run one statement; list of dict rows ([] when it returns none)."""
        import psycopg2.extras
        conn = self.connect(member, dbname=dbname, timeout=timeout)
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, params)
                if cur.description is None:
                    return []
                return [dict(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def sql1(self, member, query, params=None, **kw):
        rows = self.sql(member, query, params, **kw)
        return rows[0] if rows else None

    def scalar(self, member, query, params=None, **kw):
        row = self.sql1(member, query, params, **kw)
        return None if row is None else list(row.values())[0]

    def status(self, member):
        return self.sql1(member, 'SELECT * FROM hapg_status()')

    def members_view(self, member):
        """hapg_members as seen by `member`: {member_name: row}."""
        return {r['member']: r for r in self.sql(member, 'SELECT * FROM hapg_members')}

    def in_recovery(self, member):
        return self.scalar(member, 'SELECT pg_is_in_recovery()')

    def primaries(self):
        """Running members that are not in recovery."""
        out = []
        for nm in self.names:
            try:
                if self.m(nm).running() and not self.in_recovery(nm):
                    out.append(nm)
            except Exception:  # noqa: BLE001
                pass
        return out

    def worker_pid(self, member):
        return self.status(member)['worker_pid']

    def postmaster_pid(self, member):
        return self.m(member).postmaster_pid()

    def wait_streaming(self, primary, standby, timeout=60):
        return wait_for(lambda: self.sql1(
            primary, "SELECT state FROM pg_stat_replication WHERE application_name = %s "
                     "AND state = 'streaming'", (standby,)),
            timeout, '%s streaming from %s' % (standby, primary))

    # -- Kubernetes objects
    def pod(self, member):
        m = member.name if isinstance(member, Member) else member
        return self.double.get_obj('/api/v1/namespaces/%s/pods/%s' % (self.namespace, m))

    def pods(self):
        out = self.double.get_obj('/api/v1/namespaces/%s/pods?labelSelector=%s' % (
            self.namespace, urllib.parse.quote('hapg.io/cluster=%s' % self.name)))
        return {p['metadata']['name']: p for p in (out or {}).get('items', [])}

    def role_label(self, member):
        p = self.pod(member) or {}
        return ((p.get('metadata') or {}).get('labels') or {}).get(self.role_label_key())

    def role_label_key(self):
        return self.role_label_name

    def pod_status(self, member):
        """The parsed hapg.io/status annotation of a member's Pod (or None)."""
        p = self.pod(member) or {}
        raw = ((p.get('metadata') or {}).get('annotations') or {}).get('hapg.io/status')
        return json.loads(raw) if raw else None

    def lease_path(self):
        return '/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s' % (self.namespace, self.name)

    def lease(self):
        return self.double.get_obj(self.lease_path())

    def holder(self):
        lease = self.lease()
        return ((lease or {}).get('spec') or {}).get('holderIdentity')

    def put_lease(self, body):
        return self.double.request('PUT', self.lease_path(), body)

    def delete_lease(self):
        return self.double.request('DELETE', self.lease_path())

    def create_lease(self, holder, renew_time=None, duration=None, transitions=0,
                     annotations=None):
        body = {
            'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
            'metadata': {'name': self.name, 'namespace': self.namespace,
                         'annotations': dict(annotations or {})},
            'spec': {'holderIdentity': holder,
                     'leaseDurationSeconds': duration or self.profile['ttl'],
                     'acquireTime': k8s_time(renew_time), 'renewTime': k8s_time(renew_time),
                     'leaseTransitions': transitions},
        }
        return self.double._ok('POST', '/apis/coordination.k8s.io/v1/namespaces/%s/leases'
                               % self.namespace, body, ok=(200, 201))

    # -- logs
    def log(self, member, since=0):
        """Text of the member's server log (from byte offset `since`)."""
        m = self.m(member)
        try:
            with open(m.logfile, 'rb') as f:
                f.seek(since)
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def log_mark(self, member):
        try:
            return os.path.getsize(self.m(member).logfile)
        except OSError:
            return 0

    def wait_log(self, member, pattern, timeout, since=0, flags=re.I | re.M):
        """Wait for a regex to appear in the member's log; returns the match."""
        rx = re.compile(pattern, flags)
        return wait_for(lambda: rx.search(self.log(member, since)), timeout,
                        'log of %s to match /%s/' % (self.m(member).name, pattern))

    def log_tails(self, lines=40):
        out = []
        for m in self.members.values():
            out.append('--- %s (%s), last %d lines:\n%s' % (m.name, m.logfile, lines,
                                                            _tail(m.logfile, lines)))
        if self.double is not None:
            out.append('--- double (%s), last %d lines:\n%s' % (
                self.double.log_path, lines, _tail(self.double.log_path, lines)))
        return '\n'.join(out)

    # -- generic waits
    def wait_for(self, predicate, timeout, what, interval=0.2):
        return wait_for(predicate, timeout, what, interval)

    def wait_leader(self, member=None, timeout=None):
        """Wait until the Lease is held (by `member` if given) and return the holder."""
        timeout = timeout or (3 * self.profile['ttl'] + 10)
        want = None if member is None else self.m(member).name
        return wait_for(lambda: (self.holder() if want is None else
                                 (self.holder() == want and want)),
                        timeout, 'the lease %s to be held%s' % (
                            self.name, '' if want is None else ' by ' + want))

    def wait_labels(self, expected, timeout=None):
        """expected: {member: label or None}."""
        timeout = timeout or (3 * self.profile['ttl'] + 10)
        return wait_for(lambda: all(self.role_label(k) == v for k, v in expected.items())
                        and expected,
                        timeout, 'pod role labels %r (now %r)' % (
                            expected, {k: _safe(lambda k=k: self.role_label(k)) for k in expected}))

    # -- demo/bench persistence
    def state(self):
        return {
            'name': self.name, 'namespace': self.namespace, 'base_dir': self.base_dir,
            'tls': self.tls, 'profile': self.profile,
            'double': {'pid': self.double.pid, 'api_port': self.double.api_port,
                       'admin_port': self.double.admin_port, 'ca_file': self.double.ca_file,
                       'log': self.double.log_path, 'base_dir': self.double.base_dir},
            'launcher': self.launcher,
            'members': [{'name': m.name, 'port': m.port, 'datadir': m.datadir,
                         'logfile': m.logfile, 'token': m.token, 'token_file': m.token_file,
                         'dir': m.dir, 'api_port': m.api_port, 'http_port': m.http_port,
                         'launcher_pid': m.launcher.pid if m.launcher_alive() else None}
                        for m in self.members.values()],
        }

    def save_state(self, path):
        with open(path, 'w') as f:
            json.dump(self.state(), f, indent=1)

    @classmethod
    def load_state(cls, path):
        """Re-attach to a detached cluster (demo) from save_state()'s file."""
        with open(path) as f:
            st = json.load(f)
        c = cls(names=[x['name'] for x in st['members']], name=st['name'],
                profile=st['profile'], base_dir=st['base_dir'], tls=st['tls'],
                namespace=st['namespace'], detach=True, keep=True,
                launcher=st.get('launcher', False))
        c._own_dir = False
        d = Double(st['double']['base_dir'], tls=st['tls'], detach=True)
        d.pid, d.api_port, d.admin_port = (st['double']['pid'], st['double']['api_port'],
                                           st['double']['admin_port'])
        d.ca_file = st['double']['ca_file']
        if d.tls:
            d._ssl = ssl.create_default_context(cafile=d.ca_file)
        c.double = d
        for x in st['members']:
            m = c.members[x['name']]
            m.port, m.datadir, m.logfile = x['port'], x['datadir'], x['logfile']
            m.token, m.token_file, m.dir = x['token'], x['token_file'], x['dir']
            m.api_port = x.get('api_port')
            m.http_port = x.get('http_port', m.http_port)
            if x.get('launcher_pid'):
                m.launcher = DetachedProcess(x['launcher_pid'])
        c.started = True
        return c


class TokenRefresher:
    """On the real server, as a kubelet does for a projected token: every
    `interval` seconds each member gets a new token (TokenRequest) in its
    token file, and `grace` seconds later the old token's Secret is deleted,
    so the API server refuses the old token: a member that did not re-read
    its token file fails.  A token file the test rewrote itself is left
    alone (and so is that member from then on)."""

    def __init__(self, cluster, interval=None, grace=5.0):
        self.c = cluster
        self.interval = float(interval or os.environ.get('HAPG_KUBE_TOKEN_REFRESH', '90'))
        self.grace = grace
        self.stopping = threading.Event()
        self.rotations = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(30)

    def _run(self):
        while not self.stopping.wait(self.interval):
            for m in list(self.c.members.values()):
                if self.stopping.is_set():
                    return
                try:
                    self._rotate(m)
                except Exception as e:  # noqa: BLE001 - the member's own errors show it
                    print('hapg harness: token refresh of %s: %s' % (m.name, e), file=sys.stderr)

    def _rotate(self, m):
        old = m.token
        if m.name in self.c.tokens_held:
            return
        try:
            with open(m.token_file) as f:
                if f.read().strip() != old:
                    return          # the test manages this member's token
        except OSError:
            return
        new = self.c.double.issue_token(m.name, service_account=self.c.rbac_sa)
        with self.c._token_lock:
            with open(m.token_file) as f:
                if f.read().strip() != old or m.token != old:
                    return
            _write_file(m.token_file, new + '\n', mode=0o600)
            m.token = new
        if not self.stopping.wait(self.grace):
            self.c.double.revoke_token(old)
            self.rotations += 1


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return '<%s>' % e


def _tail(path, lines):
    try:
        with open(path, 'rb') as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            data = f.read().decode(errors='replace')
        return '\n'.join(data.splitlines()[-lines:])
    except OSError as e:
        return '<%s>' % e


def _register(obj):
    with _registry_lock:
        if obj not in _registry:
            _registry.append(obj)


def _unregister(obj):
    with _registry_lock:
        if obj in _registry:
            _registry.remove(obj)


@atexit.register
def _teardown_all():
    """Last resort: stop whatever a crashed test run left behind."""
    for obj in list(reversed(_registry)):
        try:
            obj.stop()
        except Exception:  # noqa: BLE001
            pass
