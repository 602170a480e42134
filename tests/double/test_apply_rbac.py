"""`kubectl apply -k` of every kind the manifests use, and RBAC enforcement.

The first half runs the real kubectl (client-side apply: GET, POST, then
PATCH with the last-applied-configuration annotation; delete -k) against
the TLS double.  The second half checks the RBAC authorizer over HTTP:
rule matching per verb, API group, resource, subresource, resourceName and
namespace, Role/ClusterRole through RoleBindings and ClusterRoleBindings,
the exact 403 Status kube-apiserver answers, watches refused before they
stream, and that users RBAC does not apply to (the admin, unmapped users)
are unaffected.
"""

import json
import os
import subprocess

import pytest

from doubletools import KUBECTL, ROOT, read_event, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason='kubectl not installed')

RBAC = 'rbac.authorization.k8s.io'
SA = 'system:serviceaccount:t:hapg'

# one object of every kind kubectl apply -k must handle (namespace set by kustomize)
MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: app
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: hapg
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
type: Opaque
stringData:
  password: s3cret
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
data:
  a: "1"
  b: "2"
---
apiVersion: v1
kind: Service
metadata:
  name: pg
  labels: {app: pg}
spec:
  clusterIP: None
  selector: {app: pg}
  ports:
  - name: postgres
    port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pg
spec:
  serviceName: pg
  replicas: 3
  selector:
    matchLabels: {app: pg}
  template:
    metadata:
      labels: {app: pg}
    spec:
      serviceAccountName: hapg
      containers:
      - name: postgres
        image: hapg:dev
        env:
        - name: A
          value: "1"
        ports:
        - containerPort: 5432
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: pg
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: pg, tier: db}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: hapg
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: hapg
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: hapg
subjects:
- kind: ServiceAccount
  name: hapg
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: hapg-app-reader
rules:
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: hapg-app-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: hapg-app-reader
subjects:
- kind: ServiceAccount
  name: hapg
  namespace: app
"""
KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: app
resources:
- all.yaml
"""
# kind -> (API path of the object in namespace app, kubectl name)
OBJECTS = {
    'Namespace': ('/api/v1/namespaces/app', 'namespace/app'),
    'ServiceAccount': ('/api/v1/namespaces/app/serviceaccounts/hapg', 'serviceaccount/hapg'),
    'Secret': ('/api/v1/namespaces/app/secrets/creds', 'secret/creds'),
    'ConfigMap': ('/api/v1/namespaces/app/configmaps/conf', 'configmap/conf'),
    'Service': ('/api/v1/namespaces/app/services/pg', 'service/pg'),
    'StatefulSet': ('/apis/apps/v1/namespaces/app/statefulsets/pg', 'statefulset.apps/pg'),
    'PodDisruptionBudget': ('/apis/policy/v1/namespaces/app/poddisruptionbudgets/pg',
                            'poddisruptionbudget.policy/pg'),
    'Role': ('/apis/%s/v1/namespaces/app/roles/hapg' % RBAC, 'role.%s/hapg' % RBAC),
    'RoleBinding': ('/apis/%s/v1/namespaces/app/rolebindings/hapg' % RBAC, 'rolebinding.%s/hapg' % RBAC),
    'ClusterRole': ('/apis/%s/v1/clusterroles/hapg-app-reader' % RBAC,
                    'clusterrole.%s/hapg-app-reader' % RBAC),
    'ClusterRoleBinding': ('/apis/%s/v1/clusterrolebindings/hapg-app-reader' % RBAC,
                           'clusterrolebinding.%s/hapg-app-reader' % RBAC),
}
LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration'


def kustomization(tmp_path, manifest=MANIFEST):
    d = tmp_path / 'k'
    d.mkdir(exist_ok=True)
    (d / 'kustomization.yaml').write_text(KUSTOMIZATION)
    (d / 'all.yaml').write_text(manifest)
    return str(d)


def applied(out):
    """{'configmap/conf': 'created', ...} from kubectl apply's output."""
    return dict(line.rsplit(' ', 1) for line in out.splitlines() if line.strip())


def get(d, path, token='tok-admin'):
    code, _, body = d.call('GET', path, token=token)
    return body if code == 200 else None


# --- kubectl apply -k -------------------------------------------------------------

def test_apply_kustomization_reapply_change_delete(kubectl, tls_double, tmp_path):
    d = tls_double
    k = kustomization(tmp_path)
    out = applied(kubectl('apply', '-k', k).stdout)
    assert out == {name: 'created' for _, name in OBJECTS.values()}
    objs = {kind: get(d, path) for kind, (path, _) in OBJECTS.items()}
    for kind, o in objs.items():
        assert o is not None and o['kind'] == kind, kind
        assert json.loads(o['metadata']['annotations'][LAST_APPLIED])['kind'] == kind
    # kept as they are, with the server-side fields the real strategies set
    assert objs['Secret']['data'] == {'password': 'czNjcmV0'} and 'stringData' not in objs['Secret']
    assert objs['Secret']['type'] == 'Opaque'
    sts = objs['StatefulSet']
    assert sts['metadata']['generation'] == 1 and sts['status'] == {'replicas': 0, 'availableReplicas': 0}
    assert sts['spec']['template']['spec']['containers'][0]['image'] == 'hapg:dev'
    assert sts['spec']['volumeClaimTemplates'][0]['metadata']['name'] == 'data'
    assert objs['PodDisruptionBudget']['spec']['maxUnavailable'] == 1
    assert objs['RoleBinding']['subjects'] == [{'kind': 'ServiceAccount', 'name': 'hapg', 'namespace': 'app'}]
    assert objs['Role']['rules'][1]['verbs'] == ['get', 'list', 'watch', 'create', 'update']
    assert 'namespace' not in objs['ClusterRole']['metadata']
    assert d.call('GET', '/api/v1/namespaces/app/pods')[2]['items'] == []   # no controllers
    # kubectl get on every kind (server-side printing)
    for kind, (_, name) in OBJECTS.items():
        res = name.split('/')[0]
        lines = kubectl('get', res, '-n', 'app').stdout.splitlines()
        assert lines and lines[0].startswith('NAME'), (kind, lines)
        assert any(ln.split()[0] == name.split('/')[1] for ln in lines[1:]), (kind, lines)
    assert kubectl('get', 'sts', '-n', 'app').stdout.splitlines()[1].split()[:2] == ['pg', '0/3']
    row = kubectl('get', 'rolebinding', '-n', 'app').stdout.splitlines()[1].split()
    assert row[:2] == ['hapg', 'Role/hapg']
    # apply again: nothing changes (Secret: stringData is always re-sent; PDB: its selector has
    # patchStrategy=replace, so kubectl always sends it: "configured" as on a real cluster)
    out = applied(kubectl('apply', '-k', k).stdout)
    assert {n: v for n, v in out.items() if v != 'unchanged'} == {
        'secret/creds': 'configured', 'poddisruptionbudget.policy/pg': 'configured'}
    for kind, (path, _) in OBJECTS.items():
        assert get(d, path)['metadata']['resourceVersion'] == objs[kind]['metadata']['resourceVersion'], kind
    # a change: three-way strategic merge patches (removed keys and list items go away)
    changed = (MANIFEST.replace('  a: "1"\n  b: "2"\n', '  a: "1"\n  c: "3"\n')
               .replace('verbs: [get, list, watch, create, update]', 'verbs: [get, list, watch, create]')
               .replace('        env:\n        - name: A\n          value: "1"\n', '')
               .replace('replicas: 3', 'replicas: 5')
               .replace('matchLabels: {app: pg, tier: db}', 'matchLabels: {app: pg}'))
    out = applied(kubectl('apply', '-k', kustomization(tmp_path, changed)).stdout)
    assert out['configmap/conf'] == 'configured' and out['role.%s/hapg' % RBAC] == 'configured'
    assert out['statefulset.apps/pg'] == 'configured' and out['serviceaccount/hapg'] == 'unchanged'
    assert get(d, OBJECTS['ConfigMap'][0])['data'] == {'a': '1', 'c': '3'}
    assert get(d, OBJECTS['Role'][0])['rules'][1]['verbs'] == ['get', 'list', 'watch', 'create']
    sts = get(d, OBJECTS['StatefulSet'][0])
    assert sts['spec']['replicas'] == 5 and 'env' not in sts['spec']['template']['spec']['containers'][0]
    assert sts['metadata']['generation'] == 2
    assert get(d, OBJECTS['PodDisruptionBudget'][0])['spec']['selector'] == {'matchLabels': {'app': 'pg'}}
    # delete -k: the namespace is Terminating for a moment, then everything is gone
    p = kubectl('delete', '-k', k)
    assert p.stdout.count('deleted') == len(OBJECTS), p.stdout
    assert wait_for(lambda: all(get(d, path) is None for path, _ in OBJECTS.values()), 10)
    assert 'app' not in kubectl('get', 'ns').stdout


def test_apply_the_repository_kustomization(kubectl, tls_double):
    """kubernetes/ of this repository (when it exists): every object it defines is stored."""
    kdir = os.path.join(ROOT, 'kubernetes')
    if not os.path.exists(os.path.join(kdir, 'kustomization.yaml')):
        pytest.skip('no kubernetes/kustomization.yaml in %s yet' % ROOT)
    rendered = subprocess.run([KUBECTL, 'kustomize', kdir], capture_output=True, text=True, timeout=60,
                              env={'PATH': '/usr/bin:/bin', 'HOME': '/tmp'})
    assert rendered.returncode == 0, rendered.stderr
    kubectl('apply', '-k', kdir)
    listing = json.loads(kubectl('get', '-f', '-', '-o', 'json', stdin=rendered.stdout).stdout)
    items = listing['items'] if listing.get('kind') == 'List' else [listing]
    names = sorted('%s/%s' % (i['kind'], i['metadata']['name']) for i in items)
    import yaml
    want = sorted('%s/%s' % (o['kind'], o['metadata']['name'])
                  for o in yaml.safe_load_all(rendered.stdout) if o)
    assert names == want
    out = applied(kubectl('apply', '-k', kdir).stdout)
    assert set(out.values()) <= {'unchanged', 'configured'}, out


def test_server_side_apply_is_refused_clearly(kubectl, tls_double, tmp_path):
    f = tmp_path / 'cm.yaml'
    f.write_text('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: v\n')
    p = kubectl('apply', '--server-side', '-f', str(f), check=False)
    assert p.returncode != 0 and 'does not implement server-side apply' in p.stderr, p.stderr
    kubectl('create', '-f', str(f))
    code, _, body = tls_double.call('PATCH', '/api/v1/namespaces/kt/configmaps/ssa', b'{"data":{"k":"w"}}',
                                    ctype='application/apply-patch+yaml')
    assert code == 415 and body['reason'] == 'UnsupportedMediaType'
    assert 'use client-side "kubectl apply"' in body['message']


# --- discovery and generic objects over HTTP ------------------------------------------

def test_discovery_lists_every_kind(double):
    groups = {g['name']: g for g in double.call('GET', '/apis')[2]['groups']}
    assert {'apps', 'policy', RBAC, 'coordination.k8s.io'} <= set(groups)
    assert groups['apps']['preferredVersion'] == {'groupVersion': 'apps/v1', 'version': 'v1'}

    def resources(gv):
        out = double.call('GET', ('/apis/' if '/' in gv else '/api/') + gv)[2]
        assert out['groupVersion'] == gv
        return {r['name']: r for r in out['resources']}
    core, apps = resources('v1'), resources('apps/v1')
    policy, rbac = resources('policy/v1'), resources(RBAC + '/v1')
    every = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
    for res, name, kind, namespaced in ((core, 'serviceaccounts', 'ServiceAccount', True),
                                        (core, 'secrets', 'Secret', True),
                                        (apps, 'statefulsets', 'StatefulSet', True),
                                        (policy, 'poddisruptionbudgets', 'PodDisruptionBudget', True),
                                        (rbac, 'roles', 'Role', True),
                                        (rbac, 'rolebindings', 'RoleBinding', True),
                                        (rbac, 'clusterroles', 'ClusterRole', False),
                                        (rbac, 'clusterrolebindings', 'ClusterRoleBinding', False)):
        r = res[name]
        assert (r['kind'], r['namespaced'], sorted(r['verbs'])) == (kind, namespaced, every), name
    assert apps['statefulsets']['shortNames'] == ['sts']
    assert policy['poddisruptionbudgets']['shortNames'] == ['pdb']
    assert apps['statefulsets/status']['verbs'] == ['get', 'patch', 'update']
    assert core['serviceaccounts']['shortNames'] == ['sa']
    authz = resources('authorization.k8s.io/v1')
    assert authz['selfsubjectaccessreviews']['verbs'] == ['create']
    paths = double.call('GET', '/openapi/v3')[2]['paths']
    assert {'apis/apps/v1', 'apis/policy/v1', 'apis/%s/v1' % RBAC} <= set(paths)
    doc = double.call('GET', '/openapi/v3/apis/%s/v1' % RBAC)[2]
    assert '/apis/%s/v1/clusterroles/{name}' % RBAC in doc['paths']
    assert '/apis/%s/v1/namespaces/{namespace}/roles/{name}' % RBAC in doc['paths']


def test_generic_objects_status_secrets_and_validation(double):
    sts = {'apiVersion': 'apps/v1', 'kind': 'StatefulSet', 'metadata': {'name': 's'},
           'spec': {'replicas': 1}, 'status': {'replicas': 7}}
    code, _, o = double.call('POST', '/apis/apps/v1/namespaces/t/statefulsets', sts)
    assert code == 201 and o['status'] == {'replicas': 0, 'availableReplicas': 0}
    o['spec']['replicas'], o['status']['replicas'] = 2, 9
    code, _, o = double.call('PUT', '/apis/apps/v1/namespaces/t/statefulsets/s', o)
    assert code == 200 and o['spec']['replicas'] == 2 and o['status']['replicas'] == 0
    assert o['metadata']['generation'] == 2
    code, _, o = double.call('PATCH', '/apis/apps/v1/namespaces/t/statefulsets/s/status',
                             {'status': {'replicas': 2, 'readyReplicas': 2}},
                             ctype='application/merge-patch+json')
    assert code == 200 and o['status']['readyReplicas'] == 2 and o['metadata']['generation'] == 2
    lst = double.call('GET', '/apis/apps/v1/statefulsets')[2]
    assert lst['kind'] == 'StatefulSetList' and [i['metadata']['name'] for i in lst['items']] == ['s']
    # Secret: stringData merged into data (base64), data must be base64
    code, _, o = double.call('POST', '/api/v1/namespaces/t/secrets',
                             {'metadata': {'name': 'x'}, 'data': {'a': 'YQ=='}, 'stringData': {'b': 'b'}})
    assert code == 201 and o['data'] == {'a': 'YQ==', 'b': 'Yg=='} and o['type'] == 'Opaque'
    code, _, o = double.call('POST', '/api/v1/namespaces/t/secrets', {'metadata': {'name': 'y'},
                                                                        'data': {'a': 'not base64!'}})
    assert code == 400 and 'illegal base64 data at input byte 3' in o['message']
    # RBAC objects: path-segment names, rule and roleRef validation
    roles = '/apis/%s/v1/namespaces/t/roles' % RBAC
    code, _, o = double.call('POST', roles, {'metadata': {'name': 'system:x'}, 'rules': [
        {'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get']}]})
    assert code == 201
    code, _, o = double.call('POST', roles, {'metadata': {'name': 'r'}, 'rules': [
        {'apiGroups': [''], 'resources': ['pods']}]})
    assert code == 422 and o['message'] == ('Role.%s "r" is invalid: rules[0].verbs: Required value: '
                                            'verbs must contain at least one value' % RBAC)
    code, _, o = double.call('POST', roles, {'metadata': {'name': 'r'}, 'rules': [{'verbs': 'get'}]})
    assert code == 400
    assert 'cannot unmarshal string into Go struct field PolicyRule.rules.verbs' in o['message']
    rbs = '/apis/%s/v1/namespaces/t/rolebindings' % RBAC
    code, _, o = double.call('POST', rbs, {'metadata': {'name': 'b'}, 'roleRef': {
        'apiGroup': RBAC, 'kind': 'Role', 'name': 'system:x'}, 'subjects': [{'kind': 'User', 'name': 'u'}]})
    assert code == 201 and o['subjects'] == [{'kind': 'User', 'name': 'u', 'apiGroup': RBAC}]
    o['roleRef']['name'] = 'other'
    code, _, o = double.call('PUT', rbs + '/b', o)
    assert code == 422 and o['message'] == (
        'RoleBinding.%s "b" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:"%s", Kind:"Role", '
        'Name:"other"}: cannot change roleRef' % (RBAC, RBAC))
    code, _, o = double.call('POST', '/apis/%s/v1/clusterrolebindings' % RBAC, {
        'metadata': {'name': 'c'}, 'roleRef': {'apiGroup': RBAC, 'kind': 'Role', 'name': 'x'},
        'subjects': [{'kind': 'ServiceAccount', 'name': 'hapg'}]})
    assert code == 422 and 'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"' \
        in o['message'] and 'subjects[0].namespace: Required value' in o['message']
    assert double.call('GET', '/apis/%s/v1/clusterroles/nope' % RBAC)[2]['message'] == \
        'clusterroles.%s "nope" not found' % RBAC


def test_namespace_deletion_terminates_then_purges(double):
    double.call('POST', '/api/v1/namespaces/gone/configmaps', {'metadata': {'name': 'c'}})
    code, _, ns = double.call('DELETE', '/api/v1/namespaces/gone')
    assert code == 200 and ns['kind'] == 'Namespace' and ns['status']['phase'] == 'Terminating'
    assert ns['metadata']['deletionTimestamp']
    code, _, o = double.call('POST', '/api/v1/namespaces/gone/configmaps', {'metadata': {'name': 'd'}})
    assert code == 403 and o['reason'] == 'Forbidden' and o['message'] == (
        'configmaps "d" is forbidden: unable to create new content in namespace gone because it is being '
        'terminated')
    assert double.call('DELETE', '/api/v1/namespaces/gone/configmaps/c')[0] == 200
    assert double.call('DELETE', '/api/v1/namespaces/gone')[0] == 409
    assert wait_for(lambda: double.call('GET', '/api/v1/namespaces/gone')[0] == 404, 5)
    assert double.call('POST', '/api/v1/namespaces/gone/configmaps', {'metadata': {'name': 'c'}})[0] == 201


# --- RBAC --------------------------------------------------------------------------------

LEASES_T = '/apis/coordination.k8s.io/v1/namespaces/t/leases'
PODS_T = '/api/v1/namespaces/t/pods'


def put(d, path, obj):
    """Create or replace (as the admin)."""
    code, _, cur = d.call('GET', path)
    if code == 404:
        code, _, out = d.call('POST', path.rsplit('/', 1)[0], obj)
    else:
        obj = dict(obj, metadata=dict(obj['metadata'], resourceVersion=cur['metadata']['resourceVersion']))
        code, _, out = d.call('PUT', path, obj)
    assert code in (200, 201), out
    return out


def role(d, name, rules, ns='t', cluster=False):
    path = ('/apis/%s/v1/clusterroles/%s' % (RBAC, name) if cluster else
            '/apis/%s/v1/namespaces/%s/roles/%s' % (RBAC, ns, name))
    return put(d, path, {'metadata': {'name': name}, 'rules': rules})


def binding(d, name, ref_kind, ref_name, subjects, ns='t', cluster=False):
    path = ('/apis/%s/v1/clusterrolebindings/%s' % (RBAC, name) if cluster else
            '/apis/%s/v1/namespaces/%s/rolebindings/%s' % (RBAC, ns, name))
    return put(d, path, {'metadata': {'name': name}, 'subjects': subjects,
                         'roleRef': {'apiGroup': RBAC, 'kind': ref_kind, 'name': ref_name}})


HAPG_RULES = [{'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list', 'watch', 'patch']},
              {'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'],
               'verbs': ['get', 'list', 'watch', 'create', 'update']}]
SA_SUBJECT = [{'kind': 'ServiceAccount', 'name': 'hapg', 'namespace': 't'}]


@pytest.fixture
def rdouble(make_double):
    """A double where pg-0 is subject to RBAC as system:serviceaccount:t:hapg (--rbac), with
    hapg's Role bound to that ServiceAccount in namespace t, one Pod and one Lease."""
    d = make_double(extra=['--rbac', 'pg-0=' + SA])
    role(d, 'hapg', HAPG_RULES)
    binding(d, 'hapg', 'Role', 'hapg', SA_SUBJECT)
    assert d.call('POST', PODS_T, {'metadata': {'name': 'pg-0'}})[0] == 201
    code = d.call('POST', LEASES_T, {'metadata': {'name': 'c1'}, 'spec': {'holderIdentity': 'pg-0'}})[0]
    assert code == 201
    return d


def forbidden_body(user, verb, resource, group='', ns='t', name=''):
    """The 403 Status kube-apiserver answers."""
    qualified = resource.split('/')[0] + ('.' + group if group else '')
    scope = 'in the namespace "%s"' % ns if ns else 'at the cluster scope'
    head = '%s "%s" is forbidden' % (qualified, name) if name else '%s is forbidden' % qualified
    details = {'name': name} if name else {}
    if group:
        details['group'] = group
    details['kind'] = resource.split('/')[0]
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': '%s: User "%s" cannot %s resource "%s" in API group "%s" %s' % (
                head, user, verb, resource, group, scope),
            'reason': 'Forbidden', 'details': details, 'code': 403}


def test_rbac_verbs_resources_and_the_403_status(rdouble):
    d = rdouble
    lease = d.call('GET', LEASES_T + '/c1', token='tok-0')[2]
    assert lease['spec']['holderIdentity'] == 'pg-0'
    assert d.call('GET', LEASES_T, token='tok-0')[0] == 200
    lease['spec']['holderIdentity'] = 'pg-1'
    assert d.call('PUT', LEASES_T + '/c1', lease, token='tok-0')[0] == 200              # update
    assert d.call('POST', LEASES_T, {'metadata': {'name': 'c2'}}, token='tok-0')[0] == 201
    code, _, body = d.call('PATCH', LEASES_T + '/c1', {'spec': {'holderIdentity': 'x'}}, token='tok-0',
                           ctype='application/merge-patch+json')                       # patch != update
    assert (code, body) == (403, forbidden_body(SA, 'patch', 'leases', 'coordination.k8s.io', name='c1'))
    code, _, body = d.call('DELETE', LEASES_T + '/c1', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'delete', 'leases', 'coordination.k8s.io', name='c1'))
    code, _, body = d.call('DELETE', LEASES_T, token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'deletecollection', 'leases', 'coordination.k8s.io'))
    assert d.call('PATCH', PODS_T + '/pg-0', {'metadata': {'labels': {'role': 'primary'}}}, token='tok-0',
                  ctype='application/merge-patch+json')[0] == 200
    code, _, body = d.call('PUT', PODS_T + '/pg-0', d.call('GET', PODS_T + '/pg-0')[2], token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'update', 'pods', name='pg-0'))
    code, _, body = d.call('POST', PODS_T, {'metadata': {'name': 'p'}}, token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'create', 'pods'))
    code, _, body = d.call('GET', '/api/v1/namespaces/t/configmaps', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'list', 'configmaps'))
    # subresources are separate resources: pods does not grant pods/status
    code, _, body = d.call('PATCH', PODS_T + '/pg-0/status', {'status': {'phase': 'Running'}}, token='tok-0',
                           ctype='application/merge-patch+json')
    assert (code, body) == (403, forbidden_body(SA, 'patch', 'pods/status', name='pg-0'))
    role(d, 'hapg', HAPG_RULES + [{'apiGroups': [''], 'resources': ['*/status'], 'verbs': ['patch']}])
    assert d.call('PATCH', PODS_T + '/pg-0/status', {'status': {'phase': 'Running'}}, token='tok-0',
                  ctype='application/merge-patch+json')[0] == 200
    # the binding's namespace only; cluster-wide requests are "at the cluster scope"
    d.call('POST', '/api/v1/namespaces/u/pods', {'metadata': {'name': 'p'}})
    code, _, body = d.call('GET', '/api/v1/namespaces/u/pods/p', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'get', 'pods', ns='u', name='p'))
    code, _, body = d.call('GET', '/api/v1/pods', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'list', 'pods', ns=''))
    code, _, body = d.call('GET', '/api/v1/namespaces/t', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'get', 'namespaces', ns='t', name='t'))
    # role changes apply to the next request
    role(d, 'hapg', [r for r in HAPG_RULES if r['resources'] == ['pods']])
    code, _, body = d.call('GET', LEASES_T + '/c1', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'get', 'leases', 'coordination.k8s.io', name='c1'))
    # discovery stays open; denials are counted per token user
    assert d.call('GET', '/apis/coordination.k8s.io/v1', token='tok-0')[0] == 200
    st = d.admin('GET', '/_double/stats')[1]
    assert st['forbidden']['pg-0']['leases'] == {'patch': 1, 'delete': 1, 'deletecollection': 1, 'get': 1}
    assert st['by_user']['pg-0']['patch'] >= 3


def test_rbac_wildcards_resource_names_and_field_selector_names(rdouble):
    d = rdouble
    d.call('POST', LEASES_T, {'metadata': {'name': 'c2'}})
    role(d, 'hapg', [{'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'], 'resourceNames': ['c1'],
                      'verbs': ['get', 'update', 'watch', 'list']},
                     {'apiGroups': ['*'], 'resources': ['*'], 'verbs': ['deletecollection']},
                     {'apiGroups': [''], 'resources': ['pods'], 'verbs': ['*']}])
    assert d.call('GET', LEASES_T + '/c1', token='tok-0')[0] == 200
    assert d.call('GET', LEASES_T + '/c2', token='tok-0')[0] == 403
    # list/watch/create carry no name: resourceNames cannot match ...
    code, _, body = d.call('GET', LEASES_T, token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'list', 'leases', 'coordination.k8s.io'))
    assert d.call('POST', LEASES_T, {'metadata': {'name': 'c1x'}}, token='tok-0')[0] == 403
    # ... unless a fieldSelector names exactly one object (like kube-apiserver's RequestInfo)
    code, _, body = d.call('GET', LEASES_T + '?fieldSelector=metadata.name%3Dc1', token='tok-0')
    assert code == 200 and [i['metadata']['name'] for i in body['items']] == ['c1']
    code, _, body = d.call('GET', LEASES_T + '?fieldSelector=metadata.name%3Dc2', token='tok-0')
    assert (code, body) == (403, forbidden_body(SA, 'list', 'leases', 'coordination.k8s.io', name='c2'))
    conn, resp = d.watch(LEASES_T + '?watch=1&fieldSelector=metadata.name%3Dc1&timeoutSeconds=2',
                         token='tok-0')
    assert resp.status == 200 and read_event(resp)['object']['metadata']['name'] == 'c1'
    conn.close()
    assert d.call('DELETE', '/api/v1/namespaces/t/configmaps', token='tok-0')[0] == 200   # "*" groups
    assert d.call('POST', PODS_T, {'metadata': {'name': 'p'}}, token='tok-0')[0] == 201    # "*" verbs
    assert d.call('DELETE', PODS_T + '/p', token='tok-0')[0] == 200


def test_rbac_watch_is_refused_before_streaming(rdouble):
    d = rdouble
    conn, resp = d.watch('/api/v1/namespaces/t/configmaps?watch=1', token='tok-0')
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 403 and resp.headers['Content-Type'] == 'application/json'
    assert resp.headers.get('Transfer-Encoding') is None
    assert body == forbidden_body(SA, 'watch', 'configmaps')
    conn, resp = d.watch(LEASES_T + '?watch=1&timeoutSeconds=1', token='tok-0')   # allowed: streams
    assert resp.status == 200 and read_event(resp)['type'] == 'ADDED'
    conn.close()


def test_rbac_bindings_subjects_cluster_roles_and_missing_roles(make_double):
    d = make_double(extra=['--rbac', 'pg-0=' + SA, '--rbac', 'pg-1', '--rbac',
                           'pg-2=system:serviceaccount:other:x'])
    cm = '/api/v1/namespaces/%s/configmaps'
    for ns in ('t', 'u'):
        d.call('POST', cm % ns, {'metadata': {'name': 'c'}})
    role(d, 'cm-reader', [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['get']}], cluster=True)
    # a ClusterRole through a RoleBinding: only in the binding's namespace; User subjects by name
    binding(d, 'b', 'ClusterRole', 'cm-reader', [{'kind': 'User', 'name': 'pg-1'}] + SA_SUBJECT)
    for tok in ('tok-0', 'tok-1'):
        assert d.call('GET', cm % 't' + '/c', token=tok)[0] == 200
        assert d.call('GET', cm % 'u' + '/c', token=tok)[0] == 403
    assert d.call('GET', cm % 't' + '/c', token='tok-2')[0] == 403
    # Group subjects (the ServiceAccount groups) through a ClusterRoleBinding: everywhere
    binding(d, 'all-sa', 'ClusterRole', 'cm-reader', [{'kind': 'Group', 'name': 'system:serviceaccounts'}],
            cluster=True)
    assert d.call('GET', cm % 'u' + '/c', token='tok-2')[0] == 200
    assert d.call('GET', cm % 'u' + '/c', token='tok-1')[0] == 403        # pg-1 is a plain user
    # a RoleBinding's ServiceAccount subject without namespace means the binding's namespace
    role(d, 'lister', [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}], ns='other')
    binding(d, 'x', 'Role', 'lister', [{'kind': 'ServiceAccount', 'name': 'x'}], ns='other')
    assert d.call('GET', cm % 'other', token='tok-2')[0] == 200
    # a binding to a role that does not exist: the denial names it (like "RBAC: ..." reasons)
    binding(d, 'dangling', 'Role', 'nope', SA_SUBJECT, ns='u')
    code, _, body = d.call('GET', cm % 'u', token='tok-0')
    assert code == 403 and body['message'] == (
        'configmaps is forbidden: User "%s" cannot list resource "configmaps" in API group "" in the '
        'namespace "u": RBAC: role.%s "nope" not found' % (SA, RBAC))


def test_rbac_applies_only_to_mapped_users(rdouble):
    d = rdouble
    # the admin and users without a mapping: everything, although Roles exist
    for tok in ('tok-admin', 'tok-1'):
        assert d.call('GET', '/api/v1/namespaces/t/configmaps', token=tok)[0] == 200
        assert d.call('DELETE', LEASES_T + '/c1', token=tok)[0] in (200, 404)
    # mapping by admin endpoint, and unmapping
    assert d.admin('GET', '/_double/rbac')[1] == {'subjects': {'pg-0': SA}}
    code, out = d.admin('POST', '/_double/rbac', {'user': 'pg-1', 'as': SA})
    assert code == 201 and out['groups'] == ['system:serviceaccounts', 'system:serviceaccounts:t',
                                             'system:authenticated']
    assert d.call('GET', '/api/v1/namespaces/t/configmaps', token='tok-1')[0] == 403
    conn = d.connection(admin=True)
    code, _, who = d.call('GET', '/_double/whoami', token='tok-1', conn=conn)
    conn.close()
    assert who == {'user': 'pg-1', 'identity': SA, 'groups': out['groups'], 'rbac': True}
    assert d.admin('DELETE', '/_double/rbac?user=pg-1')[1] == {'removed': 1}
    assert d.call('GET', '/api/v1/namespaces/t/configmaps', token='tok-1')[0] == 200
    # faults and stats still address the token user, not the identity
    d.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'error', 'status': 503, 'count': 1})
    assert d.call('GET', PODS_T + '/pg-0', token='tok-0')[0] == 503
    assert d.call('GET', PODS_T + '/pg-0', token='tok-0')[0] == 200
    assert SA not in d.admin('GET', '/_double/stats')[1]['by_user']
    assert d.admin('DELETE', '/_double/rbac')[1] == {'removed': 1}
    assert d.call('GET', '/api/v1/namespaces/t/configmaps', token='tok-0')[0] == 200


def test_rbac_impersonation(rdouble):
    d = rdouble
    imp = {'Impersonate-User': SA}
    # the admin may impersonate; the impersonated identity is subject to RBAC
    assert d.call('GET', PODS_T + '/pg-0', headers=imp)[0] == 200
    code, _, body = d.call('GET', '/api/v1/namespaces/t/secrets', headers=imp)
    assert (code, body) == (403, forbidden_body(SA, 'list', 'secrets'))
    # a user RBAC applies to needs the impersonate verb
    code, _, body = d.call('GET', PODS_T, token='tok-0', headers={'Impersonate-User': 'bob'})
    assert code == 403 and body['message'] == (
        'users "bob" is forbidden: User "%s" cannot impersonate resource "users" in API group "" at the '
        'cluster scope' % SA)
    role(d, 'imp', [{'apiGroups': [''], 'resources': ['users'], 'verbs': ['impersonate'],
                     'resourceNames': ['bob']}], cluster=True)
    binding(d, 'imp', 'ClusterRole', 'imp', SA_SUBJECT, cluster=True)
    code, _, body = d.call('GET', PODS_T, token='tok-0', headers={'Impersonate-User': 'bob'})
    assert (code, body) == (403, forbidden_body('bob', 'list', 'pods'))


def test_kubectl_sees_the_403_and_can_i(kubectl, tls_double, tmp_path):
    d = tls_double
    role(d, 'hapg', HAPG_RULES, ns='kt')
    binding(d, 'hapg', 'Role', 'hapg', [{'kind': 'ServiceAccount', 'name': 'hapg', 'namespace': 'kt'}],
            ns='kt')
    assert d.admin('POST', '/_double/rbac', {'user': 'pg-0', 'as': 'system:serviceaccount:kt:hapg'})[0] == 201
    p = kubectl('get', 'configmaps', token='tok-0', check=False)
    assert p.returncode != 0 and p.stderr.strip() == (
        'Error from server (Forbidden): configmaps is forbidden: User "system:serviceaccount:kt:hapg" cannot '
        'list resource "configmaps" in API group "" in the namespace "kt"')
    assert kubectl('get', 'pods', token='tok-0').returncode == 0
    assert kubectl('get', 'leases', token='tok-0').returncode == 0
    as_sa = ['--as=system:serviceaccount:kt:hapg']
    assert kubectl('auth', 'can-i', 'update', 'leases', *as_sa).stdout.strip() == 'yes'
    p = kubectl('auth', 'can-i', 'delete', 'leases', *as_sa, check=False)
    assert (p.returncode, p.stdout.strip()) == (1, 'no')
    assert kubectl('auth', 'can-i', 'patch', 'pods', token='tok-0').stdout.strip() == 'yes'
    listing = kubectl('auth', 'can-i', '--list', *as_sa).stdout
    assert 'leases.coordination.k8s.io' in listing and '[get list watch create update]' in listing
    who = kubectl('auth', 'whoami', '-o', 'json', token='tok-0').stdout
    assert json.loads(who)['status']['userInfo']['username'] == 'system:serviceaccount:kt:hapg'
    assert kubectl('auth', 'can-i', 'delete', 'leases').stdout.strip() == 'yes'     # the admin
