"""The real kubectl (v1.32) against the double over HTTPS with CA verification and a bearer token."""

import json
import os
import subprocess

import pytest

from doubletools import KUBECTL

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason='kubectl not installed')

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: pg-0
  labels:
    app: x
    role: replica
spec:
  containers:
  - name: postgres
    image: postgres:15
"""
CM_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
data:
  k: v
"""


def test_kubectl_workflow(kubectl, tls_double, tmp_path):
    f = tmp_path / 'pod.yaml'
    f.write_text(POD_YAML)
    assert 'pod/pg-0 created' in kubectl('create', '-f', str(f)).stdout
    tls_double.call('POST', '/api/v1/namespaces/kt/pods',
                    {'metadata': {'name': 'other', 'labels': {'app': 'y', 'role': 'primary'}}})
    out = json.loads(kubectl('get', 'pods', '-o', 'json').stdout)
    assert out['kind'] == 'List' or out['kind'] == 'PodList'
    assert sorted(i['metadata']['name'] for i in out['items']) == ['other', 'pg-0']
    # server-side printing with a label column
    lines = kubectl('get', 'pods', '-L', 'role', '-l', 'app=x').stdout.splitlines()
    assert lines[0].split() == ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'ROLE']
    assert len(lines) == 2 and lines[1].split()[0] == 'pg-0' and lines[1].split()[-1] == 'replica'
    kubectl('label', 'pod', 'pg-0', 'role=primary', '--overwrite')
    kubectl('annotate', 'pod', 'pg-0', 'hapg.io/status={"role":"leader"}')
    kubectl('patch', 'pod', 'pg-0', '--type=merge', '-p', '{"metadata":{"labels":{"tier":"db"}}}')
    kubectl('patch', 'pod', 'pg-0', '--type=json', '-p',
            '[{"op":"add","path":"/metadata/labels/zone","value":"a"}]')
    kubectl('patch', 'pod', 'pg-0', '-p', '{"spec":{"containers":[{"name":"postgres","image":"postgres:16"}]}}')
    p = tls_double.call('GET', '/api/v1/namespaces/kt/pods/pg-0')[2]
    assert p['metadata']['labels'] == {'app': 'x', 'role': 'primary', 'tier': 'db', 'zone': 'a'}
    assert p['metadata']['annotations'] == {'hapg.io/status': '{"role":"leader"}'}
    assert p['spec']['containers'][0]['image'] == 'postgres:16'
    lines = kubectl('get', 'pods', '-L', 'role').stdout.splitlines()
    roles = {ln.split()[0]: ln.split()[-1] for ln in lines[1:]}
    assert roles == {'other': 'primary', 'pg-0': 'primary'}
    kubectl('label', 'pod', 'pg-0', 'role-')
    assert 'role' not in tls_double.call('GET', '/api/v1/namespaces/kt/pods/pg-0')[2]['metadata']['labels']
    # leases (coordination.k8s.io) by name and short kind
    tls_double.call('POST', '/apis/coordination.k8s.io/v1/namespaces/kt/leases',
                    {'metadata': {'name': 'hapg'}, 'spec': {'holderIdentity': 'pg-0', 'leaseDurationSeconds': 30}})
    lines = kubectl('get', 'lease').stdout.splitlines()
    assert lines[0].split() == ['NAME', 'HOLDER', 'AGE'] and lines[1].split()[:2] == ['hapg', 'pg-0']
    lease = json.loads(kubectl('get', 'leases.coordination.k8s.io', 'hapg', '-o', 'json').stdout)
    assert lease['spec']['holderIdentity'] == 'pg-0'
    assert 'configmap/c created' in kubectl('create', '-f', '-', stdin=CM_YAML).stdout
    assert kubectl('get', 'cm').stdout.splitlines()[1].split()[:2] == ['c', '1']
    # typed generators send protobuf bodies: decoded for ConfigMap/Namespace/Lease, 415 otherwise
    kubectl('create', 'configmap', 'c2', '--from-literal=k=v', '--from-literal=x=y')
    cm = tls_double.call('GET', '/api/v1/namespaces/kt/configmaps/c2')[2]
    assert cm['data'] == {'k': 'v', 'x': 'y'}
    kubectl('create', 'namespace', 'other-ns')
    assert tls_double.call('GET', '/api/v1/namespaces/other-ns')[0] == 200
    p = kubectl('create', 'service', 'clusterip', 'svc1', '--tcp=5432:5432', check=False)
    assert p.returncode != 0 and 'decodes protobuf bodies only for' in p.stderr
    assert 'pod "pg-0" deleted' in kubectl('delete', 'pod', 'pg-0').stdout
    assert tls_double.call('GET', '/api/v1/namespaces/kt/pods/pg-0')[0] == 404
    p = kubectl('get', 'pod', 'pg-0', check=False)
    assert p.returncode != 0 and 'NotFound' in p.stderr and 'pods "pg-0" not found' in p.stderr


def test_kubectl_replace_with_stale_object_conflicts(kubectl, tls_double, tmp_path):
    tls_double.call('POST', '/apis/coordination.k8s.io/v1/namespaces/kt/leases',
                    {'metadata': {'name': 'hapg'}, 'spec': {'holderIdentity': 'a'}})
    old = kubectl('get', 'lease', 'hapg', '-o', 'json').stdout
    tls_double.call('PATCH', '/apis/coordination.k8s.io/v1/namespaces/kt/leases/hapg',
                    {'spec': {'holderIdentity': 'b'}}, ctype='application/merge-patch+json')
    stale = json.loads(old)
    stale['spec']['holderIdentity'] = 'c'
    f = tmp_path / 'stale.json'
    f.write_text(json.dumps(stale))
    p = kubectl('replace', '-f', str(f), check=False)
    assert p.returncode != 0
    assert 'Conflict' in p.stderr and 'the object has been modified' in p.stderr
    fresh = json.loads(kubectl('get', 'lease', 'hapg', '-o', 'json').stdout)
    fresh['spec']['holderIdentity'] = 'c'
    f.write_text(json.dumps(fresh))
    assert 'replaced' in kubectl('replace', '-f', str(f)).stdout
    assert tls_double.call('GET', '/apis/coordination.k8s.io/v1/namespaces/kt/leases/hapg')[2][
        'spec']['holderIdentity'] == 'c'


def test_kubectl_rejects_untrusted_ca(kubectl, kubeconfig, certs, tmp_path):
    # a kubeconfig with a different CA must fail verification: TLS is really checked
    other = tmp_path / 'other'
    subprocess.run(['sh', os.path.join(os.path.dirname(__file__), '..', '..', 'apidouble', 'mkcerts.sh'),
                    str(other)], check=True, timeout=60)
    cfg = json.load(open(kubeconfig))
    cfg['clusters'][0]['cluster']['certificate-authority'] = str(other / 'ca.crt')
    json.dump(cfg, open(kubeconfig, 'w'))
    p = kubectl('get', 'pods', check=False)
    assert p.returncode != 0 and 'certificate' in p.stderr
