"""The pod-level simulation of hapg (tests/sim): three "pods", each in its own
network namespace with its own address and the same port 5432, each started
through the real container entrypoint (kubernetes/entrypoint.py) with the
environment, service-account files, ConfigMap and Secret mounts a pod would
have, talking TLS to the Kubernetes API double (apidouble/kubeapi.py) on the
bridge.

    sim = Sim()
    sim.setup()             # network, double, Secret, kubectl apply -k, Pod objects
    sim.start_all()         # the three pods, from empty volumes
    sim.service_endpoints() # "the primary Service": podIP of the role=primary Pod(s)
    sim.cut('pg-0'); sim.heal('pg-0')
    sim.delete_pod('pg-0')  # SIGTERM, wait, Pod object deleted and re-created
    sim.start_pod('pg-0')
    sim.teardown()

What stands for what
--------------------
* Node network: netsim.SimNet, a bridge and one netns per pod on a free
  RFC 5737 documentation /24 (see netsim); the API double listens on the
  bridge address, port 6443, TLS with a CA made by apidouble/mkcerts.sh for
  that address; KUBERNETES_SERVICE_HOST/PORT point at it.  The test itself
  talks to the double on 127.0.0.1 (same TLS server, admin token), so a cut
  pod never cuts off the test.
* Service-account tokens: one token per pod, whose double user is the pod's
  name (per-pod statistics); with the double's --rbac each of them is
  authorized as system:serviceaccount:<ns>:<serviceAccountName of the
  StatefulSet> (hapg), i.e. by kubernetes/rbac.yaml's Role and RoleBinding.
  The admin token (the operator) is not subject to RBAC.
* The operator: creates the Secret the StatefulSet mounts (not part of the
  kustomization: passwords stay out of git) with the keys of
  kubernetes/secret-template.yaml and generated passwords, then runs
  `kubectl apply -k kubernetes/` against the double with an admin
  kubeconfig (if that fails, the objects are created one by one through the
  API and the kinds the double does not serve are reported), then edits
  the ConfigMap to the fast profile (hapg.ttl 6 s, loop_wait 1 s,
  retry_timeout 2 s) before any pod starts.
* StatefulSet controller: the double has none, so the Pod objects
  <statefulset>-<ordinal> are made from the StatefulSet's pod template
  (labels incl. hapg.io/cluster, spec, hostname/subdomain, status.podIP =
  the pod's address, phase Running); a deleted pod's object is re-created.
* kubelet: each pod's process is
    ip netns exec <ns> unshare --uts sh -c '<private /run/postgresql, /tmp,
        /dev/shm; hostname = pod name>; exec "$@"' \
      runuser -u postgres -- env -i <env> python3 kubernetes/entrypoint.py
  (the pods share the host's file system; the private mounts keep them from
  sharing what a container keeps to itself).  <env> is rendered from the
  container's env (fieldRef, secretKeyRef, configMapKeyRef, envFrom), the
  image's ENV lines from kubernetes/Containerfile, HOSTNAME and
  KUBERNETES_SERVICE_HOST/PORT; container paths under a volume mount (PGDATA,
  PGHOST) are mapped into the pod's directory, and the path variables of the
  entrypoint's contract point there too:
    BASE/<pod>/sa/{token,ca.crt,namespace}   HAPG_SA_DIR
    BASE/<pod>/config/<key>                  HAPG_CONFIG_DIR  (the ConfigMap, from the API)
    BASE/<pod>/secrets/<key>                 HAPG_SECRETS_DIR (the Secret, from the API)
    BASE/<pod>/volume/                       the PersistentVolume (PGDATA inside)
    BASE/<pod>/pod.log                       the container's stdout + stderr
  HAPG_LAUNCHER is a copy of bin/hapg-launcher (BASE/image/bin, as in the
  image; the pods see a /tmp of their own).  BASE is
  /var/tmp/hapg-sim-XXXX (not under /tmp, which each pod has privately).
  Deleting a pod = SIGTERM to its PID 1 (the child of runuser: the
  entrypoint, which exec'd the launcher), wait up to the grace period
  (terminationGracePeriodSeconds), SIGKILL whatever is left in its netns.
  `exec_in` / `psql` / `probe` are `kubectl exec`: nsenter into the pod's
  network, mount and UTS namespaces, as postgres, with the container's env.
* The primary Service: the Service of the manifests whose selector includes
  the role label = primary; its endpoints are the podIPs of the Pods that
  match its selector now (every pod here is Running; readiness is not
  simulated, the readiness probe is run by the tests instead).
"""

import base64
import copy
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
sys.path.insert(0, HERE)
sys.path.insert(0, TESTS)

import netsim  # noqa: E402
from harness import wait_for, children_of, _tail  # noqa: E402

PYTHON = os.environ.get('HAPG_PYTHON', '/usr/bin/python3')
PGBIN = os.environ.get('HAPG_PGBIN', '/usr/lib/postgresql/15/bin')
DOUBLE = os.path.join(REPO, 'apidouble', 'kubeapi.py')
K8S_DIR = os.path.join(REPO, 'kubernetes')
ENTRYPOINT = os.path.join(K8S_DIR, 'entrypoint.py')
PROBE = os.path.join(K8S_DIR, 'hapg-probe')
LAUNCHER = os.path.join(REPO, 'bin', 'hapg-launcher')
MKCERTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'apidouble', 'mkcerts.sh')
API_PORT = 6443
PG_PORT = 5432
ADMIN_TOKEN = 'hapg-sim-admin-' + os.urandom(6).hex()
ADMIN_USER = 'sim-admin'
FAST = {'ttl': 6, 'loop_wait': 1, 'retry_timeout': 2}
SA_TOKEN_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'


class SimError(Exception):
    pass


def log(msg):
    sys.stderr.write('hapg sim %s %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


def _pg_ids():
    pw = pwd.getpwnam('postgres')
    return pw.pw_uid, pw.pw_gid


def chown_pg(path):
    uid, gid = _pg_ids()
    os.chown(path, uid, gid)


def write_file(path, data, mode=0o644, owner_pg=True):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp-%d' % os.getpid()
    with open(tmp, 'wb') as f:
        f.write(data)
    os.chmod(tmp, mode)
    if owner_pg:
        chown_pg(tmp)
    os.replace(tmp, path)


def run(argv, timeout=120, check=True, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise SimError('%s failed (%d):\n%s' % (' '.join(map(str, argv)), p.returncode,
                                                p.stdout))
    return p.stdout


# --------------------------------------------------------------------------
# the API double

class Kube:
    """The API double as a process plus a small client (admin token, over
    TLS on 127.0.0.1)."""

    def __init__(self, base_dir, gateway):
        self.dir = os.path.join(base_dir, 'double')
        self.gateway = gateway
        self.cert_dir = os.path.join(self.dir, 'certs')
        self.ca_file = os.path.join(self.cert_dir, 'ca.crt')
        self.log_path = os.path.join(self.dir, 'double.log')
        self.port_file = os.path.join(self.dir, 'ports')
        self.tokens = {ADMIN_TOKEN: ADMIN_USER}
        self.extra_args = []
        self.proc = None
        self.local_port = None
        self._ssl = None

    def start(self, timeout=30):
        os.makedirs(self.cert_dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        run(['sh', MKCERTS, self.cert_dir, 'IP:' + self.gateway])
        os.chmod(self.cert_dir, 0o755)
        self._ssl = ssl.create_default_context(cafile=self.ca_file)
        argv = [PYTHON, DOUBLE, '--listen', '%s:%d' % (self.gateway, API_PORT),
                '--listen', '127.0.0.1:0', '--port-file', self.port_file,
                '--tls-cert', os.path.join(self.cert_dir, 'server.crt'),
                '--tls-key', os.path.join(self.cert_dir, 'server.key')]
        for tok, user in sorted(self.tokens.items()):
            argv += ['--token', '%s=%s' % (tok, user)]
        argv += self.extra_args
        if not os.environ.get('HAPG_DOUBLE_VERBOSE'):
            argv += ['--quiet']
        logf = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.dir)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise SimError('the API double exited with %s:\n%s' % (
                    self.proc.returncode, _tail(self.log_path, 30)))
            if not os.path.exists(self.port_file):
                return False
            ports = open(self.port_file).read().split()
            if len(ports) < 2:
                return False
            self.local_port = int(ports[1])
            return self.request('GET', '/_double/healthz')[0] == 200
        wait_for(ready, timeout, 'the API double to answer on 127.0.0.1')
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)

    @property
    def url(self):
        """What pods use."""
        return 'https://%s:%d' % (self.gateway, API_PORT)

    @property
    def local_url(self):
        return 'https://127.0.0.1:%d' % self.local_port

    def request(self, method, path, body=None, token=ADMIN_TOKEN, timeout=10,
                content_type='application/json'):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.local_url + path, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', content_type)
        if token:
            req.add_header('Authorization', 'Bearer ' + token)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw.decode() or 'null')
        except ValueError:
            return status, raw.decode(errors='replace')

    def ok(self, method, path, body=None, ok=(200, 201), **kw):
        st, out = self.request(method, path, body, **kw)
        if st not in ok:
            raise SimError('%s %s -> %s %s' % (method, path, st, json.dumps(out)[:600]))
        return out

    def get(self, path):
        st, out = self.request('GET', path)
        if st == 404:
            return None
        if st != 200:
            raise SimError('GET %s -> %s %r' % (path, st, out))
        return out

    def kubeconfig(self, path, namespace):
        cfg = {
            'apiVersion': 'v1', 'kind': 'Config',
            'clusters': [{'name': 'double', 'cluster': {'server': self.local_url,
                                                        'certificate-authority': self.ca_file}}],
            'users': [{'name': 'admin', 'user': {'token': ADMIN_TOKEN}}],
            'contexts': [{'name': 'double', 'context': {'cluster': 'double', 'user': 'admin',
                                                        'namespace': namespace}}],
            'current-context': 'double'}
        write_file(path, json.dumps(cfg, indent=1), mode=0o600, owner_pg=False)
        return path


def double_supports(option):
    out = run([PYTHON, DOUBLE, '--help'], timeout=30, check=False)
    return option in out


# --------------------------------------------------------------------------
# the manifests

API_PATHS = {
    # kind -> (group/version prefix, plural, namespaced)
    'Namespace': ('/api/v1', 'namespaces', False),
    'Pod': ('/api/v1', 'pods', True),
    'ConfigMap': ('/api/v1', 'configmaps', True),
    'Secret': ('/api/v1', 'secrets', True),
    'Service': ('/api/v1', 'services', True),
    'Endpoints': ('/api/v1', 'endpoints', True),
    'ServiceAccount': ('/api/v1', 'serviceaccounts', True),
    'Lease': ('/apis/coordination.k8s.io/v1', 'leases', True),
    'StatefulSet': ('/apis/apps/v1', 'statefulsets', True),
    'Role': ('/apis/rbac.authorization.k8s.io/v1', 'roles', True),
    'RoleBinding': ('/apis/rbac.authorization.k8s.io/v1', 'rolebindings', True),
    'ClusterRole': ('/apis/rbac.authorization.k8s.io/v1', 'clusterroles', False),
    'ClusterRoleBinding': ('/apis/rbac.authorization.k8s.io/v1', 'clusterrolebindings', False),
    'PodDisruptionBudget': ('/apis/policy/v1', 'poddisruptionbudgets', True),
}


def obj_path(kind, namespace, name=None, sub=None):
    prefix, plural, namespaced = API_PATHS[kind]
    p = prefix + ('/namespaces/%s' % namespace if namespaced else '') + '/' + plural
    if name:
        p += '/' + name
    if sub:
        p += '/' + sub
    return p


def load_manifests(k8s_dir=K8S_DIR):
    """Every object `kubectl apply -k k8s_dir` applies (`kubectl kustomize`),
    or without a kustomization those of every *.yaml / *.yml file in it."""
    import yaml
    if any(os.path.exists(os.path.join(k8s_dir, f)) for f in
           ('kustomization.yaml', 'kustomization.yml', 'Kustomization')):
        text = run(['kubectl', 'kustomize', k8s_dir], timeout=60)
        docs = list(yaml.safe_load_all(text))
    else:
        docs = []
        for fn in sorted(os.listdir(k8s_dir)):
            if fn.endswith(('.yaml', '.yml')):
                with open(os.path.join(k8s_dir, fn)) as f:
                    docs += list(yaml.safe_load_all(f))
    out = []
    for d in docs:
        if not d:
            continue
        if d.get('kind') == 'List':
            out += d.get('items') or []
        else:
            out.append(d)
    return out


def find(objs, kind, pred=None):
    return [o for o in objs if o.get('kind') == kind and (pred is None or pred(o))]


def secret_data(secret):
    out = {}
    for k, v in (secret.get('data') or {}).items():
        out[k] = base64.b64decode(v)
    for k, v in (secret.get('stringData') or {}).items():
        out[k] = v.encode()
    return out


def configmap_data(cm):
    out = {k: v.encode() for k, v in (cm.get('data') or {}).items()}
    for k, v in (cm.get('binaryData') or {}).items():
        out[k] = base64.b64decode(v)
    return out


def containerfile_env(path):
    """ENV lines of a Containerfile / Dockerfile (KEY=VALUE ... or KEY VALUE)."""
    env = {}
    try:
        text = open(path).read()
    except OSError:
        return env
    text = re.sub(r'\\\n', ' ', text)
    for line in text.splitlines():
        m = re.match(r'^\s*ENV\s+(.*)$', line, re.I)
        if not m:
            continue
        rest = m.group(1).strip()
        if '=' in rest.split()[0]:
            for tok in shlex.split(rest):
                k, _, v = tok.partition('=')
                env[k] = re.sub(r'\$\{?(\w+)\}?', lambda mm: env.get(mm.group(1), ''), v)
        else:
            k, _, v = rest.partition(' ')
            env[k] = v.strip()
    return env


# --------------------------------------------------------------------------
# one pod

class SimPod:
    def __init__(self, sim, name, index, net):
        self.sim = sim
        self.name = name
        self.index = index
        self.net = net
        self.ip = net.ip
        self.dir = os.path.join(sim.base_dir, name)
        self.sa_dir = os.path.join(self.dir, 'sa')
        self.config_dir = os.path.join(self.dir, 'config')
        self.secrets_dir = os.path.join(self.dir, 'secrets')
        self.volume = os.path.join(self.dir, 'volume')
        self.log_path = os.path.join(self.dir, 'pod.log')
        self.token = 'sim-%s-%s' % (name, os.urandom(8).hex())
        self.proc = None
        self.starts = 0
        self.env = None

    def __repr__(self):
        return '<SimPod %s %s>' % (self.name, self.ip)

    @property
    def pgdata(self):
        return self.sim.pgdata_of(self)

    # -- files a kubelet would provide
    def prepare_dirs(self):
        for d in (self.dir, self.sa_dir, self.config_dir, self.secrets_dir, self.volume):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for d in (self.sa_dir, self.config_dir, self.secrets_dir):
            os.chmod(d, 0o755)
        chown_pg(self.volume)
        os.chmod(self.volume, 0o700)
        if not os.path.exists(self.log_path):
            write_file(self.log_path, '', mode=0o644, owner_pg=False)

    def write_mounts(self):
        """(Re)write the service-account, ConfigMap and Secret files from what
        is in the API now (a kubelet reads them from the API too)."""
        sim = self.sim
        self.env = None
        write_file(os.path.join(self.sa_dir, 'token'), self.token, mode=0o644)
        write_file(os.path.join(self.sa_dir, 'ca.crt'), open(sim.kube.ca_file, 'rb').read(),
                   mode=0o644)
        write_file(os.path.join(self.sa_dir, 'namespace'), sim.namespace, mode=0o644)
        for d, data, mode in ((self.config_dir, sim.configmap_files(), sim.config_mode),
                              (self.secrets_dir, sim.secret_files(), sim.secret_mode)):
            for fn in os.listdir(d):
                if fn not in data:
                    os.unlink(os.path.join(d, fn))
            for k, v in data.items():
                write_file(os.path.join(d, k), v, mode=mode)

    def volume_entries(self):
        return os.listdir(self.volume)

    def wipe_volume(self):
        """Delete the volume's contents (not the mount point itself)."""
        for fn in os.listdir(self.volume):
            full = os.path.join(self.volume, fn)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)

    # -- the container
    def start(self):
        if self.running():
            raise SimError('%s is already running' % self.name)
        argv = self.sim.pod_argv(self)
        self.starts += 1
        with open(self.log_path, 'ab') as logf:
            logf.write(('\n===== hapg sim: start #%d of %s at %s: %s\n' % (
                self.starts, self.name, time.strftime('%H:%M:%S'),
                ' '.join(shlex.quote(a) for a in argv))).encode())
            logf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.dir,
                                         start_new_session=True)
        self.sim.state.add_pid(self.proc.pid, self.net.netns)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid1(self):
        """The container's main process (the entrypoint, which exec'd the
        launcher): the child of runuser."""
        if not self.running():
            return None
        kids = children_of(self.proc.pid)
        return kids[0] if kids else None

    def main_cmdline(self):
        pid = self.pid1()
        if not pid:
            return ''
        return netsim._cmdline(pid)

    def terminate(self, grace=None):
        """What the kubelet does on pod deletion: SIGTERM to PID 1, then after
        the grace period SIGKILL everything in the pod.  Returns the seconds
        it took and whether the pod had to be killed."""
        grace = self.sim.grace_seconds if grace is None else grace
        t0 = time.monotonic()
        killed = False
        if self.running():
            pid = wait_for(lambda: self.pid1() or not self.running(), 10,
                           'PID 1 of %s to appear' % self.name)
            if pid is not True and pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                killed = True
        left = netsim.netns_pids(self.net.netns)
        if left:
            killed = killed or bool(left)
            netsim.kill_netns_processes(self.net.netns)
        self._reap()
        return time.monotonic() - t0, killed

    def kill(self):
        netsim.kill_netns_processes(self.net.netns)
        self._reap()

    def _reap(self):
        """Collect the pod's runuser process (bounded)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def log(self, since=0):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(since)
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def log_mark(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

# --------------------------------------------------------------------------
# the whole simulation

# Run inside the pod's namespaces (ip netns exec gives a private mount
# namespace): a private /run/postgresql, /tmp and /dev/shm, as a container
# has (the
# pods share the host's file system, and PostgreSQL's default socket
# directory would otherwise be shared by the three postmasters), and the pod
# name as host name (own UTS namespace); then become the container's process.
POD_SHELL = r'''set -e
hostname "$1"
mount -t tmpfs -o mode=2775,uid=$2,gid=$3,size=16m hapg-sim-run /run/postgresql
mount --bind "$4" /tmp
mount -t tmpfs -o mode=1777,size=256m hapg-sim-shm /dev/shm
shift 4
exec "$@"
'''


class Sim:
    def __init__(self, base_dir=None, profile=None, k8s_dir=K8S_DIR):
        self.profile = dict(FAST if profile is None else profile)
        self.k8s_dir = k8s_dir
        self.base_dir = base_dir
        self.lock = netsim.RunLock()
        self.state = netsim.RunState()
        self.net = None
        self.kube = None
        self.pods = {}
        self.objs = []
        self.apply_report = ''
        self.keep = bool(os.environ.get('HAPG_KEEP'))
        self.failed = False
        self.t0 = time.monotonic()
        self.events = []

    def install_image(self):
        """The files kubernetes/Containerfile copies into /usr/local/bin,
        copied out of the repository for the pods: a pod sees its own /tmp,
        so it must not depend on where the repository happens to be."""
        self.image_bin = os.path.join(self.base_dir, 'image', 'bin')
        os.makedirs(self.image_bin, exist_ok=True)
        for src, name in ((ENTRYPOINT, 'hapg-entrypoint'), (PROBE, 'hapg-probe'),
                          (LAUNCHER, 'hapg-launcher')):
            dst = os.path.join(self.image_bin, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755)
        for d in (os.path.dirname(self.image_bin), self.image_bin):
            os.chmod(d, 0o755)

    def image_file(self, name):
        return os.path.join(self.image_bin, name)

    def event(self, what):
        t = time.monotonic() - self.t0
        self.events.append((t, what))
        log('[%6.1fs] %s' % (t, what))

    # ------------------------------------------------------------------ set-up
    def setup(self):
        if not self.lock.acquire(timeout=900):
            raise SimError('another pod simulation holds %s' % netsim.LOCK_FILE)
        gone = netsim.cleanup_leftovers(log=log)
        if gone:
            self.event('removed leftovers of an earlier run: ' + ', '.join(gone))
        if self.base_dir is None:
            self.base_dir = tempfile.mkdtemp(prefix='hapg-sim-', dir='/var/tmp')
        os.makedirs(self.base_dir, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        self.state.add_dir(self.base_dir)
        self.install_image()
        self.read_manifests()
        run_id = os.urandom(2).hex()
        self.net = netsim.SimNet(run_id, self.pod_names)
        self.net.up()
        self.event('network up: bridge %s %s/24, pods %s' % (
            netsim.BRIDGE, self.net.gateway,
            ', '.join('%s=%s' % (p.name, p.ip) for p in self.net.pods.values())))
        self.kube = Kube(self.base_dir, self.net.gateway)
        for i, nm in enumerate(self.pod_names):
            self.pods[nm] = SimPod(self, nm, i, self.net.pods[nm])
            self.kube.tokens[self.pods[nm].token] = self.token_user(nm)
        self.rbac = double_supports('--rbac')
        if self.rbac:
            for nm in self.pod_names:
                self.kube.extra_args += ['--rbac', '%s=%s' % (self.token_user(nm), self.sa_user)]
        self.kube.start()
        self.state.add_pid(self.kube.proc.pid, self.kube.cert_dir)
        self.event('API double on %s (TLS; test client on %s); pods authorized as %s: %s' % (
            self.kube.url, self.kube.local_url, self.sa_user,
            'RBAC enforced (--rbac)' if self.rbac else 'NO RBAC (the double has no --rbac)'))
        self.create_secret()
        self.apply()
        self.set_profile()
        for p in self.pods.values():
            p.prepare_dirs()
            os.makedirs(os.path.join(p.dir, 'tmp'), exist_ok=True)
            os.chmod(os.path.join(p.dir, 'tmp'), 0o1777)
            os.makedirs(os.path.join(p.dir, 'home'), exist_ok=True)
            chown_pg(os.path.join(p.dir, 'home'))
            self.create_pod_object(p)
            p.write_mounts()
        return self

    def token_user(self, pod_name):
        """The double user of a pod's token: the pod's name (so the double's
        statistics and faults can address one pod); with --rbac it is
        authorized as the pod's ServiceAccount (see sa_user), as a real
        projected token of that ServiceAccount would be."""
        return pod_name

    @property
    def sa_user(self):
        sa = self.template['spec'].get('serviceAccountName') or 'default'
        return 'system:serviceaccount:%s:%s' % (self.namespace, sa)

    def read_manifests(self):
        if not os.path.isdir(self.k8s_dir):
            raise SimError('%s does not exist (the kubernetes/ helper provides it)'
                           % self.k8s_dir)
        self.objs = load_manifests(self.k8s_dir)
        sts = find(self.objs, 'StatefulSet')
        if len(sts) != 1:
            raise SimError('expected one StatefulSet in %s, found %d' % (self.k8s_dir, len(sts)))
        self.sts = sts[0]
        self.namespace = self.sts['metadata'].get('namespace') or 'default'
        tmpl = self.sts['spec']['template']
        self.template = tmpl
        labels = (tmpl.get('metadata') or {}).get('labels') or {}
        if 'hapg.io/cluster' not in labels:
            raise SimError('the StatefulSet pod template has no hapg.io/cluster label: %r'
                           % labels)
        self.cluster = labels['hapg.io/cluster']
        replicas = int(self.sts['spec'].get('replicas') or 3)
        self.pod_names = ['%s-%d' % (self.sts['metadata']['name'], i) for i in range(replicas)]
        spec = tmpl['spec']
        self.grace_seconds = float(spec.get('terminationGracePeriodSeconds', 30))
        cs = spec['containers']
        self.container = next((c for c in cs if 'postgres' in c.get('name', '')), cs[0])
        self.mounts = {}           # container path -> ('config'|'secrets'|'volume'|'sa', volume)
        vols = {v['name']: v for v in spec.get('volumes') or []}
        claims = {c['metadata']['name'] for c in self.sts['spec'].get('volumeClaimTemplates') or []}
        self.config_mode, self.secret_mode = 0o644, 0o644
        self.configmap_name = self.secret_name = None
        for vm in self.container.get('volumeMounts') or []:
            v = vols.get(vm['name'], {})
            path = vm['mountPath'].rstrip('/')
            if 'configMap' in v:
                self.mounts[path] = 'config'
                self.configmap_name = v['configMap']['name']
                self.config_mode = int(v['configMap'].get('defaultMode', 0o644))
            elif 'secret' in v:
                self.mounts[path] = 'secrets'
                self.secret_name = v['secret']['secretName']
                self.secret_mode = int(v['secret'].get('defaultMode', 0o644))
            elif vm['name'] in claims or 'persistentVolumeClaim' in v:
                self.mounts[path] = 'volume'
            elif 'emptyDir' in v:
                self.mounts[path] = 'emptydir:' + vm['name']
        self.mounts.setdefault(SA_TOKEN_DIR, 'sa')

    # ------------------------------------------------------------ the manifests
    def apply(self):
        """`kubectl apply -k kubernetes/` against the double, with a kubeconfig
        for the admin token, as an operator deploys (the double must take it:
        if it does not, the simulation fails here and says why)."""
        kcfg = self.kube.kubeconfig(os.path.join(self.kube.dir, 'kubeconfig'), self.namespace)
        self.kubeconfig = kcfg
        if not any(os.path.exists(os.path.join(self.k8s_dir, f)) for f in
                   ('kustomization.yaml', 'kustomization.yml', 'Kustomization')):
            raise SimError('%s has no kustomization.yaml: nothing for kubectl apply -k'
                           % self.k8s_dir)
        p = subprocess.run(['kubectl', '--kubeconfig', kcfg, 'apply', '-k', self.k8s_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        self.apply_report = 'kubectl apply -k %s: exit %d\n%s' % (
            os.path.relpath(self.k8s_dir, REPO), p.returncode, p.stdout.strip())
        self.event(self.apply_report.replace('\n', ' | '))
        if p.returncode != 0:
            raise SimError(self.apply_report)

    def create_secret(self):
        """The Secret the StatefulSet mounts is not part of the kustomization
        (passwords stay out of git): create it first, as the operator would
        (`kubectl create secret generic ...` with generated passwords), with
        the keys of the manifests' template."""
        if not self.secret_name:
            return
        tmpl = self.manifest_obj('Secret', self.secret_name)
        if tmpl is None:
            for fn in sorted(os.listdir(self.k8s_dir)):
                if 'secret' in fn and fn.endswith(('.yaml', '.yml')):
                    import yaml
                    with open(os.path.join(self.k8s_dir, fn)) as f:
                        for d in yaml.safe_load_all(f):
                            if d and d.get('kind') == 'Secret' and \
                                    d['metadata']['name'] == self.secret_name:
                                tmpl = d
        if tmpl is None:
            raise SimError('the StatefulSet mounts Secret %s, found in no manifest of %s'
                           % (self.secret_name, self.k8s_dir))
        data = {k: v.decode() for k, v in secret_data(tmpl).items()}
        for k, v in data.items():
            if 'CHANGE-ME' in v.upper() or (k.endswith('password') and not v):
                data[k] = base64.b64encode(os.urandom(18)).decode()
        body = {'apiVersion': 'v1', 'kind': 'Secret', 'type': tmpl.get('type', 'Opaque'),
                'metadata': {'name': self.secret_name, 'namespace': self.namespace,
                             'labels': dict(tmpl['metadata'].get('labels') or {})},
                'stringData': data}
        self.kube.ok('POST', obj_path('Secret', self.namespace), body)
        self.event('Secret %s created (keys %s, generated passwords)' % (
            self.secret_name, ', '.join(sorted(data))))

    def app_auth(self):
        """The application's credentials, from the Secret (what an application
        Pod would get): app-username, app-password, app-database."""
        sec = {k: v.decode() for k, v in self.secret_files().items()}
        if 'app-username' not in sec or 'app-password' not in sec:
            raise SimError('the Secret %s has no app-username / app-password (keys %s)'
                           % (self.secret_name, sorted(sec)))
        return {'user': sec['app-username'], 'password': sec['app-password'],
                'dbname': sec.get('app-database') or sec['app-username']}

    def api_obj(self, kind, name):
        return self.kube.get(obj_path(kind, self.namespace, name))

    def manifest_obj(self, kind, name):
        for o in find(self.objs, kind, lambda o: o['metadata']['name'] == name):
            return o
        return None

    def configmap(self):
        if not self.configmap_name:
            return None
        return self.api_obj('ConfigMap', self.configmap_name)

    def secret(self):
        if not self.secret_name:
            return None
        return self.api_obj('Secret', self.secret_name)

    def configmap_files(self):
        cm = self.configmap()
        return configmap_data(cm) if cm else {}

    def secret_files(self):
        s = self.secret()
        return secret_data(s) if s else {}

    def set_profile(self):
        """Give the ConfigMap the fast profile (ttl, loop_wait, retry_timeout),
        in the API (so every pod's mount gets it)."""
        cm = self.configmap()
        if cm is None:
            raise SimError('the StatefulSet mounts no ConfigMap: cannot set the fast profile')
        data = dict(cm.get('data') or {})
        new, how = apply_profile(data, self.profile)
        if not how:
            raise SimError('found no place for hapg.ttl / loop_wait / retry_timeout in the '
                           'ConfigMap %s (keys %s)' % (self.configmap_name, sorted(data)))
        cm = copy.deepcopy(cm)
        cm['data'] = new
        self.kube.ok('PUT', obj_path('ConfigMap', self.namespace, self.configmap_name), cm)
        self.event('ConfigMap %s: fast profile %s (%s)' % (self.configmap_name, self.profile,
                                                          how))

    # ------------------------------------------------------------ pods
    def pod_object(self, p):
        tmpl = copy.deepcopy(self.template)
        md = tmpl.get('metadata') or {}
        labels = dict(md.get('labels') or {})
        labels['statefulset.kubernetes.io/pod-name'] = p.name
        labels['apps.kubernetes.io/pod-index'] = str(p.index)
        spec = tmpl['spec']
        spec['hostname'] = p.name
        if self.sts['spec'].get('serviceName'):
            spec['subdomain'] = self.sts['spec']['serviceName']
        spec.setdefault('serviceAccountName', spec.get('serviceAccountName') or 'default')
        spec['nodeName'] = 'sim-node-%d' % p.index
        return {
            'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': p.name, 'namespace': self.namespace, 'labels': labels,
                         'annotations': dict(md.get('annotations') or {})},
            'spec': spec,
            'status': {'phase': 'Running', 'podIP': p.ip, 'podIPs': [{'ip': p.ip}],
                       'hostIP': self.net.gateway,
                       'conditions': [{'type': 'Ready', 'status': 'True'}]},
        }

    def create_pod_object(self, p):
        # a new Pod is Pending (as on a real server): its status is the kubelet's, via /status
        body = self.pod_object(p)
        status = {'status': body.pop('status')}
        self.kube.ok('POST', obj_path('Pod', self.namespace), body)
        return self.kube.ok('PATCH', obj_path('Pod', self.namespace, p.name, 'status'), status,
                            content_type='application/merge-patch+json')

    def delete_pod_object(self, p):
        return self.kube.ok('DELETE', obj_path('Pod', self.namespace, p.name), ok=(200, 202, 404))

    def container_path(self, path):
        """Map a path inside the container to the pod's directory here."""
        for mpath in sorted(self.mounts, key=len, reverse=True):
            if path == mpath or path.startswith(mpath + '/'):
                what = self.mounts[mpath]
                return what, path[len(mpath):].lstrip('/')
        return None, None

    def pgdata_of(self, p):
        env = self.pod_env(p)
        return env['PGDATA']

    def _local(self, p, what, rest):
        base = {'config': p.config_dir, 'secrets': p.secrets_dir, 'volume': p.volume,
                'sa': p.sa_dir}.get(what)
        if base is None and what.startswith('emptydir:'):
            base = os.path.join(p.dir, what.replace(':', '-'))
            os.makedirs(base, exist_ok=True)
            chown_pg(base)
        return os.path.join(base, rest) if rest else base

    def pod_env(self, p):
        """The environment of the pod's container (computed when its mounts
        were last written, i.e. at its last start)."""
        if p.env is None:
            p.env = self.render_env(p)
        return dict(p.env)

    def render_env(self, p):
        env = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}
        env.update(containerfile_env(os.path.join(self.k8s_dir, 'Containerfile')))
        env['HOSTNAME'] = p.name
        env['HOME'] = os.path.join(p.dir, 'home')
        env['KUBERNETES_SERVICE_HOST'] = self.net.gateway
        env['KUBERNETES_SERVICE_PORT'] = str(API_PORT)
        env['KUBERNETES_SERVICE_PORT_HTTPS'] = str(API_PORT)
        env['KUBERNETES_PORT'] = 'tcp://%s:%d' % (self.net.gateway, API_PORT)
        cfg, sec = self.configmap_files(), self.secret_files()
        pod = self.pod_object(p)
        for ef in self.container.get('envFrom') or []:
            pre = ef.get('prefix', '')
            if 'configMapRef' in ef:
                env.update({pre + k: v.decode() for k, v in cfg.items()})
            if 'secretRef' in ef:
                env.update({pre + k: v.decode() for k, v in sec.items()})
        for e in self.container.get('env') or []:
            if 'value' in e:
                env[e['name']] = re.sub(r'\$\((\w+)\)', lambda m: env.get(m.group(1), m.group(0)),
                                        str(e['value']))
                continue
            vf = e.get('valueFrom') or {}
            if 'fieldRef' in vf:
                fp = vf['fieldRef']['fieldPath']
                m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]", fp)
                if m:
                    env[e['name']] = pod['metadata'][m.group(1)].get(m.group(2), '')
                else:
                    cur = pod
                    for part in fp.split('.'):
                        cur = (cur or {}).get(part) if isinstance(cur, dict) else None
                    env[e['name']] = '' if cur is None else str(cur)
            elif 'secretKeyRef' in vf:
                env[e['name']] = sec.get(vf['secretKeyRef']['key'], b'').decode()
            elif 'configMapKeyRef' in vf:
                env[e['name']] = cfg.get(vf['configMapKeyRef']['key'], b'').decode()
            elif 'resourceFieldRef' in vf:
                env[e['name']] = '1'
        # the container's paths -> this pod's directories
        for k, v in list(env.items()):
            if v.startswith('/'):
                what, rest = self.container_path(v)
                if what:
                    env[k] = self._local(p, what, rest)
        env['HAPG_SA_DIR'] = p.sa_dir
        env['HAPG_CONFIG_DIR'] = p.config_dir
        env['HAPG_SECRETS_DIR'] = p.secrets_dir
        env['HAPG_LAUNCHER'] = self.image_file('hapg-launcher')
        if not os.path.isdir(env.get('PGBIN', '')) or 'HAPG_PGBIN' in os.environ:
            # the image's PostgreSQL is this machine's, or the private copy
            # the tests were told to use (scripts/test.sh's HAPG_PGROOT)
            env['PGBIN'] = PGBIN
        if 'PGDATA' not in env:
            env['PGDATA'] = os.path.join(p.volume, 'pgdata')
        env.setdefault('POD_NAME', p.name)
        env.setdefault('POD_IP', p.ip)
        env.setdefault('POD_NAMESPACE', self.namespace)
        env.setdefault('HAPG_CLUSTER', self.cluster)
        return env

    def container_command(self, p):
        return [PYTHON, self.image_file('hapg-entrypoint')]

    def pod_argv(self, p):
        env = self.pod_env(p)
        uid, gid = _pg_ids()
        return (['ip', 'netns', 'exec', p.net.netns, 'unshare', '--uts', '/bin/sh', '-c',
                 POD_SHELL, 'pod-' + p.name, p.name, str(uid), str(gid),
                 os.path.join(p.dir, 'tmp'),
                 'runuser', '-u', 'postgres', '--', 'env', '-i'] +
                ['%s=%s' % kv for kv in sorted(env.items())] + self.container_command(p))

    # ------------------------------------------------------------ pod control
    def start_pod(self, name):
        p = self.pods[name]
        if self.api_obj('Pod', name) is None:
            self.create_pod_object(p)
        p.write_mounts()
        p.start()
        self.event('%s started (%s)' % (name, p.ip))
        return p

    def start_all(self):
        for nm in self.pod_names:
            self.start_pod(nm)

    def delete_pod(self, name):
        """Pod deletion: SIGTERM, wait (grace period), kill the rest, delete the
        Pod object and create it again (the StatefulSet controller).  Returns
        (seconds to stop, killed)."""
        p = self.pods[name]
        took, killed = p.terminate()
        self.delete_pod_object(p)
        self.create_pod_object(p)
        self.event('%s deleted: stopped in %.1fs%s; Pod object re-created' % (
            name, took, ' (had to be killed)' if killed else ''))
        return took, killed

    def restore(self):
        """Undo what an earlier scenario that failed half-way may have left:
        every pod on the network and running."""
        for nm in self.pod_names:
            if self.net.is_cut(nm):
                self.heal(nm)
            if not self.pods[nm].running():
                self.start_pod(nm)

    def cut(self, name):
        self.net.cut(name)
        self.event('%s cut off the network' % name)

    def heal(self, name):
        self.net.heal(name)
        self.event('%s reconnected' % name)

    def _exec_argv(self, name, argv, user='postgres'):
        p = self.pods[name]
        pid = p.pid1()
        if not pid:
            raise SimError('%s is not running' % name)
        env = self.pod_env(p)
        return ['nsenter', '-t', str(pid), '-n', '-m', '-u', '--', 'runuser', '-u', user, '--',
                'env', '-i'] + ['%s=%s' % kv for kv in sorted(env.items())] + list(argv)

    def exec_in(self, name, argv, timeout=30, user='postgres', check=True):
        """kubectl exec: run argv inside the pod's namespaces (network, mount,
        UTS) as `user`, with the container's environment; its output."""
        return run(self._exec_argv(name, argv, user), timeout=timeout, check=check)

    def probe(self, name, kind='ready', timeout=15):
        """The kubelet's exec probe (kubernetes/hapg-probe ready|live) inside
        the pod: (exit status, what it printed)."""
        try:
            r = subprocess.run(self._exec_argv(name, [PYTHON, self.image_file('hapg-probe'), kind]), timeout=timeout,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except subprocess.TimeoutExpired:
            return None, 'timed out after %ss' % timeout
        return r.returncode, r.stdout.strip()

    def psql(self, name, sql, timeout=15, db='postgres'):
        """One SQL statement on a pod through its local socket, as postgres."""
        out = self.exec_in(name, [os.path.join(PGBIN, 'psql'), '-X', '-At', '-v',
                                  'ON_ERROR_STOP=1', '-d', db, '-c', sql], timeout=timeout)
        return out.strip()

    # ------------------------------------------------------------ the API
    def lease(self):
        return self.kube.get(obj_path('Lease', self.namespace, self.cluster))

    def holder(self):
        return ((self.lease() or {}).get('spec') or {}).get('holderIdentity')

    def pod_api(self, name):
        return self.api_obj('Pod', name)

    @property
    def role_label(self):
        conf = b'\n'.join(self.configmap_files().values()).decode(errors='replace')
        m = re.search(r"^\s*hapg\.role_label\s*=\s*'?([\w./-]+)'?", conf, re.M)
        return m.group(1) if m else 'role'

    def roles(self):
        """{pod: role label or None} from the API."""
        out = self.kube.get(obj_path('Pod', self.namespace) + '?labelSelector=' +
                            urllib.parse.quote('hapg.io/cluster=' + self.cluster)) or {}
        lab = self.role_label
        res = {nm: None for nm in self.pod_names}
        for it in out.get('items') or []:
            res[it['metadata']['name']] = (it['metadata'].get('labels') or {}).get(lab)
        return res

    def pod_status_annotation(self, name):
        p = self.pod_api(name) or {}
        raw = ((p.get('metadata') or {}).get('annotations') or {}).get('hapg.io/status')
        return json.loads(raw) if raw else None

    def primary_service(self):
        lab = self.role_label
        for o in find(self.objs, 'Service'):
            sel = (o.get('spec') or {}).get('selector') or {}
            if sel.get(lab) == 'primary':
                return self.api_obj('Service', o['metadata']['name']) or o
        raise SimError('no Service in %s selects %s=primary' % (self.k8s_dir, lab))

    def service_endpoints(self, svc=None):
        """[(podIP, port, pod name)] of the Pods a Service selects now (the
        endpoints controller's view; every pod here is Running)."""
        svc = svc or self.primary_service()
        sel = svc['spec']['selector']
        q = ','.join('%s=%s' % kv for kv in sorted(sel.items()))
        out = self.kube.get(obj_path('Pod', self.namespace) + '?labelSelector=' +
                            urllib.parse.quote(q)) or {}
        port = PG_PORT
        sp = (svc['spec'].get('ports') or [{}])[0]
        tp = sp.get('targetPort', sp.get('port', PG_PORT))
        if isinstance(tp, int):
            port = tp
        else:
            for c in self.template['spec']['containers']:
                for cp in c.get('ports') or []:
                    if cp.get('name') == tp:
                        port = cp['containerPort']
        eps = []
        for it in out.get('items') or []:
            ip_ = (it.get('status') or {}).get('podIP')
            if ip_:
                eps.append((ip_, port, it['metadata']['name']))
        return eps

    def forbidden(self):
        """Requests of the pods that RBAC refused: {user: {resource: {verb: n}}}."""
        st = self.kube.ok('GET', '/_double/stats', token=None)
        return {u: v for u, v in (st.get('forbidden') or {}).items() if u in self.pods}

    def api_requests(self):
        """{pod: total API requests} so far."""
        st = self.kube.ok('GET', '/_double/stats', token=None)
        return {u: sum(v.values()) for u, v in (st.get('by_user') or {}).items()
                if u in self.pods}

    # ------------------------------------------------------------ data
    def system_identifier(self, name):
        """Database system identifier of a pod's data directory (pg_controldata)."""
        pgdata = self.pgdata_of(self.pods[name])
        out = run(['runuser', '-u', 'postgres', '--', os.path.join(PGBIN, 'pg_controldata'),
                   '-D', pgdata], check=False, env={'LC_ALL': 'C', 'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'})
        m = re.search(r'Database system identifier:\s*(\d+)', out)
        return m.group(1) if m else None

    def find_in_api(self, text):
        """Where `text` appears in the namespace's objects: ['Lease/x
        annotation k', 'ConfigMap/y data k', ...]."""
        found = []
        for kind in ('Lease', 'ConfigMap', 'Endpoints', 'Service', 'Pod', 'Secret'):
            st, out = self.kube.request('GET', obj_path(kind, self.namespace))
            if st != 200:
                continue
            for it in out.get('items') or []:
                md = it.get('metadata') or {}
                where = '%s/%s' % (kind, md.get('name'))
                for sect in ('annotations', 'labels'):
                    for k, v in (md.get(sect) or {}).items():
                        if text in str(v):
                            found.append('%s %s %s' % (where, sect[:-1], k))
                for sect in ('data', 'stringData', 'spec'):
                    val = it.get(sect)
                    if isinstance(val, dict):
                        for k, v in val.items():
                            vv = v if isinstance(v, str) else json.dumps(v)
                            if kind == 'Secret' and sect == 'data':
                                try:
                                    vv = base64.b64decode(v).decode(errors='replace')
                                except Exception:  # noqa: BLE001
                                    pass
                            if text in vv:
                                found.append('%s %s %s' % (where, sect, k))
        return found

    # ------------------------------------------------------------ teardown
    def teardown(self):
        errors = []
        for p in self.pods.values():
            try:
                p.kill()
            except Exception as e:  # noqa: BLE001
                errors.append('%s: %s' % (p.name, e))
        if self.kube is not None:
            try:
                self.kube.stop()
            except Exception as e:  # noqa: BLE001
                errors.append('double: %s' % e)
        if self.net is not None:
            try:
                self.net.down()
            except Exception as e:  # noqa: BLE001
                errors.append('network: %s' % e)
        keep = self.keep or self.failed
        if self.base_dir and os.path.isdir(self.base_dir):
            if keep:
                log('files kept in %s' % self.base_dir)
                self.state.keep()
            else:
                shutil.rmtree(self.base_dir, ignore_errors=True)
        if not keep:
            self.state.clear()
        self.lock.release()
        if errors:
            raise SimError('teardown: ' + '; '.join(errors))

    def log_tails(self, lines=40):
        out = []
        for p in self.pods.values():
            out.append('--- %s (%s), last %d lines:\n%s' % (p.name, p.log_path, lines,
                                                            _tail(p.log_path, lines)))
        if self.kube is not None:
            out.append('--- double (%s), last %d lines:\n%s' % (
                self.kube.log_path, lines, _tail(self.kube.log_path, lines)))
        return '\n'.join(out)


# --------------------------------------------------------------------------
# the fast profile in the ConfigMap

PROFILE_GUCS = ('ttl', 'loop_wait', 'retry_timeout')


def _with_unit(old, value):
    m = re.match(r"^\s*'?\s*\d+\s*([a-z]*)\s*'?\s*$", old or '')
    unit = m.group(1) if m else ''
    return '%d%s' % (value, unit)


def apply_profile(data, profile):
    """Set hapg.ttl / loop_wait / retry_timeout in a ConfigMap's data: keys
    of their own ('hapg.ttl', 'ttl', 'HAPG_TTL') or lines `hapg.ttl = ...` in
    a postgresql.conf-style value; else appended to the first *.conf key.
    Returns (new data, description or '' if nowhere to put them)."""
    new = dict(data)
    how = []
    for k in PROFILE_GUCS:
        v = int(profile[k])
        done = False
        for key in ('hapg.' + k, k, 'HAPG_' + k.upper()):
            if key in new:
                new[key] = _with_unit(new[key], v)
                how.append('key ' + key)
                done = True
        rx = re.compile(r"^(\s*hapg\.%s\s*=\s*)(.*?)(\s*(#.*)?)$" % k, re.M)
        for key, text in list(new.items()):
            if isinstance(text, str) and rx.search(text):
                new[key] = rx.sub(lambda m: m.group(1) + "'%s'" % _with_unit(
                    m.group(2), v).strip() + m.group(3), text)
                how.append('%s line in %s' % ('hapg.' + k, key))
                done = True
        if not done:
            confs = sorted(key for key in new if key.endswith('.conf'))
            if confs:
                new[confs[0]] = new[confs[0]].rstrip('\n') + "\nhapg.%s = '%d'\n" % (k, v)
                how.append('hapg.%s appended to %s' % (k, confs[0]))
    return new, ', '.join(how)


# --------------------------------------------------------------------------
# a client of the primary Service

def connect(host, port, auth, timeout=2):
    """psycopg2 connection with short network timeouts (a cut-off server must
    not hang the client for minutes)."""
    import psycopg2
    c = psycopg2.connect(host=host, port=port, user=auth['user'], password=auth.get('password'),
                         dbname=auth.get('dbname', 'postgres'), connect_timeout=timeout,
                         tcp_user_timeout=int(timeout * 1000), keepalives=1,
                         keepalives_idle=1, keepalives_interval=1, keepalives_count=2,
                         application_name='hapg-sim-client', sslmode='prefer')
    c.autocommit = True
    return c


class Writer(threading.Thread):
    """Writes rows (id = 1, 2, 3 ...) one by one, as an application would,
    through the primary Service: on any error it drops the connection,
    resolves the Service again (the Pods labelled primary, in API order) and
    retries the same id.  Every acknowledged id is kept with the monotonic
    time of its acknowledgement and the pod that acknowledged it."""

    def __init__(self, sim, auth, table='sim_writes', interval=0.02):
        super().__init__(daemon=True, name='sim-writer')
        self.sim = sim
        self.auth = auth
        self.table = table
        self.interval = interval
        self.stop_ev = threading.Event()
        self.acked = []          # (id, t_mono, pod)
        self.attempted = set()   # ids sent (acknowledged or not)
        self.errors = []         # (t_mono, pod or '', error text)
        self.next_id = 1
        self.conn = None
        self.conn_pod = None
        self.lock = threading.Lock()

    def ensure_table(self):
        last = None
        for ip_, port, pod in self.sim.service_endpoints():
            try:
                c = connect(ip_, port, self.auth)
                with c.cursor() as cur:
                    cur.execute('CREATE TABLE IF NOT EXISTS %s (id bigint PRIMARY KEY, '
                                'at timestamptz NOT NULL DEFAULT now(), pod text)' % self.table)
                c.close()
                return pod
            except Exception as e:  # noqa: BLE001
                last = e
        raise SimError('could not create %s through the primary Service: %s' % (self.table, last))

    def _connect(self):
        for ip_, port, pod in self.sim.service_endpoints():
            try:
                c = connect(ip_, port, self.auth)
                with c.cursor() as cur:
                    cur.execute('SELECT pg_is_in_recovery()')
                    if cur.fetchone()[0]:
                        c.close()
                        continue
                self.conn, self.conn_pod = c, pod
                return True
            except Exception as e:  # noqa: BLE001
                self.errors.append((time.monotonic(), pod, 'connect: %s' % str(e).strip()[:200]))
        return False

    def run(self):
        while not self.stop_ev.is_set():
            try:
                if self.conn is None and not self._connect():
                    self.stop_ev.wait(0.2)
                    continue
                i = self.next_id
                self.attempted.add(i)
                with self.conn.cursor() as cur:
                    cur.execute('INSERT INTO %s (id, pod) VALUES (%%s, %%s)' % self.table,
                                (i, self.conn_pod))
                with self.lock:
                    self.acked.append((i, time.monotonic(), self.conn_pod))
                self.next_id += 1
                self.stop_ev.wait(self.interval)
            except Exception as e:  # noqa: BLE001
                if 'duplicate key' in str(e):      # committed before, answer lost
                    with self.lock:
                        self.acked.append((self.next_id, time.monotonic(), self.conn_pod))
                    self.next_id += 1
                    continue
                self.errors.append((time.monotonic(), self.conn_pod, str(e).strip()[:200]))
                try:
                    self.conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self.conn, self.conn_pod = None, None
                self.stop_ev.wait(0.1)
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self):
        self.stop_ev.set()
        self.join(30)

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def acked_by(self, pod, since=0.0):
        with self.lock:
            return [a for a in self.acked if a[2] == pod and a[1] >= since]

    def acked_before(self, t):
        with self.lock:
            return [a[0] for a in self.acked if a[1] <= t]

    def first_ack_after(self, t, pod=None):
        with self.lock:
            for a in self.acked:
                if a[1] > t and (pod is None or a[2] == pod):
                    return a
        return None


# --------------------------------------------------------------------------
# figures for the closing summary line

CURRENT = {}            # 'sim': the running Sim (for conftest's log attachment)
RESULTS = {}            # scenario -> {figure: value}


SKIPPED = {}            # 'reason': why the scenarios were skipped


def summary_line():
    if not RESULTS:
        if SKIPPED:
            return 'hapg pod simulation: skipped: %s' % SKIPPED['reason']
        return ''
    parts = []
    for name in ('bootstrap', 'partition', 'pod_deletion', 'volume_wipe'):
        r = RESULTS.get(name)
        if r is None:
            parts.append('%s not run' % name)
            continue
        parts.append('%s %s: %s' % (name, r.get('verdict', '?'), ', '.join(
            '%s %s' % (k, ('%.1fs' % v) if isinstance(v, float) else v)
            for k, v in r.items() if k != 'verdict')))
    return 'hapg pod simulation: ' + '; '.join(parts)
