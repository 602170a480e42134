"""The Role in kubernetes/rbac.yaml grants every Kubernetes API call hapg
makes and nothing else.

    /usr/bin/python3 -m pytest tests/test_api_calls.py

What is checked
* The table of hapg's API call sites (HAPG_API_CALLS in tests/k8s_common.py)
  matches the sources: every kube_request / kube_watch_start call in src/*.c
  is in it, and the paths are built as it assumes (src/kwrite.c).
* The Role grants every call hapg makes and the entrypoint makes (its
  API_CALLS, which its client enforces), and nothing else: no delete, no
  Secrets, no wildcard; it is bound to the StatefulSet's service account.
"""

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k8s_common import (  # noqa: E402
    HAPG_API_CALLS, REPO, cluster_name, ep, needed_calls, objs,
    role_rules, sts)


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
    paths = open(os.path.join(REPO, 'src', 'kwrite.c')).read()
    # what the table assumes about the paths (all built in src/kwrite.c)
    assert re.search(r'hapg_lease_path\(const char \*ns, const char \*name\)\s*\{\s*return psprintf\('
                     r'"/apis/coordination\.k8s\.io/v1/namespaces/%s/leases/%s"', paths)
    assert re.search(r'hapg_leases_path\(const char \*ns\)\s*\{\s*return psprintf\('
                     r'"/apis/coordination\.k8s\.io/v1/namespaces/%s/leases"', paths)
    assert re.search(r'hapg_pod_path\(const char \*ns, const char \*name\)\s*\{\s*return psprintf\('
                     r'"/api/v1/namespaces/%s/pods/%s"', paths)
    assert re.search(r'hapg_pods_path\(const char \*ns, const char \*cluster\).*?'
                     r'"/api/v1/namespaces/%s/pods\?labelSelector=', paths, re.S)
    assert re.search(r'hapg_lease_watch_path\(.*?"%s\?watch=1[^"]*fieldSelector=%s.*?hapg_leases_path\(ns\)',
                     paths, re.S)
    assert 'psprintf("metadata.name=%s", name)' in paths
    handover = open(os.path.join(REPO, 'src', 'handover.c')).read()
    assert re.search(r'\*path = hapg_lease_path\(hapg_effective_namespace\(\), hapg_cluster_name\)', handover)


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
