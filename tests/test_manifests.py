"""The Kubernetes manifests (kubernetes/) hang together.

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
  DefineCustom*Variable calls in src/settings.c), with a value of the right
  type and within range; every other setting is one PostgreSQL 15 knows
  (`postgres --describe-config`).  A misspelt name fails (self-test).

The Role and the API call sites: tests/test_api_calls.py; the entrypoint:
tests/test_entrypoint.py.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k8s_common import (  # noqa: E402
    CONTAINERFILE, K8S, PGBIN, PROBE, PYTHON, REPO,
    cluster_name, configmap_conf, container, ep, objs, one,
    sts, subset, template_labels)


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
            assert p['port'] == ports.get(p['targetPort'], p['targetPort'])
            assert p['targetPort'] in ports or p['targetPort'] in ports.values(), svc['metadata']['name']
    # postgresql, and hapg's HTTP endpoint (tests/test_http_manifests.py)
    assert ports == {'postgresql': 5432, 'http': 8008}


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
    # readiness is an httpGet of hapg's /readiness (tests/test_http_manifests.py)
    cmds = [p['exec']['command'] for p in probes if p and 'exec' in p]
    assert [cmd[1:] for cmd in cmds[:1]] == [['live']]
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

def max_members():
    """HAPG_MAX_MEMBERS, as src/common.h defines it."""
    text = open(os.path.join(REPO, 'src', 'common.h')).read()
    return int(re.search(r'#define HAPG_MAX_MEMBERS (\d+)', text).group(1))


def hapg_settings():
    """{name: (type, min, max, unit)} from the DefineCustom*Variable calls of src/settings.c."""
    text = open(os.path.join(REPO, 'src', 'settings.c')).read()
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
            ev = lambda s: eval(s, {'INT_MAX': 2 ** 31 - 1, 'HAPG_MAX_MEMBERS': max_members(),  # noqa: E731
                                    '__builtins__': {}})
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
