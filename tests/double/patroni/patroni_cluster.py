"""Run Debian's Patroni (3.0.2, Kubernetes mode) against the API double.

Used by tests/double/patroni/test_patroni.py and bench/patroni_side.py:

    c = PatroniCluster(workdir, api_urls=[url0, url1, url2], ca_file=ca,
                       tokens=['tok-0', 'tok-1', 'tok-2'], admin_token='tester',
                       ttl=20, loop_wait=2, retry_timeout=5)
    c.start()                      # creates the Pods, starts 3 members
    leader = c.wait_leader(90)     # name of the member holding the lock
    c.wait_steady(90)              # leader + every replica running
    c.kill(leader)                 # SIGKILL Patroni and its postmaster
    c.stop()                       # everything down, bounded in time

Patroni finds the API through KUBECONFIG (patroni/dcs/kubernetes.py
load_kube_config; the context must exist, Patroni's default name is
"kind-kind", we set kubernetes.context explicitly): server URL,
certificate-authority and a bearer token per member, so the double's
statistics tell members apart.  KUBERNETES_SERVICE_HOST must be unset, or
Patroni tries the in-cluster service-account files first.  Patroni does not
create Pods: they must exist with its labels (kubernetes.labels plus the
scope label), it PATCHes its own Pod (role label "master"/"replica", "status"
annotation).  The lock is the ConfigMap "<scope>-leader" (or the Endpoints
"<scope>" with use_endpoints) with annotation "leader".  Patroni 3.0.2 does
not enforce a minimum ttl (newer versions do: 20 s), so ttl=20 is a choice.

Processes run as the OS user postgres in their own session; the postmaster
runs in another session (Patroni setsid()s it), so kill() also signals the
PID from postmaster.pid.
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

PATRONI = '/usr/bin/patroni'
PYTHON = '/usr/bin/python3'
PG_BIN = '/usr/lib/postgresql/15/bin'


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(('127.0.0.1', 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def proc_memory_kb(pid):
    """RSS and PSS of one process in kB from /proc/PID/smaps_rollup (None if gone)."""
    out = {'rss_kb': None, 'pss_kb': None}
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                k, _, rest = line.partition(':')
                if k == 'Rss':
                    out['rss_kb'] = int(rest.split()[0])
                elif k == 'Pss':
                    out['pss_kb'] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


class Api:
    """A tiny Kubernetes API client (urllib) for test set-up and assertions."""

    def __init__(self, url, ca_file=None, token=None, timeout=10):
        self.url, self.token, self.timeout = url.rstrip('/'), token, timeout
        self.ctx = ssl.create_default_context(cafile=ca_file) if url.startswith('https') else None

    def request(self, method, path, body=None, ctype='application/json'):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', ctype)
        if self.token:
            req.add_header('Authorization', 'Bearer ' + self.token)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                return r.status, json.loads(r.read() or b'null')
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def get(self, path):
        return self.request('GET', path)


class PatroniCluster:
    """N Patroni members (Kubernetes DCS) on one host, each with its own API URL and token."""

    def __init__(self, workdir, api_urls, ca_file, tokens, admin_token=None, namespace='default',
                 scope='pgdouble', members=3, ttl=20, loop_wait=2, retry_timeout=5,
                 use_endpoints=False, labels=None, log_level='INFO', member_names=None,
                 dcs_extra=None):
        if isinstance(api_urls, str):
            api_urls = [api_urls] * members
        self.workdir = os.path.abspath(workdir)
        self.api_urls, self.ca_file, self.tokens = list(api_urls), ca_file, list(tokens)
        self.namespace, self.scope, self.n = namespace, scope, members
        self.ttl, self.loop_wait, self.retry_timeout = ttl, loop_wait, retry_timeout
        self.use_endpoints = use_endpoints
        self.labels = dict(labels or {'application': 'patroni'})
        self.log_level = log_level
        self.dcs_extra = dict(dcs_extra or {})     # more bootstrap.dcs keys (failsafe_mode)
        self.names = list(member_names or ['%s-%d' % (scope, i) for i in range(members)])
        self.n = len(self.names)
        self.procs = {}
        self.pg_ports, self.rest_ports = {}, {}
        self.api = Api(self.api_urls[0], ca_file, admin_token or self.tokens[0])

    # -- set-up -------------------------------------------------------------
    def _member_dir(self, name):
        return os.path.join(self.workdir, name)

    def _pod_labels(self):
        return dict(self.labels, **{'cluster-name': self.scope})

    def delete_objects(self):
        """Remove what an earlier run with this scope left (lock, config, pods, service).

        A stale "<scope>-config" with an "initialize" annotation would make fresh
        members wait forever for a leader to bootstrap."""
        sel = 'cluster-name%3D' + self.scope
        for res in ('configmaps', 'endpoints', 'pods'):
            self.api.request('DELETE', '/api/v1/namespaces/%s/%s?labelSelector=%s' % (self.namespace, res, sel))
        for name in (self.scope + '-config',):
            self.api.request('DELETE', '/api/v1/namespaces/%s/services/%s' % (self.namespace, name))

    def create_pods(self):
        """Patroni patches its own Pod, so the Pods must exist beforehand."""
        for i, name in enumerate(self.names):
            body = {'apiVersion': 'v1', 'kind': 'Pod',
                    'metadata': {'name': name, 'labels': self._pod_labels()},
                    'spec': {'containers': [{'name': 'postgres', 'image': 'postgres:15'}]},
                    'status': {'phase': 'Running', 'podIP': '127.0.0.1'}}
            status = {'status': body.pop('status')}
            code, out = self.api.request('POST', '/api/v1/namespaces/%s/pods' % self.namespace, body)
            if code not in (201, 409):
                raise RuntimeError('cannot create pod %s: %s %s' % (name, code, out))
            # a new Pod is Pending (as on a real server): the kubelet's part, via /status
            code, out = self.api.request('PATCH', '/api/v1/namespaces/%s/pods/%s/status' % (self.namespace, name),
                                         status, ctype='application/merge-patch+json')
            if code != 200:
                raise RuntimeError('cannot set the status of pod %s: %s %s' % (name, code, out))

    def _write_member_files(self, i, name):
        d = self._member_dir(name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(self.ca_file, os.path.join(d, 'ca.crt'))
        kubeconfig = {
            'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'double',
            'clusters': [{'name': 'double', 'cluster': {'server': self.api_urls[i],
                                                        'certificate-authority': os.path.join(d, 'ca.crt')}}],
            'users': [{'name': name, 'user': {'token': self.tokens[i]}}],
            'contexts': [{'name': 'double', 'context': {'cluster': 'double', 'user': name,
                                                        'namespace': self.namespace}}]}
        with open(os.path.join(d, 'kubeconfig'), 'w') as f:
            json.dump(kubeconfig, f)
        pg, rest = self.pg_ports[name], self.rest_ports[name]
        config = {
            'scope': self.scope, 'name': name,
            'log': {'level': self.log_level},
            'restapi': {'listen': '127.0.0.1:%d' % rest, 'connect_address': '127.0.0.1:%d' % rest},
            'kubernetes': {'namespace': self.namespace, 'labels': self.labels,
                           'scope_label': 'cluster-name', 'role_label': 'role',
                           'use_endpoints': self.use_endpoints, 'pod_ip': '127.0.0.1',
                           'ports': [{'name': 'postgresql', 'port': pg}], 'context': 'double',
                           'bypass_api_service': False},
            'bootstrap': {
                'dcs': {'ttl': self.ttl, 'loop_wait': self.loop_wait,
                        'retry_timeout': self.retry_timeout, 'maximum_lag_on_failover': 1048576,
                        'postgresql': {'use_pg_rewind': False, 'use_slots': True,
                                       'parameters': {'wal_level': 'replica', 'hot_standby': 'on',
                                                      'max_wal_senders': 10,
                                                      'max_replication_slots': 10,
                                                      'wal_keep_size': '64MB'}}},
                'initdb': [{'encoding': 'UTF8'}],
            },
            'postgresql': {
                'listen': '127.0.0.1:%d' % pg, 'connect_address': '127.0.0.1:%d' % pg,
                'data_dir': os.path.join(d, 'data'), 'bin_dir': PG_BIN,
                'pgpass': os.path.join(d, 'pgpass'),
                'authentication': {'superuser': {'username': 'postgres', 'password': 'postgres'},
                                   'replication': {'username': 'replicator', 'password': 'rep'}},
                'pg_hba': ['local all all trust', 'host all all 127.0.0.1/32 trust',
                           'host replication all 127.0.0.1/32 trust'],
                'parameters': {'unix_socket_directories': d, 'shared_buffers': '16MB',
                               'max_connections': 30, 'fsync': 'off',
                               'synchronous_commit': 'off', 'full_page_writes': 'off'},
                'basebackup': [{'checkpoint': 'fast'}],
            },
            'watchdog': {'mode': 'off'},
            'tags': {'nofailover': False, 'noloadbalance': False, 'clonefrom': False},
        }
        config['bootstrap']['dcs'].update(self.dcs_extra)
        path = os.path.join(d, 'patroni.yml')
        with open(path, 'w') as f:
            json.dump(config, f, indent=1)  # JSON is YAML
        for root, dirs, files in os.walk(d):
            for x in [root] + [os.path.join(root, y) for y in files]:
                shutil.chown(x, 'postgres', 'postgres')
        return path

    def start(self, create_pods=True, clean=True):
        """Delete leftovers of this scope, create pods (optional), start every member; returns self."""
        os.makedirs(self.workdir, exist_ok=True)
        shutil.chown(self.workdir, 'postgres', 'postgres')
        os.chmod(self.workdir, 0o755)
        if clean:
            self.delete_objects()
        if create_pods:
            self.create_pods()
        ports = free_ports(2 * self.n)
        for i, name in enumerate(self.names):
            self.pg_ports[name], self.rest_ports[name] = ports[2 * i], ports[2 * i + 1]
        for i, name in enumerate(self.names):
            self.start_member(i)
        return self

    def start_member(self, i):
        name = self.names[i]
        cfg = self._write_member_files(i, name)
        d = self._member_dir(name)
        env = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'HOME': d, 'LANG': 'C.UTF-8',
               'KUBECONFIG': os.path.join(d, 'kubeconfig'), 'PYTHONUNBUFFERED': '1'}
        log = open(os.path.join(d, 'patroni.log'), 'ab')
        try:
            self.procs[name] = subprocess.Popen([PYTHON, PATRONI, cfg], cwd=d, env=env, user='postgres',
                                                group='postgres', extra_groups=[], stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        finally:
            log.close()

    # -- observation ----------------------------------------------------------
    def lock_object(self):
        if self.use_endpoints:
            path = '/api/v1/namespaces/%s/endpoints/%s' % (self.namespace, self.scope)
        else:
            path = '/api/v1/namespaces/%s/configmaps/%s-leader' % (self.namespace, self.scope)
        code, obj = self.api.get(path)
        return obj if code == 200 else None

    def leader(self):
        """The member named in the lock's "leader" annotation (None if no lock)."""
        obj = self.lock_object()
        if not obj:
            return None
        return ((obj.get('metadata') or {}).get('annotations') or {}).get('leader') or None

    def pods(self):
        code, obj = self.api.get('/api/v1/namespaces/%s/pods?labelSelector=cluster-name%%3D%s'
                                 % (self.namespace, self.scope))
        return {p['metadata']['name']: p for p in obj.get('items', [])} if code == 200 else {}

    @staticmethod
    def pod_status(pod):
        try:
            return json.loads(pod['metadata'].get('annotations', {}).get('status') or '{}')
        except ValueError:
            return {}

    def wait_leader(self, timeout=90, exclude=()):
        """Wait until a member (not in exclude) holds the lock and its Pod says role=master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader()
            if name and name not in exclude:
                pod = self.pods().get(name)
                if pod and (pod['metadata'].get('labels') or {}).get('role') == 'master':
                    return name
            time.sleep(0.5)
        raise TimeoutError('no leader within %ss; logs: %s' % (timeout, self.log_tails()))

    def wait_steady(self, timeout=90, members=None):
        """Wait until one leader and every other live member runs as a streaming replica."""
        deadline = time.monotonic() + timeout
        members = list(members or [n for n in self.names if self.alive(n)])
        while time.monotonic() < deadline:
            leader = self.leader()
            pods = self.pods()
            ok = leader in members
            for n in members:
                p = pods.get(n)
                st = self.pod_status(p) if p else {}
                role = (p['metadata'].get('labels') or {}).get('role') if p else None
                if n == leader:
                    ok = ok and role == 'master' and st.get('state') == 'running'
                else:
                    ok = ok and role == 'replica' and st.get('state') == 'running'
            if ok:
                return leader
            time.sleep(0.5)
        raise TimeoutError('cluster not steady within %ss; logs: %s' % (timeout, self.log_tails()))

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def pids(self):
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def memory(self):
        """{member: {"rss_kb":.., "pss_kb":..}} of each Patroni process (not Postgres)."""
        return {n: proc_memory_kb(pid) for n, pid in self.pids().items()}

    def postmaster_pid(self, name):
        """PID of the member's running postmaster (checked in /proc, never a stale PID)."""
        data = os.path.join(self._member_dir(name), 'data')
        try:
            with open(os.path.join(data, 'postmaster.pid')) as f:
                pid = int(f.readline().strip())
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmd = f.read().split(b'\0')
        except (OSError, ValueError):
            return None
        return pid if data.encode() in cmd and cmd[0].endswith(b'postgres') else None

    def pg_port(self, name):
        return self.pg_ports[name]

    def socket_dir(self, name):
        return self._member_dir(name)

    def log_tails(self, lines=15):
        out = {}
        for n in self.names:
            try:
                with open(os.path.join(self._member_dir(n), 'patroni.log'), 'rb') as f:
                    out[n] = b''.join(f.readlines()[-lines:]).decode('utf-8', 'replace')
            except OSError:
                pass
        return out

    # -- stopping ---------------------------------------------------------------
    def _signal_member(self, name, sig):
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass

    def _kill_postmaster(self, name):
        pid = self.postmaster_pid(name)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self, name):
        """Crash a member: SIGKILL Patroni (its session) and its postmaster."""
        pm = self.postmaster_pid(name)
        self._signal_member(name, signal.SIGKILL)
        if pm:
            try:
                os.kill(pm, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p = self.procs.get(name)
        if p is not None:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout=20):
        """Stop every member: SIGTERM, then SIGKILL after timeout; postmasters too."""
        for n in self.names:
            self._signal_member(n, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in self.names:
            p = self.procs.get(n)
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal_member(n, signal.SIGKILL)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for n in self.names:
            self._kill_postmaster(n)  # backends exit on postmaster death

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
