"""Direct HTTP tests of the double's Kubernetes semantics and its admin API."""

import errno
import http.client
import json
import signal
import socket
import threading
import time

import pytest

from doubletools import read_event, wait_for

NS = '/api/v1/namespaces/t'
LEASES = '/apis/coordination.k8s.io/v1/namespaces/t/leases'
MICRO = '2024-05-01T10:00:00.123456Z'


def pod(name, labels=None, **extra):
    body = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': name, 'labels': labels or {}},
            'spec': {'containers': [{'name': 'pg', 'image': 'postgres:15'}]}}
    body.update(extra)
    return body


def lease(name, holder='a', **spec):
    s = {'holderIdentity': holder, 'leaseDurationSeconds': 15, 'renewTime': MICRO}
    s.update(spec)
    return {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease', 'metadata': {'name': name}, 'spec': s}


def names(listing):
    return sorted(i['metadata']['name'] for i in listing['items'])


# --- objects, kinds, errors -------------------------------------------------------

def test_create_get_list_shapes(double):
    code, _, p = double.call('POST', NS + '/pods', pod('p1', {'app': 'x'}))
    assert code == 201
    assert p['kind'] == 'Pod' and p['apiVersion'] == 'v1'
    md = p['metadata']
    assert md['namespace'] == 't' and md['uid'] and md['creationTimestamp'].endswith('Z')
    assert md['resourceVersion'].isdigit() and md['generation'] == 1
    code, _, g = double.call('GET', NS + '/pods/p1')
    assert code == 200 and g == p
    code, _, lst = double.call('GET', NS + '/pods')
    assert lst['kind'] == 'PodList' and lst['apiVersion'] == 'v1'
    assert int(lst['metadata']['resourceVersion']) >= int(md['resourceVersion'])
    assert names(lst) == ['p1'] and 'kind' not in lst['items'][0]  # like the real server
    code, _, lst = double.call('GET', '/api/v1/pods')  # all namespaces
    assert names(lst) == ['p1']
    code, _, nss = double.call('GET', '/api/v1/namespaces')
    assert {'default', 't'} <= set(names(nss)) and nss['kind'] == 'NamespaceList'
    code, _, ls = double.call('POST', LEASES, lease('l1'))
    assert code == 201 and ls['kind'] == 'Lease' and ls['apiVersion'] == 'coordination.k8s.io/v1'
    code, _, lst = double.call('GET', '/apis/coordination.k8s.io/v1/leases')
    assert lst['kind'] == 'LeaseList' and lst['apiVersion'] == 'coordination.k8s.io/v1'
    # every write bumps the single global counter
    code, _, cm = double.call('POST', NS + '/configmaps', {'metadata': {'name': 'c'}, 'data': {'k': 'v'}})
    assert int(cm['metadata']['resourceVersion']) > int(ls['metadata']['resourceVersion'])


def test_error_status_shapes(double):
    code, _, body = double.call('GET', LEASES + '/nope')
    assert code == 404
    assert body == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                    'message': 'leases.coordination.k8s.io "nope" not found', 'reason': 'NotFound',
                    'details': {'name': 'nope', 'group': 'coordination.k8s.io', 'kind': 'leases'},
                    'code': 404}
    code, _, body = double.call('GET', NS + '/pods/nope')
    assert body['message'] == 'pods "nope" not found' and body['details'] == {'name': 'nope', 'kind': 'pods'}
    double.call('POST', NS + '/pods', pod('dup'))
    code, _, body = double.call('POST', NS + '/pods', pod('dup'))
    assert code == 409 and body['reason'] == 'AlreadyExists'
    assert body['message'] == 'pods "dup" already exists'
    code, _, body = double.call('POST', NS + '/pods', pod('Bad_Name'))
    assert code == 422 and body['reason'] == 'Invalid' and body['status'] == 'Failure'
    assert body['message'].startswith('Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      'a lowercase RFC 1123 subdomain')
    assert body['details']['kind'] == 'Pod' and body['details']['causes'][0]['field'] == 'metadata.name'
    code, _, body = double.call('POST', NS + '/pods', pod('ok', {'role': 'bad value!'}))
    assert code == 422 and body['details']['causes'][0]['field'] == 'metadata.labels'
    code, _, body = double.call('POST', NS + '/pods', b'{"metadata": ')
    assert code == 400 and body['reason'] == 'BadRequest' and body['kind'] == 'Status'
    # name in the body differs from the URL: 400 BadRequest like kube-apiserver (checkName)
    code, _, body = double.call('PUT', NS + '/pods/dup', pod('other'))
    assert code == 400 and 'does not match the name on the URL' in body['message']
    code, _, body = double.call('POST', NS + '/pods', dict(pod('x'), metadata={'name': 'x', 'namespace': 'zz'}))
    assert code == 400
    code, _, body = double.call('DELETE', NS + '/pods')
    assert code == 200  # deletecollection
    code, _, body = double.call('POST', NS + '/pods/x')
    assert code == 405 and body['reason'] == 'MethodNotAllowed'
    code, _, body = double.call('GET', '/api/v1/namespaces/t/widgets')
    assert code == 404 and body['reason'] == 'NotFound'


def test_auth(double):
    code, _, body = double.call('GET', NS + '/pods', token=None)
    assert code == 401
    assert body == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                    'message': 'Unauthorized', 'reason': 'Unauthorized', 'code': 401}
    assert double.call('GET', NS + '/pods', token='wrong')[0] == 401
    assert double.call('GET', NS + '/pods', token='tok-0')[0] == 200
    assert double.call('GET', '/version', token=None)[0] == 200  # open like system:public-info-viewer
    assert double.call('GET', '/version', token='wrong')[0] == 401
    assert double.admin('GET', '/_double/healthz') == (200, b'ok')


def test_token_file_and_rotation(make_double, tmp_path):
    tf = tmp_path / 'tokens'
    tf.write_text('file-a pg-a\n')
    d = make_double(tokens={}, extra=['--token-file', str(tf)])
    assert d.call('GET', NS + '/pods', token='file-a')[0] == 200
    assert d.call('GET', NS + '/pods', token='file-b')[0] == 401
    tf.write_text('file-b pg-a\n')   # rotated on disk: re-read
    time.sleep(0.05)
    assert d.call('GET', NS + '/pods', token='file-b')[0] == 200
    assert d.admin('POST', '/_double/tokens', {'token': 'new', 'user': 'pg-a'})[0] == 201
    assert d.call('GET', NS + '/pods', token='new')[0] == 200
    assert d.admin('DELETE', '/_double/tokens?token=new')[0] == 200
    assert d.call('GET', NS + '/pods', token='new')[0] == 401
    assert d.call('GET', NS + '/pods', token='file-b')[0] == 200


def test_anonymous_without_tokens(make_double):
    d = make_double(tokens={})
    assert d.call('GET', NS + '/pods', token=None)[0] == 200
    assert 'system:anonymous' in d.admin('GET', '/_double/stats')[1]['by_user']


# --- compare-and-swap -----------------------------------------------------------------

CONFLICT = ('Operation cannot be fulfilled on leases.coordination.k8s.io "lk": the object has been '
            'modified; please apply your changes to the latest version and try again')


def test_put_cas(double):
    code, _, l0 = double.call('POST', LEASES, lease('lk'))
    rv0 = l0['metadata']['resourceVersion']
    l1 = json.loads(json.dumps(l0))
    l1['spec']['holderIdentity'] = 'b'
    code, _, out = double.call('PUT', LEASES + '/lk', l1)
    assert code == 200 and out['spec']['holderIdentity'] == 'b'
    assert int(out['metadata']['resourceVersion']) > int(rv0)
    assert out['metadata']['uid'] == l0['metadata']['uid']
    l1['spec']['holderIdentity'] = 'c'           # still carries rv0: stale
    code, _, out = double.call('PUT', LEASES + '/lk', l1)
    assert code == 409
    assert out == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                   'message': CONFLICT, 'reason': 'Conflict',
                   'details': {'name': 'lk', 'group': 'coordination.k8s.io', 'kind': 'leases'},
                   'code': 409}
    del l1['metadata']['resourceVersion']        # leases need a resourceVersion on PUT
    code, _, out = double.call('PUT', LEASES + '/lk', l1)
    assert code == 422 and 'must be specified for an update' in out['message']
    # PUT creates a missing lease (AllowCreateOnUpdate), but not a configmap
    code, _, out = double.call('PUT', LEASES + '/fresh', lease('fresh'))
    assert code == 201 and out['metadata']['name'] == 'fresh'
    code, _, out = double.call('PUT', NS + '/configmaps/nocm', {'metadata': {'name': 'nocm'}})
    assert code == 404


def test_patch_cas_and_noop(double):
    code, _, l0 = double.call('POST', LEASES, lease('lk'))
    rv0 = l0['metadata']['resourceVersion']
    merge = 'application/merge-patch+json'
    code, _, out = double.call('PATCH', LEASES + '/lk', {'metadata': {'resourceVersion': rv0},
                                                          'spec': {'holderIdentity': 'b'}}, ctype=merge)
    assert code == 200 and out['spec']['holderIdentity'] == 'b'
    rv1 = out['metadata']['resourceVersion']
    code, _, out = double.call('PATCH', LEASES + '/lk', {'metadata': {'resourceVersion': rv0},
                                                          'spec': {'holderIdentity': 'c'}}, ctype=merge)
    assert code == 409 and out['message'] == CONFLICT
    code, _, out = double.call('PATCH', LEASES + '/lk', {'metadata': {'resourceVersion': rv0}},
                               ctype='application/strategic-merge-patch+json')
    assert code == 409
    # a PATCH without resourceVersion is unconditional
    code, _, out = double.call('PATCH', LEASES + '/lk', {'spec': {'holderIdentity': 'd'}}, ctype=merge)
    assert code == 200 and out['spec']['holderIdentity'] == 'd'
    rv2 = out['metadata']['resourceVersion']
    assert int(rv2) > int(rv1)
    # a write that changes nothing does not bump the resourceVersion
    code, _, out = double.call('PATCH', LEASES + '/lk', {'spec': {'holderIdentity': 'd'}}, ctype=merge)
    assert code == 200 and out['metadata']['resourceVersion'] == rv2
    code, _, out = double.call('PATCH', LEASES + '/nope', {}, ctype=merge)
    assert code == 404
    code, _, out = double.call('PATCH', LEASES + '/lk', {}, ctype='application/json')
    assert code == 415


def test_lease_types_like_the_go_decoder(double):
    code, _, out = double.call('POST', LEASES, lease('m', renewTime='2024-05-01T10:00:00Z'))
    assert code == 400 and 'cannot be handled as a Lease' in out['message']
    code, _, out = double.call('POST', LEASES, lease('m', renewTime='2024-05-01T10:00:00.123Z'))
    assert code == 400
    code, _, out = double.call('POST', LEASES, lease('m', leaseDurationSeconds='15'))
    assert code == 400
    code, _, out = double.call('POST', LEASES, lease('m', leaseDurationSeconds=0))
    assert code == 422 and out['details']['causes'][0]['field'] == 'spec.leaseDurationSeconds'
    code, _, out = double.call('POST', LEASES, lease('m', acquireTime='2024-05-01T10:00:00.000001+02:00'))
    assert code == 201


# --- selectors ----------------------------------------------------------------------

def test_label_and_field_selectors(double):
    for n, labels in [('a', {'app': 'x', 'role': 'primary'}), ('b', {'app': 'x', 'role': 'replica'}),
                      ('c', {'app': 'y'}), ('d', {})]:
        assert double.call('POST', NS + '/pods', pod(n, labels))[0] == 201

    def sel(s, field=False):
        from urllib.parse import quote
        code, _, lst = double.call('GET', NS + '/pods?%s=%s' % ('fieldSelector' if field else 'labelSelector',
                                                                quote(s)))
        assert code == 200, lst
        return names(lst)
    assert sel('app=x') == ['a', 'b']
    assert sel('app==x,role=replica') == ['b']
    assert sel('app!=x') == ['c', 'd']
    assert sel('role') == ['a', 'b']
    assert sel('!role') == ['c', 'd']
    assert sel('app in (x, y)') == ['a', 'b', 'c']
    assert sel('role notin (primary)') == ['b', 'c', 'd']
    assert sel('app in (x,y),!role') == ['c']
    assert sel('metadata.name=b', True) == ['b']
    assert sel('metadata.name!=b', True) == ['a', 'c', 'd']
    assert sel('metadata.namespace=t', True) == ['a', 'b', 'c', 'd']
    code, _, out = double.call('GET', NS + '/pods?labelSelector=app%20in%20x')
    assert code == 400 and out['reason'] == 'BadRequest'
    code, _, out = double.call('GET', NS + '/pods?fieldSelector=spec.bogus%3D1')
    assert code == 400 and 'field label not supported' in out['message']


# --- patches --------------------------------------------------------------------------

def test_merge_patch(double):
    double.call('POST', NS + '/pods', pod('p', {'a': '1', 'b': '2'}, metadata={
        'name': 'p', 'labels': {'a': '1', 'b': '2'}, 'annotations': {'x': 'y'}}))
    code, _, out = double.call('PATCH', NS + '/pods/p', {'metadata': {'labels': {'a': None, 'c': '3'},
                                                                        'annotations': {'x': None}}},
                               ctype='application/merge-patch+json')
    assert code == 200
    assert out['metadata']['labels'] == {'b': '2', 'c': '3'}
    assert 'x' not in (out['metadata'].get('annotations') or {})
    # lists are replaced wholesale by a merge patch
    code, _, out = double.call('PATCH', NS + '/pods/p', {'spec': {'containers': [{'name': 'new', 'image': 'i'}]}},
                               ctype='application/merge-patch+json')
    assert [c['name'] for c in out['spec']['containers']] == ['new']
    # the main resource never changes a pod's status; pods/status does
    code, _, out = double.call('PATCH', NS + '/pods/p', {'status': {'phase': 'Running'}},
                               ctype='application/merge-patch+json')
    assert out['status']['phase'] == 'Pending'
    code, _, out = double.call('PATCH', NS + '/pods/p/status', {'status': {'phase': 'Running'},
                                                                  'metadata': {'labels': {'z': '1'}}},
                               ctype='application/merge-patch+json')
    assert code == 200 and out['status']['phase'] == 'Running' and 'z' not in out['metadata']['labels']


def test_strategic_merge_patch(double):
    body = pod('p')
    body['spec']['containers'] = [{'name': 'pg', 'image': 'postgres:15', 'env': [{'name': 'A', 'value': '1'}]},
                                  {'name': 'side', 'image': 'busybox'}]
    double.call('POST', NS + '/pods', body)
    smp = 'application/strategic-merge-patch+json'
    code, _, out = double.call('PATCH', NS + '/pods/p', {'spec': {'containers': [
        {'name': 'pg', 'image': 'postgres:16', 'env': [{'name': 'B', 'value': '2'}]}]}}, ctype=smp)
    assert code == 200
    cs = {c['name']: c for c in out['spec']['containers']}
    assert set(cs) == {'pg', 'side'}                      # merged by name, not replaced
    assert cs['pg']['image'] == 'postgres:16'
    assert [e['name'] for e in cs['pg']['env']] == ['A', 'B']
    assert out['metadata']['generation'] == 2             # spec changed
    code, _, out = double.call('PATCH', NS + '/pods/p', {'spec': {'containers': [
        {'name': 'side', '$patch': 'delete'}]}}, ctype=smp)
    assert [c['name'] for c in out['spec']['containers']] == ['pg']
    code, _, out = double.call('PATCH', NS + '/pods/p', {'metadata': {'labels': {'role': 'master'},
                                                                        'annotations': {'status': '{}'}}},
                               ctype=smp)
    assert out['metadata']['labels'] == {'role': 'master'} and out['metadata']['generation'] == 3


def test_json_patch(double):
    double.call('POST', NS + '/configmaps', {'metadata': {'name': 'c', 'labels': {'a': '1'}},
                                            'data': {'k': 'v', 'arr': 'x'}})
    jp = 'application/json-patch+json'
    ops = [{'op': 'test', 'path': '/data/k', 'value': 'v'},
           {'op': 'add', 'path': '/metadata/labels/b', 'value': '2'},
           {'op': 'replace', 'path': '/data/k', 'value': 'w'},
           {'op': 'copy', 'from': '/data/k', 'path': '/data/k2'},
           {'op': 'move', 'from': '/data/arr', 'path': '/data/moved'},
           {'op': 'remove', 'path': '/metadata/labels/a'},
           {'op': 'add', 'path': '/metadata/annotations', 'value': {'example.com/x': 'x'}}]
    code, _, out = double.call('PATCH', NS + '/configmaps/c', ops, ctype=jp)
    assert code == 200, out
    assert out['data'] == {'k': 'w', 'k2': 'w', 'moved': 'x'}
    assert out['metadata']['labels'] == {'b': '2'}
    code, _, out = double.call('PATCH', NS + '/configmaps/c',
                               [{'op': 'replace', 'path': '/metadata/annotations/example.com~1x', 'value': 'y'}], ctype=jp)
    assert out['metadata']['annotations'] == {'example.com/x': 'y'}
    code, _, out = double.call('PATCH', NS + '/configmaps/c', [{'op': 'test', 'path': '/data/k', 'value': 'nope'},
                                                              {'op': 'add', 'path': '/data/z', 'value': 'z'}], ctype=jp)
    assert code == 422 and out['kind'] == 'Status'
    code, _, out = double.call('GET', NS + '/configmaps/c')
    assert 'z' not in out['data']                          # all or nothing
    code, _, out = double.call('PATCH', NS + '/configmaps/c', [{'op': 'remove', 'path': '/data/none'}], ctype=jp)
    assert code == 422
    code, _, out = double.call('PATCH', NS + '/configmaps/c', {'op': 'add'}, ctype=jp)
    assert code == 400
    # a json patch can carry a CAS too
    rv = double.call('GET', NS + '/configmaps/c')[2]['metadata']['resourceVersion']
    code, _, out = double.call('PATCH', NS + '/configmaps/c', [
        {'op': 'replace', 'path': '/metadata/resourceVersion', 'value': str(int(rv) - 1)},
        {'op': 'add', 'path': '/data/q', 'value': '1'}], ctype=jp)
    assert code == 409


def test_delete(double):
    code, _, p = double.call('POST', NS + '/pods', pod('p'))
    code, _, out = double.call('DELETE', NS + '/pods/p')
    assert code == 200 and out['kind'] == 'Pod' and out['metadata']['deletionTimestamp']
    assert double.call('GET', NS + '/pods/p')[0] == 404
    assert double.call('DELETE', NS + '/pods/p')[0] == 404
    code, _, l0 = double.call('POST', LEASES, lease('l'))
    code, _, out = double.call('DELETE', LEASES + '/l', {'preconditions': {'resourceVersion': '1'}})
    assert code == 409 and 'Precondition failed' in out['message']
    code, _, out = double.call('DELETE', LEASES + '/l', {'preconditions': {
        'resourceVersion': l0['metadata']['resourceVersion']}})
    assert code == 200 and out['kind'] == 'Status' and out['status'] == 'Success'
    assert out['details']['name'] == 'l' and out['details']['kind'] == 'leases'


# --- watch ----------------------------------------------------------------------------

def test_watch_initial_events_and_selector_transitions(double):
    double.call('POST', NS + '/pods', pod('a', {'app': 'x'}))
    conn, resp = double.watch(NS + '/pods?watch=true&labelSelector=app%3Dx')
    assert resp.status == 200 and resp.headers['Transfer-Encoding'] == 'chunked'
    ev = read_event(resp)
    assert ev['type'] == 'ADDED' and ev['object']['metadata']['name'] == 'a'
    assert ev['object']['kind'] == 'Pod'
    double.call('POST', NS + '/pods', pod('b', {'app': 'y'}))       # not matching: nothing
    double.call('PATCH', NS + '/pods/a', {'metadata': {'annotations': {'k': 'v'}}},
                ctype='application/merge-patch+json')
    ev = read_event(resp)
    assert ev['type'] == 'MODIFIED' and ev['object']['metadata']['annotations'] == {'k': 'v'}
    double.call('PATCH', NS + '/pods/b', {'metadata': {'labels': {'app': 'x'}}},
                ctype='application/merge-patch+json')
    ev = read_event(resp)
    assert (ev['type'], ev['object']['metadata']['name']) == ('ADDED', 'b')  # entered the selector
    double.call('PATCH', NS + '/pods/a', {'metadata': {'labels': {'app': 'z'}}},
                ctype='application/merge-patch+json')
    ev = read_event(resp)
    assert (ev['type'], ev['object']['metadata']['name']) == ('DELETED', 'a')  # left it
    code, _, gone = double.call('DELETE', NS + '/pods/b')
    ev = read_event(resp)
    assert (ev['type'], ev['object']['metadata']['name']) == ('DELETED', 'b')
    assert int(ev['object']['metadata']['resourceVersion']) > 0
    conn.close()


def test_watch_replay_from_resource_version(double):
    code, _, l0 = double.call('POST', LEASES, lease('l'))
    rv0 = l0['metadata']['resourceVersion']
    for h in ('b', 'c'):
        double.call('PATCH', LEASES + '/l', {'spec': {'holderIdentity': h}},
                    ctype='application/merge-patch+json')
    conn, resp = double.watch(LEASES + '?watch=1&resourceVersion=' + rv0)
    evs = [read_event(resp), read_event(resp)]
    assert [e['type'] for e in evs] == ['MODIFIED', 'MODIFIED']
    assert [e['object']['spec']['holderIdentity'] for e in evs] == ['b', 'c']
    conn.close()
    # Patroni's spelling: watch=True
    lst = double.call('GET', LEASES)[2]
    conn, resp = double.watch(LEASES + '?watch=True&resourceVersion=' + lst['metadata']['resourceVersion'])
    double.call('DELETE', LEASES + '/l')
    assert read_event(resp)['type'] == 'DELETED'
    conn.close()


def test_watch_too_old_resource_version(make_double):
    d = make_double(extra=['--history', '5'])
    code, _, first = d.call('POST', NS + '/configmaps', {'metadata': {'name': 'c0'}})
    for i in range(1, 10):
        d.call('POST', NS + '/configmaps', {'metadata': {'name': 'c%d' % i}})
    conn, resp = d.watch(NS + '/configmaps?watch=true&resourceVersion=' + first['metadata']['resourceVersion'])
    assert resp.status == 200
    ev = read_event(resp)
    assert ev['type'] == 'ERROR'
    st = ev['object']
    assert st['kind'] == 'Status' and st['code'] == 410 and st['reason'] == 'Expired'
    assert 'too old resource version' in st['message']
    assert read_event(resp) is None                     # the stream ends
    conn.close()


def test_watch_bookmarks_and_timeout(double):
    lst = double.call('GET', LEASES)[2]
    t0 = time.monotonic()
    conn, resp = double.watch(LEASES + '?watch=true&allowWatchBookmarks=true&timeoutSeconds=2'
                                       '&resourceVersion=' + lst['metadata']['resourceVersion'])
    evs = []
    while True:
        ev = read_event(resp)
        if ev is None:
            break
        evs.append(ev)
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed < 4
    assert evs and all(e['type'] == 'BOOKMARK' for e in evs)
    assert evs[0]['object']['kind'] == 'Lease' and evs[0]['object']['metadata']['resourceVersion']
    # the connection is still usable after a clean end of stream (keep-alive)
    conn.request('GET', LEASES, headers={'Authorization': 'Bearer tok-admin'})
    assert conn.getresponse().status == 200
    conn.close()


# --- faults -----------------------------------------------------------------------------

def test_fault_error_narrowed_and_counted(double):
    assert double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'error', 'status': 503,
                                                    'verbs': ['update', 'patch'], 'resources': ['leases']})[0] == 201
    double.call('POST', LEASES, lease('l'), token='tok-0')        # create: not covered
    code, _, out = double.call('PATCH', LEASES + '/l', {}, token='tok-0', ctype='application/merge-patch+json')
    assert code == 503 and out['kind'] == 'Status' and out['reason'] == 'ServiceUnavailable'
    assert double.call('PATCH', LEASES + '/l', {}, token='tok-1', ctype='application/merge-patch+json')[0] == 200
    assert double.call('GET', LEASES + '/l', token='tok-0')[0] == 200
    assert double.admin('DELETE', '/_double/faults?user=pg-0') == (200, {'removed': 1})
    assert double.call('PATCH', LEASES + '/l', {}, token='tok-0', ctype='application/merge-patch+json')[0] == 200
    double.admin('POST', '/_double/faults', {'user': '*', 'mode': 'error', 'status': 429, 'count': 2,
                                             'retry_after': 1})
    code, hdrs, out = double.call('GET', LEASES, token='tok-2')
    assert code == 429 and hdrs['Retry-After'] == '1' and out['reason'] == 'TooManyRequests'
    assert double.call('GET', LEASES, token='tok-1')[0] == 429
    assert double.call('GET', LEASES, token='tok-1')[0] == 200   # used up
    assert double.admin('GET', '/_double/faults')[1]['faults'] == []


def test_fault_hang_is_bounded_by_the_client_timeout(double):
    double.admin('POST', '/_double/faults', {'user': 'pg-1', 'mode': 'hang'})
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        double.call('GET', LEASES, token='tok-1', timeout=1)
    assert time.monotonic() - t0 < 3
    assert double.call('GET', LEASES, token='tok-2', timeout=2)[0] == 200
    # a hung request ends (connection closed, never executed) when the fault is cleared
    conn = double.connection(timeout=10)
    conn.request('POST', LEASES, body=json.dumps(lease('never')),
                 headers={'Authorization': 'Bearer tok-1', 'Content-Type': 'application/json'})
    time.sleep(0.3)
    double.admin('DELETE', '/_double/faults')
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    assert time.monotonic() - t0 < 3
    assert double.call('GET', LEASES + '/never', token='tok-1')[0] == 404


def test_fault_drop_garbage_huge(double):
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'drop'})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        double.call('GET', LEASES, token='tok-0')
    double.admin('DELETE', '/_double/faults')
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'garbage'})
    code, hdrs, out = double.call('GET', LEASES, token='tok-0')
    assert code == 200 and isinstance(out, bytes)
    with pytest.raises(ValueError):
        json.loads(out)
    double.admin('DELETE', '/_double/faults')
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'huge'})
    conn = double.connection(timeout=20)
    conn.request('GET', LEASES, headers={'Authorization': 'Bearer tok-0'})
    resp = conn.getresponse()
    assert resp.status == 200
    head = resp.read(200)
    assert head.startswith(b'{"kind":"PodList"')
    total = len(head)
    while True:
        b = resp.read(1 << 20)
        if not b:
            break
        total += len(b)
    conn.close()
    assert total >= 64 << 20


def test_fault_truncate_and_slow(double):
    """truncate: the request is executed and half its answer sent under the
    full Content-Length; slow: served after the delay, or at once when the
    fault is cleared."""
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'truncate', 'count': 1})
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        double.call('POST', LEASES, lease('cut'), token='tok-0')
    code, _, out = double.call('GET', LEASES + '/cut', token='tok-0')
    assert code == 200 and out['metadata']['name'] == 'cut'      # it was executed
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'slow', 'delay': 1.0})
    t0 = time.monotonic()
    assert double.call('GET', LEASES + '/cut', token='tok-0', timeout=5)[0] == 200
    assert 0.9 <= time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert double.call('GET', LEASES + '/cut', token='tok-1', timeout=5)[0] == 200
    assert time.monotonic() - t0 < 0.5                            # another user is not slowed
    double.admin('POST', '/_double/faults', {'user': 'pg-0', 'mode': 'slow', 'delay': 30})
    res = {}
    th = threading.Thread(target=lambda: res.update(r=double.call('GET', LEASES + '/cut', token='tok-0',
                                                                  timeout=20)))
    t0 = time.monotonic()
    th.start()
    time.sleep(0.5)
    double.admin('DELETE', '/_double/faults')
    th.join(10)
    assert res['r'][0] == 200 and time.monotonic() - t0 < 3


def test_fault_ends_open_watch(double):
    conn, resp = double.watch(NS + '/pods?watch=true', token='tok-2')
    double.admin('POST', '/_double/faults', {'user': 'pg-2', 'mode': 'error'})
    t0 = time.monotonic()
    try:
        assert read_event(resp) is None
    except (http.client.IncompleteRead, ConnectionError):
        pass
    assert time.monotonic() - t0 < 3
    conn.close()


def test_port_close_refuses_and_reopens(double):
    port = double.ports[1]
    keep = double.connection(port)
    assert double.call('GET', LEASES, token='tok-1', conn=keep)[0] == 200
    code, out = double.admin('POST', '/_double/ports/%d/close' % port)
    assert code == 200 and out == {'port': port, 'open': False}
    with pytest.raises(ConnectionRefusedError) as e:
        double.call('GET', LEASES, token='tok-1', port=port)
    assert e.value.errno == errno.ECONNREFUSED
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest)):
        double.call('GET', LEASES, token='tok-1', conn=keep)   # the open connection was dropped
    keep.close()
    assert double.call('GET', LEASES, token='tok-1', port=double.ports[0])[0] == 200  # others unaffected
    assert double.admin('POST', '/_double/ports/%d/open' % port)[0] == 200
    assert double.call('GET', LEASES, token='tok-1', port=port)[0] == 200
    ports = double.admin('GET', '/_double/ports')[1]['ports']
    assert all(p['open'] for p in ports)


def test_stats(double):
    double.admin('POST', '/_double/stats/reset')
    double.call('POST', LEASES, lease('l'), token='tok-0')
    double.call('GET', LEASES + '/l', token='tok-0')
    double.call('GET', LEASES, token='tok-1')
    double.call('PATCH', LEASES + '/l', {}, token='tok-1', ctype='application/merge-patch+json')
    l0 = double.call('GET', LEASES + '/l', token='tok-1')[2]
    double.call('PUT', LEASES + '/l', l0, token='tok-2')
    double.call('DELETE', LEASES + '/l', token='tok-2')
    conn, resp = double.watch(LEASES + '?watch=1&timeoutSeconds=1', token='tok-2')
    resp.read()
    conn.close()
    double.call('GET', '/api', token='tok-2')                    # discovery: not counted
    st = double.admin('GET', '/_double/stats')[1]
    assert st['by_user']['pg-0'] == {'create': 1, 'get': 1}
    assert st['by_user']['pg-1'] == {'list': 1, 'patch': 1, 'get': 1}
    assert st['by_user']['pg-2'] == {'update': 1, 'delete': 1, 'watch': 1}
    assert st['total'] == {'create': 1, 'get': 2, 'list': 1, 'patch': 1, 'update': 1, 'delete': 1,
                           'watch': 1}
    assert st['by_user_resource']['pg-0']['leases'] == {'create': 1, 'get': 1}
    double.admin('POST', '/_double/stats/reset')
    assert double.admin('GET', '/_double/stats')[1]['total'] == {}


# --- discovery, tables, lifecycle --------------------------------------------------------

def test_discovery(double):
    v2 = ('application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,'
          'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json')
    code, hdrs, out = double.call('GET', '/api', headers={'Accept': v2})
    assert code == 200 and hdrs['Content-Type'] == 'application/json'
    assert out['kind'] == 'APIVersions' and out['versions'] == ['v1']
    code, hdrs, out = double.call('GET', '/apis', headers={'Accept': v2})
    assert hdrs['Content-Type'] == 'application/json' and out['kind'] == 'APIGroupList'
    assert {g['name'] for g in out['groups']} == {
        'coordination.k8s.io', 'apps', 'policy', 'rbac.authorization.k8s.io', 'authorization.k8s.io',
        'authentication.k8s.io'}
    out = double.call('GET', '/api/v1')[2]
    res = {r['name']: r for r in out['resources']}
    assert res['pods']['shortNames'] == ['po'] and res['pods']['namespaced'] is True
    assert res['namespaces']['namespaced'] is False and 'watch' in res['configmaps']['verbs']
    assert {res[n]['shortNames'][0] for n in ('configmaps', 'endpoints', 'services', 'namespaces')} == \
        {'cm', 'ep', 'svc', 'ns'}
    out = double.call('GET', '/apis/coordination.k8s.io/v1')[2]
    assert out['groupVersion'] == 'coordination.k8s.io/v1' and out['resources'][0]['kind'] == 'Lease'
    assert double.call('GET', '/version')[2]['major'] == '1'
    assert double.call('GET', '/openapi/v2')[0] == 404


def test_table(double):
    double.call('POST', NS + '/pods', pod('a', {'role': 'primary'}))
    double.call('POST', LEASES, lease('l', holder='a'))
    accept = 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json'
    code, _, t = double.call('GET', NS + '/pods', headers={'Accept': accept})
    assert t['kind'] == 'Table' and t['apiVersion'] == 'meta.k8s.io/v1'
    assert [c['name'] for c in t['columnDefinitions']][:5] == ['Name', 'Ready', 'Status', 'Restarts', 'Age']
    row = t['rows'][0]
    assert row['cells'][:4] == ['a', '0/1', 'Pending', 0]
    assert row['object']['kind'] == 'PartialObjectMetadata'
    assert row['object']['metadata']['labels'] == {'role': 'primary'}
    t = double.call('GET', LEASES + '/l', headers={'Accept': accept})[2]
    assert [c['name'] for c in t['columnDefinitions']] == ['Name', 'Holder', 'Age']
    assert t['rows'][0]['cells'][:2] == ['l', 'a']


def test_tls_and_sigterm(tls_double):
    code, _, out = tls_double.call('GET', LEASES)
    assert code == 200 and out['kind'] == 'LeaseList'
    assert tls_double.banner.startswith('kubeapi listening on https://127.0.0.1:')
    tls_double.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: tls_double.proc.poll() is not None, 5)
    assert tls_double.proc.returncode == 0


def test_admin_token_and_whoami(make_double):
    d = make_double(extra=['--admin-token', 'sekret'])
    assert d.admin('GET', '/_double/stats')[0] == 401
    assert d.admin('GET', '/_double/healthz')[0] == 200
    conn = d.connection(admin=True)
    code, _, out = d.call('GET', '/_double/stats', token='sekret', conn=conn)
    conn.close()
    assert code == 200 and 'total' in out
    conn = d.connection(admin=True)
    code, _, out = d.call('GET', '/_double/whoami', token='tok-1', conn=conn)
    conn.close()
    assert (code, out) == (200, {'user': 'pg-1'})


def test_protobuf_lease_body(double):
    # kubectl's typed clients send k8s protobuf envelopes; Lease is one of the decoded kinds
    def fld(n, payload):
        return bytes([(n << 3) | 2, len(payload)]) + payload

    def varint(n, v):
        return bytes([n << 3, v])
    meta = fld(1, b'pl') + fld(3, b'')
    t = varint(1, 100) + varint(2, 0)   # seconds=100 (1970-01-01T00:01:40Z), nanos=0
    spec = fld(1, b'me') + varint(2, 15) + fld(4, t)
    obj = fld(1, meta) + fld(2, spec)
    env = b'k8s\x00' + fld(1, fld(1, b'coordination.k8s.io/v1') + fld(2, b'Lease')) + fld(2, obj)
    code, _, out = double.call('POST', LEASES, env, ctype='application/vnd.kubernetes.protobuf')
    assert code == 201, out
    assert out['metadata']['name'] == 'pl' and out['metadata']['namespace'] == 't'
    assert out['spec'] == {'holderIdentity': 'me', 'leaseDurationSeconds': 15,
                           'renewTime': '1970-01-01T00:01:40.000000Z'}


def test_concurrent_cas_is_linearizable(double):
    # 4 clients increment a counter in a lease with GET + PUT(resourceVersion), retrying on 409
    import threading
    double.call('POST', LEASES, lease('ctr', leaseTransitions=0))
    conn_w, resp = double.watch(LEASES + '?watch=true&fieldSelector=metadata.name%3Dctr', timeout=20)
    assert read_event(resp)['type'] == 'ADDED'
    conflicts, errors = [0], []

    def worker(tok):
        conn = double.connection(timeout=10)
        done = 0
        try:
            while done < 25:
                _, _, cur = double.call('GET', LEASES + '/ctr', token=tok, conn=conn)
                cur['spec']['leaseTransitions'] += 1
                code, _, _ = double.call('PUT', LEASES + '/ctr', cur, token=tok, conn=conn)
                if code == 200:
                    done += 1
                elif code == 409:
                    conflicts[0] += 1
                else:
                    errors.append(code)
                    return
        finally:
            conn.close()
    threads = [threading.Thread(target=worker, args=(t,)) for t in ('tok-0', 'tok-1', 'tok-2', 'tok-admin')]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    final = double.call('GET', LEASES + '/ctr')[2]
    assert final['spec']['leaseTransitions'] == 100
    seen, last_rv = [], 0
    while len(seen) < 100:
        ev = read_event(resp)
        assert ev['type'] == 'MODIFIED' and int(ev['object']['metadata']['resourceVersion']) > last_rv
        last_rv = int(ev['object']['metadata']['resourceVersion'])
        seen.append(ev['object']['spec']['leaseTransitions'])
    assert seen == list(range(1, 101))
    conn_w.close()
