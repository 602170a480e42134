"""What the tests of kubernetes/ share: the entrypoint loaded as a module,
the rendered manifests (fixture objs), the table of hapg's Kubernetes API
call sites and the Role that must grant them."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
K8S = os.path.join(REPO, 'kubernetes')
sys.path.insert(0, HERE)

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


# --------------------------------------------------------------------------
# RBAC

# Every Kubernetes API call site in src/*.c: (file, pattern, how many times
# it occurs, verb, group, resource, name).  name: '{cluster}' (the Lease),
# '{member}' (our own Pod), '*' (any Pod), None (no name: create, list,
# watch by label).  The paths are built in src/kwrite.c.
# test_api_call_table_matches_the_sources keeps this honest.
HAPG_API_CALLS = [
    ('src/view.c', r'kube_request\(&w->kube, "GET", hapg_lease_path\(w->cfg\.namespace, w->cfg\.cluster\)', 1,
     'get', COORD, 'leases', '{cluster}'),
    ('src/view.c', r'kube_watch_start\(w->lease_watch', 1, 'watch', COORD, 'leases', '{cluster}'),
    ('src/view.c', r'kube_request\(&w->kube, "GET", hapg_pods_path\(w->cfg\.namespace, w->cfg\.cluster\)', 1,
     'list', '', 'pods', None),
    ('src/view.c', r'kube_watch_start\(w->pod_watch', 1, 'watch', '', 'pods', None),
    ('src/kwrite.c', r'kube_request\(&w->kube, "POST", hapg_leases_path\(w->cfg\.namespace\)', 1,
     'create', COORD, 'leases', None),
    ('src/kwrite.c', r'kube_request\(&w->kube, "PUT", hapg_lease_path\(w->cfg\.namespace, w->cfg\.cluster\)', 2,
     'update', COORD, 'leases', '{cluster}'),
    # patch_pod: our own Pod (status, candidacy) and, on the leader, a stale
    # role=primary label on a lost leader's Pod
    ('src/kwrite.c', r'kube_request\(&w->kube, "PATCH", hapg_pod_path\(w->cfg\.namespace, name\)', 1,
     'patch', '', 'pods', '*'),
    ('src/guard.c', r'kube_request\(kc, "GET", hapg_lease_path\(ns, hapg_cluster_name\)', 1,
     'get', COORD, 'leases', '{cluster}'),
    ('src/guard.c', r'kube_request\(kc, "GET", hapg_pod_path\(ns, li\.view\.holder\)', 1, 'get', '', 'pods', '*'),
    ('src/handover.c', r'kube_request\(kc, "GET", path', 1, 'get', COORD, 'leases', '{cluster}'),
    ('src/handover.c', r'kube_request\(kc, "PUT", path', 1, 'update', COORD, 'leases', '{cluster}'),
]


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


