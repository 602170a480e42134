"""The API double and kube-apiserver answer alike where hapg and the tests
depend on it (run on every backend HAPG_BACKENDS names; the expected values
are what kube-apiserver v1.37 answers).  Each test here covers one row of
docs/REAL-API.md's table of differences found (and fixed in the double),
or pins a behaviour both already shared when compared.
"""

import json
import os
import shutil
import tempfile

import pytest

import harness

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)
L = '/apis/coordination.k8s.io/v1/namespaces/default/leases'
P = '/api/v1/namespaces/default/pods'
MERGE = 'application/merge-patch+json'


@pytest.fixture(scope='module')
def api(backend):
    base = tempfile.mkdtemp(prefix='hapg-agree-')
    os.chmod(base, 0o755)
    if backend == 'real':
        import realkube
        d = realkube.KubeApi(base)
    else:
        d = harness.Double(base)
    d.start()
    d._ok('POST', '/api/v1/namespaces/default/serviceaccounts',
          {'apiVersion': 'v1', 'kind': 'ServiceAccount', 'metadata': {'name': 'sa'}}, ok=(201,))
    yield d
    d.stop()
    shutil.rmtree(base, ignore_errors=True)


def lease(name, **spec):
    s = {'holderIdentity': 'a', 'leaseDurationSeconds': 6, 'renewTime': '2026-01-01T00:00:00.000000Z'}
    s.update(spec)
    return {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease', 'metadata': {'name': name}, 'spec': s}


def test_a_new_pod_is_pending_and_its_status_comes_through_the_subresource(api):
    pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p1'},
           'spec': {'serviceAccountName': 'sa', 'automountServiceAccountToken': False,
                    'containers': [{'name': 'c', 'image': 'i'}]},
           'status': {'phase': 'Running', 'podIP': '127.0.0.1'}}
    st, out = api.request('POST', P, pod)
    assert st == 201, out
    assert out['status'] == {'phase': 'Pending', 'qosClass': 'BestEffort'}, out['status']
    st, out = api.request('PATCH', P + '/p1', {'status': {'phase': 'Running'}}, content_type=MERGE)
    assert st == 200 and out['status']['phase'] == 'Pending', out
    st, out = api.request('PATCH', P + '/p1/status', {'status': {'phase': 'Running', 'podIP': '127.0.0.1'}},
                          content_type=MERGE)
    assert st == 200 and out['status']['phase'] == 'Running' and out['status']['podIP'] == '127.0.0.1', out
    st, out = api.request('DELETE', P + '/p1')
    assert st == 200 and out['kind'] == 'Pod', out          # an unscheduled Pod goes at once
    assert api.request('GET', P + '/p1')[0] == 404


def test_lease_unknown_fields_are_dropped_and_strict_validation_refuses_them(api):
    st, out = api.request('POST', L, lease('u1', bogus=1))
    assert st == 201 and 'bogus' not in out['spec'], out
    assert 'bogus' not in api.get_obj(L + '/u1')['spec']
    st, out = api.request('POST', L + '?fieldValidation=Strict', lease('u2', bogus=1))
    assert st == 400 and out['message'] == ('Lease in version "v1" cannot be handled as a Lease: strict '
                                            'decoding error: unknown field "spec.bogus"'), out
    assert api.request('GET', L + '/u2')[0] == 404


def test_lease_microtimes_need_six_digits_and_are_stored_in_utc(api):
    st, out = api.request('POST', L, lease('t1', renewTime='2026-01-01T00:00:00.000000+02:00'))
    assert st == 201 and out['spec']['renewTime'] == '2025-12-31T22:00:00.000000Z', out
    for bad, rest in (('2026-01-01T00:00:00Z', 'Z'), ('2026-01-01T00:00:00.123Z', '.123Z')):
        st, out = api.request('POST', L, lease('t2', renewTime=bad))
        assert st == 400, out
        assert out['message'] == ('Lease in version "v1" cannot be handled as a Lease: parsing time "%s" as '
                                  '"2006-01-02T15:04:05.000000Z07:00": cannot parse "%s" as ".000000"'
                                  % (bad, rest)), out


def test_lease_writes_cas_and_validation(api):
    st, l1 = api.request('POST', L, lease('c1'))
    assert st == 201
    st, out = api.request('POST', L, lease('c1'))
    assert st == 409 and out['reason'] == 'AlreadyExists', out
    x = json.loads(json.dumps(l1))
    x['spec']['holderIdentity'] = 'b'
    st, l2 = api.request('PUT', L + '/c1', x)
    assert st == 200 and l2['metadata']['resourceVersion'] != l1['metadata']['resourceVersion']
    st, out = api.request('PUT', L + '/c1', x)
    assert st == 409 and out['reason'] == 'Conflict' and out['message'] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "c1": the object has been modified; '
        'please apply your changes to the latest version and try again'), out
    y = json.loads(json.dumps(l2))
    y['metadata'].pop('resourceVersion')
    st, out = api.request('PUT', L + '/c1', y)
    assert st == 422 and out['message'] == ('leases.coordination.k8s.io "c1" is invalid: metadata.resourceVersion: '
                                            'Invalid value: 0: must be specified for an update'), out
    st, same = api.request('PUT', L + '/c1', l2)
    assert st == 200 and same['metadata']['resourceVersion'] == l2['metadata']['resourceVersion'], \
        'a write that changes nothing keeps the resourceVersion'
    st, out = api.request('POST', L, lease('c2', leaseDurationSeconds=0))
    assert st == 422 and out['message'].endswith(
        'spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0'), out
    st, out = api.request('POST', L, lease('c3', leaseDurationSeconds='6'))
    assert st == 400 and 'cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds ' \
        'of type int32' in out['message'], out


def test_patch_media_types(api):
    api.request('POST', L, lease('m1'))
    st, out = api.request('PATCH', L + '/m1', {'metadata': {'annotations': {'a': 'b'}}})
    assert st == 415 and out['reason'] == 'UnsupportedMediaType' and out['message'] == '415: Unsupported Media Type', out
    st, out = api.request('PATCH', L + '/m1', {'metadata': {'annotations': {'a': 'b'}}}, content_type=MERGE)
    assert st == 200 and out['metadata']['annotations'] == {'a': 'b'}, out
    st, out = api.request('PATCH', L + '/nope', {'metadata': {'annotations': {'a': 'b'}}}, content_type=MERGE)
    assert st == 404 and out['message'] == 'leases.coordination.k8s.io "nope" not found', out


def test_lists_and_watches(api):
    api.request('POST', L, lease('w1'))
    st, out = api.request('GET', L)
    assert st == 200 and out['kind'] == 'LeaseList' and out['apiVersion'] == 'coordination.k8s.io/v1'
    assert out['items'] and 'kind' not in out['items'][0]
    st, out = api.request('GET', L + '?watch=1&fieldSelector=metadata.name%3Dw1&timeoutSeconds=1', timeout=10)
    assert st == 200
    ev = json.loads(out.splitlines()[0] if isinstance(out, str) else json.dumps(out))
    assert ev['type'] == 'ADDED' and ev['object']['kind'] == 'Lease' and ev['object']['metadata']['name'] == 'w1'
    st, out = api.request('GET', L + '?resourceVersion=999999999&resourceVersionMatch=NotOlderThan', timeout=10)
    assert st == 504 and out['reason'] == 'Timeout' and out['message'].startswith(
        'Timeout: Too large resource version: 999999999, current: '), out
