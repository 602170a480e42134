"""Two would-be leaders: two independently initdb'd primaries (pg-a, pg-b)
of the same hapg cluster start at the same moment.  Exactly one may end up
holding the Lease; the other, a primary that sees another member's valid
Lease, must fence: log why and stop (it never carries the primary label).
Fast profile (ttl 6, loop_wait 1, retry_timeout 2).  Without the launcher
(the harness's default mode) a fenced member stays down.
"""

import datetime
import os
import time

import pytest

from harness import wait_for

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)

A, B = 'pg-a', 'pg-b'


def fence_rx(winner):
    return (r'WARNING:  hapg: fencing: stopping this primary \(another member holds the Lease: '
            r'the leader Lease "c1" is held by "%s"\)' % winner)


@pytest.fixture(scope='module')
def pair(make_cluster):
    # no Pods at first: neither takes part (nor fences) before the tests race them
    c = make_cluster(names=[A, B], standbys=False, create_pods=False)
    for m in (A, B):
        c.create_pod(m)
    c.wait_leader(timeout=3 * c.profile['ttl'] + 10)
    return c


def _restart_both(c):
    """Stop both and make them two fresh would-be leaders again: the files a
    fence and an earlier membership leave (standby.signal, the rejoin note,
    hapg.joined, which would make the start-up guard refuse a primary start)
    are removed, and the Pods are recreated without labels or status."""
    for m in (A, B):
        c.stop_member(m)
    for m in (A, B):
        for f in ('standby.signal', 'hapg.rejoin', 'hapg.joined'):
            try:
                os.unlink(os.path.join(c.m(m).datadir, f))
            except FileNotFoundError:
                pass
        c.delete_pod(m)
        c.create_pod(m)
    marks = {m: c.log_mark(m) for m in (A, B)}
    return marks


def _check_single_winner(c, marks, t_start, settle_loops=4):
    ttl = c.profile['ttl']
    loop = c.profile['loop_wait']
    winner = wait_for(lambda: c.holder() in (A, B) and c.holder(), 3 * ttl + 10,
                      'the lease to be held by %s or %s (held by %r)' % (A, B, c.holder()))
    t_won = time.monotonic() - t_start
    loser = B if winner == A else A
    lease0 = c.lease()
    # the loser was a primary that saw the winner's valid Lease: it says so
    # and stops (fast shutdown)
    c.wait_log(loser, fence_rx(winner), 3 * loop + 5, since=marks[loser])
    wait_for(lambda: not c.m(loser).running(), 3 * loop + 10,
             '%s (fenced) to stop' % loser)
    assert os.path.exists(os.path.join(c.m(loser).datadir, 'standby.signal')), \
        '%s fenced without standby.signal: it would come back as a primary' % loser
    # the winner keeps it over several loops and is the only primary left
    deadline = time.monotonic() + settle_loops * loop
    seen = set()
    n = 0
    while time.monotonic() < deadline and n < 500:
        n += 1
        seen.add(c.holder())
        time.sleep(0.1)
    assert seen == {winner}, 'the lease changed hands: %r' % seen
    assert c.primaries() == [winner]
    lease1 = c.lease()
    assert lease1['spec'].get('leaseTransitions', 0) == lease0['spec'].get('leaseTransitions', 0)
    # views and labels
    wait_for(lambda: c.status(winner)['role'] == 'leader', 3 * loop + 5, '%s to report leader' % winner)
    wait_for(lambda: c.role_label(winner) == 'primary', 3 * loop + 5, '%s labelled primary' % winner)
    assert c.role_label(loser) != 'primary', '%s (it lost the race) is labelled primary' % loser
    log = c.log(loser, marks[loser])
    assert 'acquired the leader Lease' not in log and 'created and holds' not in log, log[-3000:]
    return winner, loser, t_won


def _start_both(c):
    """Start both at the same moment without waiting for them to be ready:
    a loser may fence (stop) before pg_ctl would have seen it up."""
    for m in (A, B):
        c.start_member(m, wait=False)


def test_race_for_an_absent_lease(pair):
    c = pair
    marks = _restart_both(c)
    st, _ = c.delete_lease()
    assert st in (200, 202, 204, 404), st
    assert c.lease() is None
    t0 = time.monotonic()
    _start_both(c)
    _check_single_winner(c, marks, t0)


def test_race_for_an_expired_lease(pair):
    """A dead holder's Lease (renewed an hour ago by a member without a Pod).
    Two primaries that start while it is valid on their own clocks may not
    take a single write under it: both fence at once.  Started again they
    are standbys (the fence left standby.signal): each must wait a full ttl
    from when *it* first saw the Lease (a node that trusted renewTime would
    take it at once), then both stand in the same election (the same
    resourceVersion) and exactly one takes the Lease and promotes."""
    c = pair
    ttl = c.profile['ttl']
    loop = c.profile['loop_wait']
    marks = _restart_both(c)
    c.delete_lease()
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    c.create_lease('pg-ghost', renew_time=long_ago, transitions=5)
    rv0 = c.lease()['metadata']['resourceVersion']
    _start_both(c)
    for m in (A, B):
        c.wait_log(m, fence_rx('pg-ghost'), 3 * loop + 10, since=marks[m])
        wait_for(lambda m=m: not c.m(m).running(), 3 * loop + 10, '%s (fenced) to stop' % m)
        assert os.path.exists(os.path.join(c.m(m).datadir, 'standby.signal')), m
    assert c.lease()['metadata']['resourceVersion'] == rv0, 'the fenced primaries wrote the Lease'
    # as standbys now
    marks = {m: c.log_mark(m) for m in (A, B)}
    t0 = time.monotonic()
    c.start_members([A, B])
    winner = wait_for(lambda: c.holder() in (A, B) and c.holder(), 3 * ttl + 10,
                      'the lease to be held by %s or %s (held by %r)' % (A, B, c.holder()))
    t_won = time.monotonic() - t0
    loser = B if winner == A else A
    assert c.lease()['spec']['leaseTransitions'] == 6, c.lease()['spec']
    assert t_won >= ttl - loop - 0.5, \
        'the ghost lease was taken %.1fs after start, before a full ttl (%ds) was observed' % (t_won, ttl)
    wait_for(lambda: not c.in_recovery(winner), 3 * loop + 5, '%s to promote' % winner)
    c.wait_log(loser, r'the Lease held by "pg-ghost" expired; eligible candidate', 3 * loop + 5,
               since=marks[loser])
    # the winner keeps it, the loser stays a standby and never writes the Lease
    deadline = time.monotonic() + 4 * loop
    seen = set()
    while time.monotonic() < deadline:
        seen.add(c.holder())
        assert c.in_recovery(loser), '%s left recovery' % loser
        time.sleep(0.1)
    assert seen == {winner}, 'the lease changed hands: %r' % seen
    assert c.lease()['spec']['leaseTransitions'] == 6, c.lease()['spec']
    log = c.log(loser, marks[loser])
    assert 'acquired the leader Lease' not in log and 'is promoting' not in log, log[-3000:]
    wait_for(lambda: c.role_label(winner) == 'primary', 3 * loop + 5, '%s labelled primary' % winner)
    assert c.role_label(loser) != 'primary'
