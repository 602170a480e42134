"""The Kubernetes manifests (kubernetes/) hang together, and the container
entrypoint does what they rely on.

    /usr/bin/python3 -m pytest tests/test_manifests.py

What is checked
* `kubectl kustomize kubernetes/` renders; every Service selector matches
  the StatefulSet's pod template labels (pg-primary and pg-replicas plus the
  role label hapg sets); the headless Service is the StatefulSet's
  serviceName; anti-affinity on kubernetes.io/hostname; the PDB, the
  StatefulSet selector and the anti-affinity select the member Pods.
* The probe and entrypoint commands exist in the repository and the
  Containerfile copies them to where the StatefulSet runs them.
* Every hapg.* setting in the ConfigMap is one hapg defines (parsed from the
  DefineCustom*Variable calls in src/hapg.c), with a value of the right type
  and within range; every other setting is one PostgreSQL 15 knows
  (`postgres --describe-config`).  A misspelt name fails (self-test).
* The Role in kubernetes/rbac.yaml grants every API call hapg makes (a table
  of the call sites in src/*.c, itself checked against the sources: every
  kube_request / kube_watch_start call is in it) and the entrypoint makes
  (its API_CALLS, which its client enforces), and nothing else: no delete,
  no Secrets, no wildcard.
* The entrypoint's decision (`decide`, a pure function) in every state.
* Against the Kubernetes API double (TLS, a service-account token, as the OS
  user postgres, with the rendered ConfigMap): bootstrapping an empty volume
  runs initdb with data checksums, records the system identifier in the
  ConfigMap pg-bootstrap and creates an application role that is not a
  superuser; a second member with an empty volume, the ConfigMap present and
  no leader does not initdb and gives up after HAPG_BOOTSTRAP_TIMEOUT; once
  the first member runs (the real launcher, hapg takes the Lease), the second
  clones it with pg_basebackup as the replication role and streams; the
  probes say ready / live, and live fails when hapg's loop is stopped.

The API-double tests need PostgreSQL 15 with hapg installed (make install)
and run as root (PostgreSQL runs as the OS user postgres) or as a non-root
user that can run PostgreSQL.
"""

import datetime
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
K8S = os.path.join(REPO, 'kubernetes')
sys.path.insert(0, HERE)

import harness  # noqa: E402

PGBIN = os.environ.get('HAPG_PGBIN', '/usr/lib/postgresql/15/bin')
PYTHON = os.environ.get('HAPG_PYTHON', '/usr/bin/python3')
ENTRYPOINT = os.path.join(K8S, 'entrypoint.py')
PROBE = os.path.join(K8S, 'hapg-probe')
CONTAINERFILE = os.path.join(K8S, 'Containerfile')
COORD = 'coordination.k8s.io'


def load_entrypoint():
    spec = importlib.util.spec_from_file_location('hapg_entrypoint', ENTRYPOINT)
    mod = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True   # no kubernetes/__pycache__
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod


ep = load_entrypoint()


# --------------------------------------------------------------------------
# the rendered manifests

@pytest.fixture(scope='module')
def objs():
    if not shutil.which('kubectl'):
        pytest.skip('kubectl is not installed')
    p = subprocess.run(['kubectl', 'kustomize', K8S], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, 'kubectl kustomize kubernetes/ failed:\n%s' % p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return docs


def one(objs, kind, name=None):
    found = [o for o in objs if o['kind'] == kind and (name is None or o['metadata']['name'] == name)]
    assert len(found) == 1, 'expected one %s %s, found %d' % (kind, name or '', len(found))
    return found[0]


def sts(objs):
    return one(objs, 'StatefulSet')


def template_labels(objs):
    return sts(objs)['spec']['template']['metadata']['labels']


def container(objs):
    cs = sts(objs)['spec']['template']['spec']['containers']
    assert len(cs) == 1, 'one container per member'
    return cs[0]


def configmap_conf(objs):
    cm = one(objs, 'ConfigMap', 'pg-config')
    return cm['data']['postgresql.conf']


def cluster_name(objs):
    return ep.parse_conf(configmap_conf(objs))['hapg.cluster_name']


def subset(small, big):
    return all(big.get(k) == v for k, v in small.items())


def test_kustomization_renders_every_object(objs):
    kinds = sorted((o['kind'], o['metadata']['name']) for o in objs)
    assert kinds == sorted([
        ('ServiceAccount', 'hapg'), ('Role', 'hapg'), ('RoleBinding', 'hapg'),
        ('ConfigMap', 'pg-config'), ('Service', 'pg-primary'), ('Service', 'pg-replicas'),
        ('Service', 'pg-headless'), ('PodDisruptionBudget', 'pg'), ('StatefulSet', 'pg')]), kinds
    for o in objs:
        assert 'namespace' not in o['metadata'], \
            '%s %s names a namespace: the manifests must be namespace-agnostic' % (
                o['kind'], o['metadata']['name'])


def test_names_follow_the_cluster_name(objs):
    c = cluster_name(objs)
    assert c == 'pg'
    assert template_labels(objs)['hapg.io/cluster'] == c
    assert sts(objs)['metadata']['name'] == c
    for svc in ('%s-primary' % c, '%s-replicas' % c, '%s-headless' % c):
        one(objs, 'Service', svc)


def test_statefulset_of_three_with_selector_matching_its_pods(objs):
    s = sts(objs)
    assert s['spec']['replicas'] == 3
    assert subset(s['spec']['selector']['matchLabels'], template_labels(objs))
    assert s['spec'].get('podManagementPolicy') == 'Parallel'
    assert s['spec']['template']['spec']['serviceAccountName'] == 'hapg'


def test_service_selectors_match_the_member_pods(objs):
    labels = template_labels(objs)
    role_label = ep.parse_conf(configmap_conf(objs)).get('hapg.role_label', 'role')
    for name, role in (('pg-primary', 'primary'), ('pg-replicas', 'replica')):
        sel = dict(one(objs, 'Service', name)['spec']['selector'])
        assert sel.pop(role_label, None) == role, '%s must select %s=%s' % (name, role_label, role)
        assert sel and subset(sel, labels), \
            '%s selector %s does not match the pod template labels %s' % (name, sel, labels)
    head = one(objs, 'Service', 'pg-headless')
    assert subset(head['spec']['selector'], labels)
    assert role_label not in head['spec']['selector']


def test_service_ports_reach_the_container(objs):
    ports = {p['name']: p['containerPort'] for p in container(objs)['ports']}
    for svc in [o for o in objs if o['kind'] == 'Service']:
        for p in svc['spec']['ports']:
            assert p['port'] == 5432
            assert p['targetPort'] in ports or p['targetPort'] in ports.values(), svc['metadata']['name']
    assert ports == {'postgresql': 5432}


def test_headless_service_is_the_statefulset_service(objs):
    head = one(objs, 'Service', sts(objs)['spec']['serviceName'])
    assert head['metadata']['name'] == 'pg-headless'
    assert head['spec']['clusterIP'] == 'None'
    assert head['spec'].get('publishNotReadyAddresses') is True


def test_pod_anti_affinity_on_hostname(objs):
    aff = sts(objs)['spec']['template']['spec']['affinity']['podAntiAffinity']
    terms = [t['podAffinityTerm'] for t in aff.get('preferredDuringSchedulingIgnoredDuringExecution', [])]
    terms += aff.get('requiredDuringSchedulingIgnoredDuringExecution', [])
    assert terms
    for t in terms:
        assert t['topologyKey'] == 'kubernetes.io/hostname'
        assert subset(t['labelSelector']['matchLabels'], template_labels(objs))


def test_pdb_selects_the_members(objs):
    pdb = one(objs, 'PodDisruptionBudget', 'pg')
    assert subset(pdb['spec']['selector']['matchLabels'], template_labels(objs))
    assert pdb['spec'].get('maxUnavailable') == 1 or pdb['spec'].get('minAvailable') == 2


# --------------------------------------------------------------------------
# the image

def containerfile_copies():
    """{image path: repository path} of the final stage's COPY lines."""
    text = open(CONTAINERFILE).read()
    stages = re.split(r'^FROM\s', text, flags=re.M)
    final = stages[-1]
    out = {}
    for m in re.finditer(r'^COPY\s+(?!--from)(\S+)\s+(\S+)\s*$', final, re.M):
        out[m.group(2)] = m.group(1)
    return out, final


def test_containerfile_base_and_entrypoint():
    text = open(CONTAINERFILE).read()
    # the base is debian:bookworm, or the build argument BASE defaulting to it
    # (scripts/build-image.sh passes a debootstrap-made bookworm)
    base = re.findall(r'^FROM\s+(\S+)', text, re.M)[-1]
    if base in ('${BASE}', '$BASE'):
        base = re.search(r'^ARG\s+BASE=(\S+)', text, re.M).group(1)
    assert base == 'debian:bookworm'
    assert 'postgresql-15' in text
    assert re.search(r'make\b.*install', text)
    copies, final = containerfile_copies()
    m = re.search(r'^ENTRYPOINT\s+(\[.*\])', final, re.M)
    entry = json.loads(m.group(1))
    assert copies.get(entry[0]) == 'kubernetes/entrypoint.py'
    assert copies.get('/usr/local/bin/hapg-launcher') == 'bin/hapg-launcher'
    user = re.findall(r'^USER\s+(\S+)', final, re.M)[-1]
    uid = re.search(r'useradd .*--uid (\d+)', final.replace('\\\n', ' ')).group(1)
    assert user.split(':')[0] in (uid, 'postgres')


def test_probe_commands_are_in_the_image(objs):
    copies, final = containerfile_copies()
    c = container(objs)
    probes = [c.get('readinessProbe'), c.get('livenessProbe'), c.get('startupProbe')]
    cmds = [p['exec']['command'] for p in probes if p]
    assert [cmd[1:] for cmd in cmds[:2]] == [['ready'], ['live']]
    for cmd in cmds:
        src = copies.get(cmd[0])
        assert src, '%s is not copied into the image by kubernetes/Containerfile' % cmd[0]
        path = os.path.join(REPO, src)
        assert os.path.isfile(path) and os.access(path, os.X_OK), '%s is not an executable' % src
    p = subprocess.run([PYTHON, PROBE], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and 'usage' in p.stderr


def test_pod_runs_as_the_image_user_and_mounts_what_the_entrypoint_reads(objs):
    spec = sts(objs)['spec']['template']['spec']
    _, final = containerfile_copies()
    uid = int(re.search(r'useradd .*--uid (\d+)', final.replace('\\\n', ' ')).group(1))
    assert spec['securityContext']['runAsUser'] == uid
    assert spec['securityContext']['fsGroup'] == uid
    c = container(objs)
    mounts = {m['name']: m['mountPath'] for m in c['volumeMounts']}
    vols = {v['name']: v for v in spec['volumes']}
    assert mounts['config'] == ep.DEFAULTS['HAPG_CONFIG_DIR']
    assert vols['config']['configMap']['name'] == 'pg-config'
    assert mounts['secrets'] == ep.DEFAULTS['HAPG_SECRETS_DIR']
    secret = yaml.safe_load(open(os.path.join(K8S, 'secret-template.yaml')))
    assert vols['secrets']['secret']['secretName'] == secret['metadata']['name']
    for key in ('replication-password', 'app-username', 'app-password'):
        assert key in secret['stringData']
    claim = sts(objs)['spec']['volumeClaimTemplates'][0]['metadata']['name']
    env = {e['name']: e for e in c['env']}
    pgdata = env['PGDATA']['value']
    assert pgdata == ep.DEFAULTS['PGDATA']
    assert os.path.dirname(pgdata) == mounts[claim], 'PGDATA must be a subdirectory of the volume'
    for name, path in (('POD_NAME', 'metadata.name'), ('POD_IP', 'status.podIP'),
                       ('POD_NAMESPACE', 'metadata.namespace')):
        assert env[name]['valueFrom']['fieldRef']['fieldPath'] == path
    if c['securityContext'].get('readOnlyRootFilesystem'):
        assert '/tmp' in mounts.values()
    assert spec['terminationGracePeriodSeconds'] >= 75   # launcher: 60 s stop + 10 s hand-over


# --------------------------------------------------------------------------
# the ConfigMap's settings

def hapg_settings():
    """{name: (type, min, max, unit)} from the DefineCustom*Variable calls of src/hapg.c."""
    text = open(os.path.join(REPO, 'src', 'hapg.c')).read()
    out = {}
    for m in re.finditer(r'DefineCustom(String|Int|Bool|Real|Enum)Variable\s*\(', text):
        depth, i, args, cur, in_str = 1, m.end(), [], '', False
        while depth:
            ch = text[i]
            if in_str:
                cur += ch
                if ch == '\\':
                    cur += text[i + 1]
                    i += 1
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str, cur = True, cur + ch
            elif ch == '(':
                depth, cur = depth + 1, cur + ch
            elif ch == ')':
                depth -= 1
                if depth:
                    cur += ch
            elif ch == ',' and depth == 1:
                args.append(cur.strip())
                cur = ''
            else:
                cur += ch
            i += 1
        args.append(cur.strip())
        name = args[0].strip('"')
        kind = m.group(1)
        if kind in ('Int', 'Real'):
            ev = lambda s: eval(s, {'INT_MAX': 2 ** 31 - 1, '__builtins__': {}})  # noqa: E731
            out[name] = (kind, ev(args[5]), ev(args[6]), args[8])
        else:
            out[name] = (kind, None, None, '0')
    return out


TIME_UNITS = {'us': 1e-6, 'ms': 1e-3, 's': 1, 'min': 60, 'h': 3600, 'd': 86400}
BYTE_UNITS = {'B': 1, 'kB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3, 'TB': 1024 ** 4}


def check_settings(conf_text, known_core):
    """Problems with a postgresql.conf text: unknown names, bad hapg.* values."""
    defined = hapg_settings()
    problems = []
    values = {}
    for name, value, line in ep.parse_conf_lines(conf_text):
        values[name] = value
        if name.startswith('hapg.'):
            if name not in defined:
                problems.append('line %d: %s is not a setting hapg defines' % (line, name))
                continue
            kind, lo, hi, unit = defined[name]
            if kind == 'Bool':
                if value.lower() not in ('on', 'off', 'true', 'false', 'yes', 'no', '1', '0'):
                    problems.append('line %d: %s = %r is not a boolean' % (line, name, value))
            elif kind == 'Int':
                m = re.match(r'^(-?\d+)\s*([a-zA-Z]*)$', value)
                if not m:
                    problems.append('line %d: %s = %r is not an integer' % (line, name, value))
                    continue
                n, u = int(m.group(1)), m.group(2)
                units = TIME_UNITS if unit == 'GUC_UNIT_S' else BYTE_UNITS if unit == 'GUC_UNIT_BYTE' else {}
                if u and u not in units:
                    problems.append('line %d: %s: unit %r is not valid' % (line, name, u))
                    continue
                base = n * units.get(u, 1)
                if not lo <= base <= hi:
                    problems.append('line %d: %s = %s is outside [%s, %s]' % (line, name, value, lo, hi))
        elif name == 'include' or name not in known_core:
            problems.append('line %d: %s is not a PostgreSQL 15 setting' % (line, name))
    seconds = lambda k, d: int(re.match(r'\d+', values.get(k, str(d))).group(0))  # noqa: E731
    if seconds('hapg.loop_wait', 10) + 2 * seconds('hapg.retry_timeout', 10) > seconds('hapg.ttl', 30):
        problems.append('hapg.loop_wait + 2 * hapg.retry_timeout must not exceed hapg.ttl')
    return problems


@pytest.fixture(scope='module')
def core_settings():
    argv = [os.path.join(PGBIN, 'postgres'), '--describe-config']
    if not os.path.exists(argv[0]):
        pytest.skip('PostgreSQL 15 is not installed at %s' % PGBIN)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return {line.split('\t')[0].lower() for line in p.stdout.splitlines() if line}


def test_configmap_settings_are_known(objs, core_settings):
    problems = check_settings(configmap_conf(objs), core_settings)
    assert not problems, '\n'.join(problems)


def test_configmap_leaves_the_pod_identity_to_the_entrypoint(objs):
    conf = ep.parse_conf(configmap_conf(objs))
    for name in ('hapg.member_name', 'hapg.connect_address', 'hapg.namespace', 'hapg.token_file',
                 'hapg.ca_file', 'hapg.kubernetes_url', 'port', 'listen_addresses'):
        assert name not in conf, '%s is per pod: the entrypoint sets it' % name
    assert 'hba_file' not in conf


def test_a_misspelt_setting_is_caught(core_settings):
    assert check_settings("hapg.ttl = 30s\nhapg.loop_wait = 10s\n", core_settings) == []
    assert check_settings("hapg.tll = 30s\n", core_settings)
    assert check_settings("shared_bufers = 128MB\n", core_settings)
    assert check_settings("hapg.ttl = 2s\n", core_settings)           # below the minimum
    assert check_settings("hapg.nofailover = perhaps\n", core_settings)
    assert check_settings("hapg.ttl = 10s\n", core_settings)          # 10 + 2 * 10 > 10


def test_hapg_settings_parsed_from_the_source():
    s = hapg_settings()
    assert s['hapg.ttl'] == ('Int', 3, 3600, 'GUC_UNIT_S')
    assert s['hapg.maximum_lag_on_failover'][2] == 2 ** 31 - 1
    assert s['hapg.cluster_name'][0] == 'String'
    assert len(s) >= 17


# --------------------------------------------------------------------------
# RBAC

# Every Kubernetes API call site in src/*.c: (file, pattern, how many times
# it occurs, verb, group, resource, name).  name: '{cluster}' (the Lease),
# '{member}' (our own Pod), '*' (any Pod), None (no name: create, list,
# watch by label).  test_api_call_table_matches_the_sources keeps this honest.
HAPG_API_CALLS = [
    ('src/worker.c', r'kube_request\("GET", lease_path\(\)', 1, 'get', COORD, 'leases', '{cluster}'),
    ('src/worker.c', r'kube_request\("PUT", lease_path\(\)', 2, 'update', COORD, 'leases', '{cluster}'),
    ('src/worker.c', r'kube_request\("POST", psprintf\("/apis/coordination\.k8s\.io/v1/namespaces/%s/leases"',
     1, 'create', COORD, 'leases', None),
    ('src/worker.c', r'kube_watch_start\(lease_watch', 1, 'watch', COORD, 'leases', '{cluster}'),
    ('src/worker.c', r'kube_request\("GET", pods_path\(\)', 1, 'list', '', 'pods', None),
    ('src/worker.c', r'kube_watch_start\(pod_watch', 1, 'watch', '', 'pods', None),
    ('src/worker.c', r'kube_request\("PATCH", psprintf\("/api/v1/namespaces/%s/pods/%s", cfg\.namespace, cfg\.member\)',
     2, 'patch', '', 'pods', '{member}'),
    # the leader takes a stale role=primary label off a lost leader's Pod
    ('src/worker.c', r'kube_request\("PATCH", psprintf\("/api/v1/namespaces/%s/pods/%s", cfg\.namespace, p->name\)',
     1, 'patch', '', 'pods', '*'),
    ('src/guard.c', r'kube_request\("GET", psprintf\("/apis/coordination\.k8s\.io/v1/namespaces/%s/leases/%s"',
     1, 'get', COORD, 'leases', '{cluster}'),
    ('src/guard.c', r'kube_request\("GET", psprintf\("/api/v1/namespaces/%s/pods/%s"', 1, 'get', '', 'pods', '*'),
    ('src/handover.c', r'kube_request\("GET", path', 1, 'get', COORD, 'leases', '{cluster}'),
    ('src/handover.c', r'kube_request\("PUT", path', 1, 'update', COORD, 'leases', '{cluster}'),
]


def test_api_call_table_matches_the_sources():
    counted = {}
    for fn, pattern, n, verb, group, res, name in HAPG_API_CALLS:
        text = open(os.path.join(REPO, fn)).read()
        found = len(re.findall(pattern, text))
        assert found == n, '%s: %r found %d times, the table says %d' % (fn, pattern, found, n)
        counted[fn] = counted.get(fn, 0) + n
    for fn in sorted(os.listdir(os.path.join(REPO, 'src'))):
        if not fn.endswith('.c') or fn == 'kube.c':
            continue
        text = open(os.path.join(REPO, 'src', fn)).read()
        sites = len(re.findall(r'\bkube_(request|watch_start)\s*\(', text))
        assert sites == counted.get('src/' + fn, 0), \
            'src/%s has %d Kubernetes API call sites, HAPG_API_CALLS lists %d: update the table ' \
            'and kubernetes/rbac.yaml' % (fn, sites, counted.get('src/' + fn, 0))
    worker = open(os.path.join(REPO, 'src', 'worker.c')).read()
    # what the table assumes about the paths
    assert re.search(r'lease_path\(void\)\s*\{\s*return psprintf\("/apis/coordination\.k8s\.io/v1/'
                     r'namespaces/%s/leases/%s"', worker)
    assert re.search(r'pods_path\(void\).*?labelSelector=', worker, re.S)
    assert re.search(r'leases\?watch=1[^"]*fieldSelector=%s', worker)
    assert 'psprintf("metadata.name=%s", cfg.cluster)' in worker
    handover = open(os.path.join(REPO, 'src', 'handover.c')).read()
    assert re.search(r'\*path = psprintf\("/apis/coordination\.k8s\.io/v1/namespaces/%s/leases/%s"', handover)


def role_rules():
    docs = list(yaml.safe_load_all(open(os.path.join(K8S, 'rbac.yaml'))))
    role = [d for d in docs if d and d['kind'] == 'Role'][0]
    return docs, role['rules']


def needed_calls(cluster):
    calls = []
    for _, _, _, verb, group, res, name in HAPG_API_CALLS:
        calls.append((verb, group, res, name))
    for verb, group, res, name in ep.API_CALLS:
        calls.append((verb, group, res, name))
    out = []
    for verb, group, res, name in calls:
        if name is not None and '{cluster}' in name:
            name = name.format(cluster=cluster)
        out.append((verb, group, res, name))
    return out


def allows(rule, verb, group, res, name):
    if group not in rule.get('apiGroups', []) or res not in rule.get('resources', []) \
            or verb not in rule.get('verbs', []):
        return False
    names = rule.get('resourceNames')
    if not names:
        return True
    return name is not None and name not in ('*', '{member}') and name in names


def test_role_grants_every_call_hapg_and_the_entrypoint_make(objs):
    _, rules = role_rules()
    for call in needed_calls(cluster_name(objs)):
        assert any(allows(r, *call) for r in rules), 'kubernetes/rbac.yaml does not allow %s' % (call,)


def test_role_grants_nothing_more(objs):
    _, rules = role_rules()
    needed = needed_calls(cluster_name(objs))
    for r in rules:
        assert '*' not in r.get('verbs', []) + r.get('resources', []) + r.get('apiGroups', [])
        assert not r.get('nonResourceURLs')
        for res in r['resources']:
            assert res not in ('secrets', 'pods/exec', 'roles', 'rolebindings'), res
            for group in r['apiGroups']:
                for verb in r['verbs']:
                    assert verb not in ('delete', 'deletecollection', 'escalate', 'bind', 'impersonate')
                    uses = [c for c in needed if c[:3] == (verb, group, res)]
                    assert uses, 'the Role grants %s on %s/%s, which nothing uses' % (verb, group, res)
                    for name in r.get('resourceNames') or []:
                        assert any(c[3] == name for c in uses), (verb, res, name)


def test_rbac_objects_bind_the_service_account(objs):
    docs, _ = role_rules()
    kinds = [d['kind'] for d in docs if d]
    assert kinds == ['ServiceAccount', 'Role', 'RoleBinding']
    rb = [d for d in docs if d and d['kind'] == 'RoleBinding'][0]
    assert rb['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role', 'name': 'hapg'}
    assert rb['subjects'] == [{'kind': 'ServiceAccount', 'name': 'hapg'}]
    assert sts(objs)['spec']['template']['spec']['serviceAccountName'] == 'hapg'


def test_entrypoint_client_refuses_undeclared_calls():
    s = ep.Settings({'HAPG_CLUSTER': 'pg', 'POD_NAMESPACE': 'default',
                     'KUBERNETES_SERVICE_HOST': '127.0.0.1', 'KUBERNETES_SERVICE_PORT': '1',
                     'HAPG_CONFIG_DIR': '/nonexistent'})
    k = ep.Kube(s)
    with pytest.raises(AssertionError):
        k.call('delete', '', 'configmaps', 'pg-bootstrap')
    with pytest.raises(AssertionError):
        k.call('update', '', 'configmaps', 'pg-config')
    with pytest.raises(AssertionError):
        k.call('get', '', 'secrets', 'pg-secrets')


# --------------------------------------------------------------------------
# the application role

def test_application_role_is_not_a_superuser():
    sql = ep.bootstrap_sql(True)
    stmt = re.search(r'CREATE ROLE :"app_user"[^;]*;', sql).group(0)
    assert 'NOSUPERUSER' in stmt and 'LOGIN' in stmt and 'NOREPLICATION' in stmt
    assert not re.search(r'(?<!NO)SUPERUSER', stmt)
    assert not re.search(r'GRANT\s+\S+\s+TO\s+:"app_user"', sql)
    assert not re.search(r'ALTER ROLE :"app_user"', sql)


# --------------------------------------------------------------------------
# the entrypoint's decision

NOW = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def lease(holder, age=1.0, duration=30):
    renew = (NOW - datetime.timedelta(seconds=age)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    return {'metadata': {'name': 'pg', 'resourceVersion': '7'},
            'spec': {'holderIdentity': holder, 'leaseDurationSeconds': duration,
                     'renewTime': renew, 'acquireTime': renew}}


def pod(name, role='leader', state='running', addr='10.0.0.1:5432', cluster='pg'):
    status = {'role': role, 'state': state, 'connect_address': addr}
    return {'metadata': {'name': name, 'labels': {'hapg.io/cluster': cluster},
                         'annotations': {'hapg.io/status': json.dumps(status)}}}


def obs(**kw):
    o = {'member': 'pg-1', 'cluster': 'pg', 'has_data': False, 'api_error': None, 'lease': None,
         'lease_valid': False, 'holder_pod': None, 'bootstrap': None, 'init_sysid': None}
    o.update(kw)
    if o['lease'] is not None and 'lease_valid' not in kw:
        o['lease_valid'] = ep.lease_valid(o['lease'], NOW, False)
    return o


def test_decide_existing_data_starts_without_looking_further():
    assert ep.decide(obs(has_data=True, api_error='down'))[0] == 'start'


def test_decide_clones_a_valid_leader():
    a, why, src = ep.decide(obs(lease=lease('pg-0'), holder_pod=pod('pg-0'),
                                bootstrap={'initializer': 'pg-0', 'system_identifier': '1'}))
    assert a == 'clone' and src == {'member': 'pg-0', 'host': '10.0.0.1', 'port': 5432}, why
    a, _, src = ep.decide(obs(lease=lease('pg-0'), holder_pod=pod('pg-0', addr='[fd00::5]:5433')))
    assert a == 'clone' and src['host'] == 'fd00::5' and src['port'] == 5433


def test_decide_waits_for_a_leader_that_does_not_publish_itself():
    for p in (None, pod('pg-0', role='replica'), pod('pg-0', state='stopped'),
              pod('pg-0', addr=''), pod('pg-0', cluster='other')):
        a, why, _ = ep.decide(obs(lease=lease('pg-0'), holder_pod=p))
        assert a == 'wait', (p, why)


def test_decide_never_clones_itself():
    a, why, _ = ep.decide(obs(member='pg-0', lease=lease('pg-0'), holder_pod=pod('pg-0')))
    assert a == 'wait' and 'this member' in why


def test_decide_expired_or_released_lease_means_initialised():
    for l in (lease('pg-0', age=100), lease('')):
        for boot in (None, {'initializer': 'pg-1'}):
            a, why, _ = ep.decide(obs(lease=l, bootstrap=boot))
            assert a == 'wait', (l, boot, why)


def test_decide_claims_only_a_never_initialised_cluster():
    assert ep.decide(obs())[0] == 'claim'
    assert ep.decide(obs(api_error='connection refused'))[0] == 'wait'


def test_decide_initialises_only_what_it_claimed_and_never_twice():
    assert ep.decide(obs(bootstrap={'initializer': 'pg-1'}))[0] == 'initialize'
    a, why, _ = ep.decide(obs(bootstrap={'initializer': 'pg-0'}))
    assert a == 'wait' and 'pg-0 is initialising' in why
    for who in ('pg-0', 'pg-1'):
        a, why, _ = ep.decide(obs(bootstrap={'initializer': who, 'system_identifier': '123'}))
        assert a == 'wait' and 'never initialising twice' in why, why


def test_decide_finishes_a_recorded_initialisation():
    boot = {'initializer': 'pg-1', 'system_identifier': '123'}
    assert ep.decide(obs(bootstrap=boot, init_sysid='123'))[0] == 'finish-init'
    assert ep.decide(obs(bootstrap=boot, init_sysid='999'))[0] == 'wait'
    assert ep.decide(obs(bootstrap=dict(boot, initializer='pg-0'), init_sysid='123'))[0] == 'wait'
    # a leader appeared meanwhile: its copy is the cluster, not ours
    a, _, _ = ep.decide(obs(bootstrap=boot, init_sysid='123', lease=lease('pg-0'),
                            holder_pod=pod('pg-0')))
    assert a == 'clone'
    # recorded nothing yet: redo it
    assert ep.decide(obs(bootstrap={'initializer': 'pg-1'}, init_sysid='123'))[0] == 'initialize'


def test_lease_validity():
    assert ep.lease_valid(lease('pg-0', age=29), NOW, False)
    assert not ep.lease_valid(lease('pg-0', age=31), NOW, False)
    assert ep.lease_valid(lease('pg-0', age=31), NOW, True)       # seen renewed: clocks differ
    assert not ep.lease_valid(lease(''), NOW, True)
    assert not ep.lease_valid({'spec': {'holderIdentity': 'pg-0'}}, NOW, False)


def test_config_text_puts_the_pod_identity_last(tmp_path):
    cfg = tmp_path / 'config'
    cfg.mkdir()
    (cfg / 'postgresql.conf').write_text("hapg.cluster_name = 'pg'\n"
                                         "shared_preload_libraries = 'pg_stat_statements'\n"
                                         "hapg.member_name = 'wrong'\n")
    s = ep.Settings({'HAPG_CONFIG_DIR': str(cfg), 'POD_NAME': 'pg-2', 'POD_IP': 'fd00::7',
                     'POD_NAMESPACE': 'db', 'PGDATA': str(tmp_path / 'vol' / 'pgdata'),
                     'HAPG_SA_DIR': '/sa'})
    text = ep.config_text(s)
    conf = ep.parse_conf(text)
    assert conf['include'] == str(cfg / 'postgresql.conf')
    assert conf['hapg.member_name'] == 'pg-2'
    assert conf['hapg.connect_address'] == '[fd00::7]:5432'
    assert conf['hapg.namespace'] == 'db'
    assert conf['hapg.cluster_name'] == 'pg'
    assert conf['shared_preload_libraries'] == 'hapg, pg_stat_statements'
    assert conf['hapg.token_file'] == '/sa/token'
    assert conf['unix_socket_directories'] == str(tmp_path / 'vol' / 'run')
    assert 'passfile=' in conf['hapg.replication_conninfo']
    lines = [l for l in text.splitlines() if l and not l.startswith('#')]
    assert lines.index("include '%s'" % (cfg / 'postgresql.conf')) < \
        [i for i, l in enumerate(lines) if l.startswith('hapg.member_name')][0]


# --------------------------------------------------------------------------
# for real, against the Kubernetes API double

SA_TOKEN = 'hapg-sa-token-' + os.urandom(6).hex()
SA_USER = 'system:serviceaccount:default:hapg'
FAST = "\n# test profile\nhapg.ttl = 6s\nhapg.loop_wait = 1s\nhapg.retry_timeout = 2s\n" \
       "shared_buffers = 16MB\nmax_connections = 20\nfsync = off\nwal_keep_size = 64MB\n" \
       "log_checkpoints = off\n"


def _pg_ids():
    if os.geteuid() == 0:
        pw = pwd.getpwnam('postgres')
        return pw.pw_uid, pw.pw_gid
    return os.geteuid(), os.getegid()


def _chown(path):
    if os.geteuid() == 0:
        os.chown(path, *_pg_ids())


def _as_pg():
    if os.geteuid() != 0:
        return {}
    uid, gid = _pg_ids()
    return {'user': uid, 'group': gid, 'extra_groups': []}


class World:
    """The double, the rendered ConfigMap and Secret, and one directory per
    pod laid out like the kubelet would (sa/, config/, secrets/, volume/)."""

    def __init__(self, objs):
        self.base = tempfile.mkdtemp(prefix='hapg-manifests-', dir=os.environ.get('HAPG_TMP', '/tmp'))
        os.chmod(self.base, 0o755)
        self.failed = False
        self.procs = {}
        self.double = harness.Double(os.path.join(self.base, 'double'), tls=True,
                                     tokens={SA_TOKEN: SA_USER})
        os.makedirs(self.double.base_dir)
        os.chmod(self.double.base_dir, 0o755)
        self.double.start()
        self.cm = one(objs, 'ConfigMap', 'pg-config')
        secret = yaml.safe_load(open(os.path.join(K8S, 'secret-template.yaml')))
        self.secret = dict(secret['stringData'],
                           **{'replication-password': 'repl-' + os.urandom(4).hex(),
                              'app-password': "app'pw:" + os.urandom(4).hex()})
        self.rbac_applied = self.apply_rbac()
        # stands in for bin/hapg-launcher: records its arguments, exits 0
        fake = os.path.join(self.base, 'fake-launcher')
        with open(fake, 'w') as f:
            f.write('#!/bin/sh\necho "$@" > "$(dirname "$0")/launched/$POD_NAME"\n')
        os.chmod(fake, 0o755)
        os.makedirs(os.path.join(self.base, 'launched'))
        _chown(os.path.join(self.base, 'launched'))
        self.fake_launcher = fake
        self.ports = {}

    def apply_rbac(self):
        """Our Role and RoleBinding in the double, if it serves RBAC (then it
        enforces them on the service account's token)."""
        docs = [d for d in yaml.safe_load_all(open(os.path.join(K8S, 'rbac.yaml'))) if d]
        paths = {'ServiceAccount': '/api/v1/namespaces/default/serviceaccounts',
                 'Role': '/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles',
                 'RoleBinding': '/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings'}
        for d in docs:
            st, out = self.double.request('POST', paths[d['kind']], d)
            if st not in (200, 201):
                return False
        st, out = self.double.request('POST', '/_double/rbac', {'user': SA_USER, 'as': SA_USER},
                                      token=None)
        return st in (200, 201)

    def pod_dir(self, name):
        return os.path.join(self.base, name)

    def pgdata(self, name):
        return os.path.join(self.pod_dir(name), 'volume', 'pgdata')

    def make_pod(self, name, fresh_volume=True):
        d = self.pod_dir(name)
        for sub in ('', 'sa', 'config', 'secrets'):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o755)
        vol = os.path.join(d, 'volume')
        if fresh_volume and os.path.exists(vol):
            shutil.rmtree(vol)
        os.makedirs(vol, exist_ok=True)
        _chown(vol)
        os.chmod(vol, 0o700)
        files = {'sa/token': SA_TOKEN, 'sa/ca.crt': open(self.double.ca_file).read(),
                 'sa/namespace': 'default',
                 'config/postgresql.conf': self.cm['data']['postgresql.conf'] + FAST,
                 'config/pg_hba.conf': self.cm['data']['pg_hba.conf']}
        for k, v in self.secret.items():
            files['secrets/' + k] = v
        for rel, text in files.items():
            path = os.path.join(d, rel)
            with open(path, 'w') as f:
                f.write(text)
            os.chmod(path, 0o644 if not rel.startswith('secrets/') else 0o640)
            if rel.startswith('secrets/') and os.geteuid() == 0:
                os.chown(path, 0, _pg_ids()[1])
        st, out = self.double.request('POST', '/api/v1/namespaces/default/pods', {
            'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': name, 'labels': {'hapg.io/cluster': 'pg',
                                                  'app.kubernetes.io/name': 'hapg'}},
            'spec': {'serviceAccountName': 'hapg',
                     'containers': [{'name': 'postgres', 'image': 'hapg'}]},
            'status': {'phase': 'Running', 'podIP': '127.0.0.1'}})
        assert st in (201, 409), (st, out)
        self.ports.setdefault(name, harness.free_port())

    def env(self, name, **extra):
        d = self.pod_dir(name)
        env = {'PATH': '/usr/bin:/bin', 'LC_ALL': 'C.UTF-8', 'POD_NAME': name, 'POD_IP': '127.0.0.1',
               'HAPG_SA_DIR': os.path.join(d, 'sa'), 'HAPG_CONFIG_DIR': os.path.join(d, 'config'),
               'HAPG_SECRETS_DIR': os.path.join(d, 'secrets'), 'PGDATA': self.pgdata(name),
               'PGBIN': PGBIN, 'HAPG_PORT': str(self.ports[name]),
               'HAPG_LISTEN_ADDRESSES': '127.0.0.1',
               'KUBERNETES_SERVICE_HOST': '127.0.0.1',
               'KUBERNETES_SERVICE_PORT': str(self.double.api_port),
               'HOME': self.pod_dir(name)}
        env.update(extra)
        return env

    def run(self, name, timeout=120, **extra):
        return subprocess.run([PYTHON, ENTRYPOINT], env=self.env(name, **extra), cwd=self.pod_dir(name),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **_as_pg())

    def start(self, name, **extra):
        """The container: the entrypoint execs the real launcher (same pid)."""
        log = open(os.path.join(self.pod_dir(name), 'pod.log'), 'ab')
        self.procs[name] = subprocess.Popen([PYTHON, ENTRYPOINT], env=self.env(name, **extra),
                                            cwd=self.pod_dir(name), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True,
                                            **_as_pg())
        log.close()

    def log(self, name):
        try:
            return open(os.path.join(self.pod_dir(name), 'pod.log'), errors='replace').read()
        except OSError:
            return ''

    def psql(self, name, sql, check=True):
        argv = [os.path.join(PGBIN, 'psql'), '-X', '-A', '-t', '-q', '-h',
                os.path.join(self.pod_dir(name), 'volume', 'run'), '-p', str(self.ports[name]),
                '-U', 'postgres', '-d', 'postgres', '-c', sql]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env={'PATH': '/usr/bin:/bin', 'LC_ALL': 'C.UTF-8'}, **_as_pg())
        if check:
            assert r.returncode == 0, '%s: %s' % (sql, r.stderr)
        return r.stdout.strip()

    def probe(self, name, what, **extra):
        env = {'PATH': '/usr/bin:/bin', 'PGDATA': self.pgdata(name), 'PGBIN': PGBIN}
        env.update(extra)
        r = subprocess.run([PYTHON, PROBE, what], env=env, capture_output=True, text=True,
                           timeout=60, **_as_pg())
        return r.returncode, r.stdout.strip() + r.stderr.strip()

    def get(self, path):
        return self.double.get_obj(path)

    def stop(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, p in self.procs.items():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.double.stop()
        if self.failed or os.environ.get('HAPG_KEEP'):
            print('hapg test_manifests: files kept in %s' % self.base, file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def _can_run_postgres():
    so = os.path.join(PGBIN.replace('/bin', '/lib'), 'hapg.so')
    if not os.path.exists(so):
        return 'hapg is not installed (%s): run make && make install' % so
    if os.geteuid() == 0:
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'no postgres OS user'
    return ''


@pytest.fixture(scope='module')
def world(request, objs):
    why = _can_run_postgres()
    if why:
        pytest.skip(why)
    w = World(objs)
    yield w
    w.failed = getattr(request.module, '_hapg_failed', False)   # set by tests/conftest.py
    w.stop()


def controldata(w, name):
    r = subprocess.run([os.path.join(PGBIN, 'pg_controldata'), w.pgdata(name)], capture_output=True,
                       text=True, timeout=30, env={'LC_ALL': 'C'})
    return r.stdout


def test_bootstrap_initialises_the_cluster_once(world):
    w = world
    w.make_pod('pg-0')
    r = w.run('pg-0', HAPG_LAUNCHER=w.fake_launcher)
    assert r.returncode == 0, r.stderr
    assert 'decision: claim' in r.stderr and 'initdb' in r.stderr, r.stderr
    out = open(os.path.join(w.base, 'launched', 'pg-0')).read().split()
    assert out == ['--pgdata', w.pgdata('pg-0'), '--bindir', PGBIN], out
    assert os.path.exists(os.path.join(w.pgdata('pg-0'), 'PG_VERSION'))
    assert not os.path.exists(w.pgdata('pg-0') + ep.INIT_SUFFIX)
    cd = controldata(w, 'pg-0')
    assert re.search(r'^Data page checksum version:\s*1', cd, re.M), cd
    sysid = re.search(r'^Database system identifier:\s*(\d+)', cd, re.M).group(1)
    cm = w.get('/api/v1/namespaces/default/configmaps/pg-bootstrap')
    assert cm and cm['data']['system_identifier'] == sysid and cm['data']['initializer'] == 'pg-0', cm
    conf = ep.parse_conf(open(os.path.join(w.pgdata('pg-0'), 'postgresql.conf')).read())
    assert conf['hapg.member_name'] == 'pg-0'
    assert conf['hapg.connect_address'] == '127.0.0.1:%d' % w.ports['pg-0']
    assert conf['hba_file'] == os.path.join(w.pod_dir('pg-0'), 'config', 'pg_hba.conf')
    passfile = os.path.join(w.pod_dir('pg-0'), 'volume', 'run', 'replication.pgpass')
    assert os.stat(passfile).st_mode & 0o077 == 0
    assert w.secret['replication-password'] not in r.stderr
    assert w.secret['app-password'] not in r.stderr

    # the roles, with a temporary server of our own (hapg idle, no TCP)
    tmp = tempfile.mkdtemp(prefix='hapg-check-')
    _chown(tmp)
    os.chmod(tmp, 0o700)
    srv = subprocess.Popen([os.path.join(PGBIN, 'postgres'), '-D', w.pgdata('pg-0'),
                            '-c', 'listen_addresses=', '-c', 'unix_socket_directories=' + tmp,
                            '-c', 'hapg.cluster_name='], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True, **_as_pg())
    try:
        psql = [os.path.join(PGBIN, 'psql'), '-X', '-A', '-t', '-h', tmp, '-p', str(w.ports['pg-0']),
                '-U', 'postgres', '-d', 'postgres', '-c']

        def q(sql):
            r = subprocess.run(psql + [sql], capture_output=True, text=True, timeout=30, **_as_pg())
            return r.stdout.strip() if r.returncode == 0 else None
        harness.wait_for(lambda: q('SELECT 1') == '1', 60, 'the check server')
        app = w.secret['app-username']
        assert q("SELECT rolsuper, rolcanlogin, rolreplication, rolcreaterole, rolcreatedb "
                 "FROM pg_roles WHERE rolname = '%s'" % app) == 'f|t|f|f|f'
        assert q("SELECT rolsuper, rolcanlogin, rolreplication FROM pg_roles "
                 "WHERE rolname = 'replicator'") == 'f|t|t'
        assert q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '%s'"
                 % w.secret['app-database']) == app
        assert q("SELECT extname FROM pg_extension WHERE extname = 'hapg'") == 'hapg'
        assert q("SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = '%s'"
                 % app) == 't'
        assert q("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'postgres'") == 't'
    finally:
        srv.send_signal(signal.SIGINT)
        srv.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)

    # a second member, empty volume, no leader: never initdb, gives up in time
    w.make_pod('pg-1')
    t0 = time.monotonic()
    r = w.run('pg-1', HAPG_LAUNCHER=w.fake_launcher, HAPG_BOOTSTRAP_TIMEOUT='3', HAPG_POLL_MAX='1')
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert took < 30, took
    assert 'never initialising twice' in r.stderr and 'FATAL' in r.stderr, r.stderr
    assert 'initdb' not in r.stderr
    assert not os.path.exists(w.pgdata('pg-1'))
    assert not os.path.exists(w.pgdata('pg-1') + ep.INIT_SUFFIX)
    assert not os.path.exists(os.path.join(w.base, 'launched', 'pg-1'))
    assert not os.path.exists(os.path.join(w.pod_dir('pg-1'), 'volume', 'run', 'bootstrap.pid'))
    assert w.get('/api/v1/namespaces/default/configmaps/pg-bootstrap')['data']['system_identifier'] == sysid

    # the first member again: its data directory is started, nothing else
    r = w.run('pg-0', HAPG_LAUNCHER=w.fake_launcher)
    assert r.returncode == 0 and 'holds a data directory' in r.stderr and 'initdb' not in r.stderr, r.stderr

    # a volume of another cluster is refused
    path = '/api/v1/namespaces/default/configmaps/pg-bootstrap'
    cm = w.get(path)
    cm['data']['system_identifier'] = '42'
    st, out = w.double.request('PUT', path, cm)
    assert st == 200, out
    try:
        r = w.run('pg-0', HAPG_LAUNCHER=w.fake_launcher)
        assert r.returncode == 1 and 'belongs to another cluster' in r.stderr, r.stderr
    finally:
        cm = w.get(path)
        cm['data']['system_identifier'] = sysid
        assert w.double.request('PUT', path, cm)[0] == 200


def test_second_member_clones_the_leader_and_streams(world):
    w = world
    if not os.path.exists(os.path.join(w.pgdata('pg-0'), 'PG_VERSION')):
        pytest.skip('needs test_bootstrap_initialises_the_cluster_once')
    w.start('pg-0')          # the real launcher this time
    lease_path = '/apis/coordination.k8s.io/v1/namespaces/default/leases/pg'

    def leader_published():
        l = w.get(lease_path)
        p = w.get('/api/v1/namespaces/default/pods/pg-0')
        st = ep.pod_status(p)
        return l and l['spec'].get('holderIdentity') == 'pg-0' and st.get('role') == 'leader' \
            and st.get('state') == 'running' and st.get('connect_address')
    try:
        harness.wait_for(leader_published, 60, 'pg-0 to hold the Lease and publish itself')
    except AssertionError:
        raise AssertionError('pg-0 did not lead; its log:\n%s' % w.log('pg-0')[-4000:])
    code, msg = w.probe('pg-0', 'ready')
    assert code == 0 and 'leader' in msg, msg

    r = w.run('pg-1', HAPG_LAUNCHER=w.fake_launcher)
    assert r.returncode == 0, r.stderr
    assert 'decision: clone' in r.stderr and 'initdb' not in r.stderr, r.stderr
    assert os.path.exists(os.path.join(w.pgdata('pg-1'), 'standby.signal'))
    assert not os.path.exists(w.pgdata('pg-1') + ep.CLONE_SUFFIX)
    sysid = w.get('/api/v1/namespaces/default/configmaps/pg-bootstrap')['data']['system_identifier']
    assert re.search(r'^Database system identifier:\s*%s' % sysid, controldata(w, 'pg-1'), re.M)
    conf = ep.parse_conf(open(os.path.join(w.pgdata('pg-1'), 'postgresql.conf')).read())
    assert conf['hapg.member_name'] == 'pg-1'
    auto = open(os.path.join(w.pgdata('pg-1'), 'postgresql.auto.conf')).read()
    assert 'application_name=pg-1' in auto and 'user=replicator' in auto

    w.start('pg-1')
    try:
        harness.wait_for(lambda: w.psql('pg-0', "SELECT state FROM pg_stat_replication "
                                                "WHERE application_name = 'pg-1'", check=False)
                         == 'streaming', 60, 'pg-1 to stream from pg-0')
    except AssertionError:
        raise AssertionError('pg-1 does not stream; its log:\n%s' % w.log('pg-1')[-4000:])
    harness.wait_for(lambda: w.probe('pg-1', 'ready')[0] == 0, 30, 'pg-1 ready')
    code, msg = w.probe('pg-1', 'ready')
    assert 'replica streaming' in msg, msg
    for m in ('pg-0', 'pg-1'):
        code, msg = w.probe(m, 'live')
        assert code == 0 and 'alive' in msg, (m, msg)
    harness.wait_for(lambda: (w.get('/api/v1/namespaces/default/pods/pg-1')['metadata']
                              .get('labels') or {}).get('role') == 'replica', 30,
                     'pg-1 labelled role=replica')
    assert w.get('/api/v1/namespaces/default/pods/pg-0')['metadata']['labels'].get('role') == 'primary'

    # a member whose server is down: not ready, but alive (never kill a recovery)
    w.procs['pg-1'].send_signal(signal.SIGTERM)
    w.procs['pg-1'].wait(timeout=60)
    assert w.probe('pg-1', 'ready')[0] == 1
    code, msg = w.probe('pg-1', 'live')
    assert code == 0 and 'not running' in msg, msg
    w.start('pg-1')
    harness.wait_for(lambda: w.probe('pg-1', 'ready')[0] == 0, 60, 'pg-1 ready again')

    # an empty volume: alive while the entrypoint bootstraps it (here it cannot
    # reach the API and waits), not alive once nothing restores it
    w.make_pod('pg-2')
    dead_port = str(harness.free_port())
    w.start('pg-2', KUBERNETES_SERVICE_PORT=dead_port, HAPG_BOOTSTRAP_TIMEOUT='60')
    harness.wait_for(lambda: 'cannot read the cluster' in w.log('pg-2'), 30, 'pg-2 waiting for the API')
    code, msg = w.probe('pg-2', 'live')
    assert code == 0 and 'bootstrapping' in msg, msg
    assert w.probe('pg-2', 'ready')[0] == 1
    w.procs['pg-2'].send_signal(signal.SIGTERM)
    assert w.procs['pg-2'].wait(timeout=30) == 1
    assert not os.path.exists(os.path.join(w.pod_dir('pg-2'), 'volume', 'run', 'bootstrap.pid'))
    code, msg = w.probe('pg-2', 'live')
    assert code == 1 and 'no data directory' in msg, msg

    # the watchdog: stop hapg's worker on pg-1, liveness fails, resume it
    pid = int(w.psql('pg-1', 'SELECT worker_pid FROM hapg_status()'))
    os.kill(pid, signal.SIGSTOP)
    try:
        harness.wait_for(lambda: w.probe('pg-1', 'live', HAPG_PROBE_STALL='2')[0] == 1, 20,
                         'liveness to fail with the worker stopped')
        code, msg = w.probe('pg-1', 'live', HAPG_PROBE_STALL='2')
        assert 'stalled' in msg, msg
    finally:
        os.kill(pid, signal.SIGCONT)
    harness.wait_for(lambda: w.probe('pg-1', 'live', HAPG_PROBE_STALL='2')[0] == 0, 20,
                     'liveness to pass again')

    # the replica loses its data directory: liveness fails, and the restarted
    # container's entrypoint clones the leader again
    gone = w.pgdata('pg-1') + '.gone'
    os.rename(w.pgdata('pg-1'), gone)
    code, msg = w.probe('pg-1', 'live')
    assert code == 1 and 'no data directory' in msg, msg
    w.procs['pg-1'].send_signal(signal.SIGTERM)         # what the kubelet does next
    w.procs['pg-1'].wait(timeout=60)
    shutil.rmtree(gone)
    w.start('pg-1')
    harness.wait_for(lambda: w.psql('pg-0', "SELECT state FROM pg_stat_replication "
                                            "WHERE application_name = 'pg-1'", check=False)
                     == 'streaming', 60, 'pg-1 re-cloned and streaming')
    assert w.log('pg-1').count('decision: clone') == 1, w.log('pg-1')[-3000:]


def test_double_saw_only_calls_the_role_grants(world, objs):
    """What the service account actually did, by the double's counters (and,
    when the double enforces RBAC, nothing it did was refused)."""
    all_stats = world.double.stats()
    stats = (all_stats.get('by_user_resource') or {}).get(SA_USER) or {}
    if not stats:
        pytest.skip('no requests recorded (the earlier tests did not run)')
    if world.rbac_applied:
        forbidden = (all_stats.get('forbidden') or {}).get(SA_USER) or {}
        assert not any(n for verbs in forbidden.values() for n in verbs.values()), \
            'the API double refused requests under kubernetes/rbac.yaml: %s' % forbidden
    _, rules = role_rules()
    for res, verbs in stats.items():
        for verb, n in verbs.items():
            if not n:
                continue
            group = COORD if res == 'leases' else ''
            assert any(group in r['apiGroups'] and res in r['resources'] and verb in r['verbs']
                       for r in rules), 'the service account made %d %s %s requests the Role ' \
                                        'does not grant' % (n, verb, res)
