"""hapg with nothing but the privileges a Role grants (Cluster(rbac=...)).

Every member's token is subject to the double's RBAC as the ServiceAccount
the manifest binds (each member keeps its own user name in the double).
With the Role below hapg elects a leader, labels and annotates the Pods and
no request of any member is ever refused.  With the Lease `update` verb
taken away the leader cannot renew: it logs the API server's 403, fences
before its Lease expires, nobody else can take the Lease, and once the verb
is back the cluster recovers without losing an acknowledged write.
If kubernetes/rbac.yaml exists, hapg must also work with exactly that.
"""

import json
import os
import time

import pytest

from checker import Checker, ensure_table
from harness import REPO, wait_for
from test_failover import assert_checker_clean, healthy, note, ttl, wait_acked

RBAC = 'rbac.authorization.k8s.io/v1'
# the ServiceAccount, its Role and RoleBinding, written as a JSON file for Cluster(rbac=...)
OBJECTS = [
    {'apiVersion': 'v1', 'kind': 'ServiceAccount', 'metadata': {'name': 'hapg'}},
    {'apiVersion': RBAC, 'kind': 'Role', 'metadata': {'name': 'hapg'}, 'rules': [
        {'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list', 'watch', 'patch']},
        {'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'],
         'verbs': ['get', 'list', 'watch', 'create', 'update']},
        {'apiGroups': [''], 'resources': ['configmaps'],
         'verbs': ['get', 'list', 'watch', 'create', 'update', 'patch']}]},
    {'apiVersion': RBAC, 'kind': 'RoleBinding', 'metadata': {'name': 'hapg'},
     'roleRef': {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role', 'name': 'hapg'},
     'subjects': [{'kind': 'ServiceAccount', 'name': 'hapg'}]},
]
HAPG_BACKENDS = True      # the double and the real API server (conftest.py)
MEMBERS = ['pg-0', 'pg-1', 'pg-2']


def lease_verbs(c):
    """The verbs the Role grants on leases (one rule)."""
    rules = [r for r in c.rbac_object('Role')['rules'] if r['resources'] == ['leases']]
    assert len(rules) == 1, rules
    return rules[0]['verbs']


def set_lease_verbs(c, verbs):
    r = c.rbac_object('Role')
    for rule in r['rules']:
        if rule['resources'] == ['leases']:
            rule['verbs'] = list(verbs)
    c.double.put_object(r)


def assert_works(c, leader):
    c.wait_leader(leader)
    c.wait_labels(dict((m, 'primary' if m == leader else 'replica') for m in MEMBERS))
    want = {m: 'leader' if m == leader else 'replica' for m in MEMBERS}
    c.wait_for(lambda: {m: (c.pod_status(m) or {}).get('role') for m in MEMBERS} == want, 30,
               'the hapg.io/status annotations to show %r' % want)
    for m in MEMBERS:
        s = c.status(m)
        assert s['api_ok'] is True and s['leader'] == leader, (m, s)
    assert c.double.forbidden() == {}, 'requests refused by RBAC: %r' % c.double.forbidden()


@pytest.fixture(scope='module')
def cl(make_cluster, tmp_path_factory):
    f = tmp_path_factory.mktemp('rbac') / 'rbac.json'
    f.write_text(json.dumps(OBJECTS))
    c = make_cluster(n=3, launcher=True, member_ports=True, rbac=str(f))
    c.wait_leader('pg-0')
    ensure_table(c, 'pg-0')
    return c


def test_members_are_the_service_account(cl):
    c = cl
    assert c.rbac_identity == 'system:serviceaccount:default:hapg'
    if c.backend == 'real':
        # the API server authenticates each member's token as the ServiceAccount
        for m in MEMBERS:
            info = c.double.whoami(c.m(m).token)
            assert info['username'] == c.rbac_identity, info
            assert 'system:serviceaccounts:default' in info['groups'], info
    else:
        subjects = c.double.request('GET', '/_double/rbac', token=None)[1]['subjects']
        assert subjects == {m: c.rbac_identity for m in MEMBERS}
    # ... while the double still tells them apart (faults and stats per member)
    assert set(MEMBERS) <= set(c.double.stats()['by_user'])
    st, body = c.double.request('GET', '/api/v1/namespaces/default/secrets', token=c.m('pg-1').token)
    assert st == 403 and body['message'] == (
        'secrets is forbidden: User "system:serviceaccount:default:hapg" cannot list resource "secrets" in '
        'API group "" in the namespace "default"')
    c.double.reset_stats()


def test_hapg_works_with_the_role(cl):
    assert_works(cl, healthy(cl))


def test_without_lease_update_the_leader_fences_and_nothing_is_lost(cl):
    c = cl
    old = healthy(c)
    verbs = lease_verbs(c)
    chk = Checker(c).start()
    mark = c.log_mark(old)
    try:
        wait_acked(chk, old)
        t0 = time.monotonic()
        set_lease_verbs(c, [v for v in verbs if v != 'update'])
        try:
            m = c.wait_log(old, r'hapg: could not renew the Lease: PUT \S+/leases/%s: HTTP 403 Forbidden: '
                                r'leases\.coordination\.k8s\.io "%s" is forbidden: User '
                                r'"system:serviceaccount:default:hapg" cannot update resource "leases".*'
                           % (c.name, c.name), ttl(c) + 5, since=mark)
            note('leader %s: %s' % (old, m.group(0)))
            c.wait_log(old, r'fencing: stopping this primary \(could not renew the Lease', ttl(c) + 5,
                       since=mark)
            # the checker tries every 50 ms: its first refused write follows the fence shortly
            refused = wait_for(lambda: chk.first_refusal_after(old, chk.last_ack(old).end), 5,
                               'a write refused by %s after its last acknowledged one' % old,
                               interval=0.05)
            last_old = chk.last_ack(old)
            note('Lease update taken away: %s acknowledged its last write %.2fs and refused one %.2fs '
                 'after (ttl %ds)' % (old, last_old.end - t0, refused.end - t0, ttl(c)))
            assert refused.end - t0 < ttl(c), '%s kept accepting writes %.2fs' % (old, refused.end - t0)
            # nobody may take the Lease over without update: all stay in recovery past the expiry
            time.sleep(max(0.0, t0 + ttl(c) + 3 - time.monotonic()))
            assert c.primaries() == [], 'a member is writable without the Lease: %r' % c.primaries()
            assert chk.writable_members(after=refused.end) == [], chk.report()
            denied = c.double.forbidden()
            assert denied.get(old, {}).get('leases', {}).get('update', 0) >= 1, denied
            assert set(denied) <= set(MEMBERS) and all(set(d) == {'leases'} for d in denied.values()), denied
        finally:
            set_lease_verbs(c, verbs)
        leader = healthy(c)
        note('update granted again: healthy, leader %s' % leader)
        wait_acked(chk, leader, n=chk.count_acked(leader) + 5, timeout=20)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=leader, no_loss=True)
    c.double.reset_stats()
    assert_works(c, leader)


def test_the_repository_rbac_yaml(make_cluster):
    """hapg with exactly kubernetes/rbac.yaml (its Lease is named after the cluster: pg)."""
    path = os.path.join(REPO, 'kubernetes', 'rbac.yaml')
    if not os.path.exists(path):
        pytest.skip('no kubernetes/rbac.yaml in %s yet' % REPO)
    c = make_cluster(n=3, name='pg', rbac=path)
    assert c.rbac_identity == 'system:serviceaccount:default:hapg'
    c.wait_leader('pg-0')
    assert_works(c, 'pg-0')
