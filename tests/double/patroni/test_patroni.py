"""Debian's Patroni 3.0.2 (Kubernetes DCS) against the double: election, labels, failover.

Three members on 127.0.0.1, each talking to its own --listen port of the
double over HTTPS with its own bearer token (pg-0/1/2), running as the OS user
postgres.  ttl 20, loop_wait 2, retry_timeout 5 (loop_wait + 2*retry_timeout <= ttl).
"""

import os
import shutil
import tempfile
import time

import pytest

from doubletools import wait_for
from patroni_cluster import PATRONI, PG_BIN, PatroniCluster

pytestmark = pytest.mark.skipif(not (os.path.exists(PATRONI) and os.path.isdir(PG_BIN) and os.geteuid() == 0),
                                reason='needs root, /usr/bin/patroni and PostgreSQL 15')

TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 2, 5


@pytest.fixture
def cluster(tls_double):
    # short path: unix sockets live in the member directories (limit 107 bytes)
    work = tempfile.mkdtemp(prefix='pgd', dir='/tmp')
    c = PatroniCluster(work, tls_double.urls, tls_double.ca, ['tok-0', 'tok-1', 'tok-2'],
                       admin_token='tok-admin', scope='pgdouble', ttl=TTL, loop_wait=LOOP_WAIT,
                       retry_timeout=RETRY_TIMEOUT, member_names=['pg-0', 'pg-1', 'pg-2'])
    yield c
    c.stop()
    shutil.rmtree(work, ignore_errors=True)


def masters(c):
    return sorted(n for n, p in c.pods().items() if (p['metadata'].get('labels') or {}).get('role') == 'master')


def test_patroni_elects_one_leader_and_fails_over(cluster, tls_double):
    c = cluster
    c.start()
    leader = c.wait_leader(90)
    c.wait_steady(90)
    assert masters(c) == [leader]
    lock = c.lock_object()
    ann = lock['metadata']['annotations']
    assert ann['leader'] == leader and int(ann['ttl']) == TTL
    assert lock['metadata']['labels'] == {'application': 'patroni', 'cluster-name': 'pgdouble'}
    cfg = tls_double.call('GET', '/api/v1/namespaces/default/configmaps/pgdouble-config')[2]
    assert cfg['metadata']['annotations']['initialize'].isdigit()  # the system identifier
    for n in c.names:
        if n != leader:
            pod = c.pods()[n]
            assert pod['metadata']['labels']['role'] == 'replica'
            assert c.pod_status(pod)['state'] == 'running'
    # every member talked to the API with its own token, and renews by PATCH (strategic merge)
    stats = tls_double.admin('GET', '/_double/stats')[1]['by_user']
    for n in c.names:
        assert stats[n].get('watch', 0) >= 2 and stats[n].get('list', 0) >= 2
    assert stats[leader]['patch'] >= 2
    # leader renewals keep going: the lock's resourceVersion advances
    rv = int(lock['metadata']['resourceVersion'])
    assert wait_for(lambda: int(c.lock_object()['metadata']['resourceVersion']) > rv, 3 * LOOP_WAIT + 5)

    # crash the leader (Patroni and Postgres, SIGKILL): another member takes over after ttl
    t0 = time.monotonic()
    c.kill(leader)
    new = c.wait_leader(TTL + 40, exclude=[leader])
    took = time.monotonic() - t0
    assert new != leader
    assert took < TTL + 40
    assert wait_for(lambda: masters(c) in ([new], sorted([new, leader])), 10)
    ann = c.lock_object()['metadata']['annotations']
    assert ann['leader'] == new and int(ann['transitions']) >= 1
    # the surviving replica follows the new leader
    c.wait_steady(60, members=[n for n in c.names if n != leader])
