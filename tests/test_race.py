"""Two would-be leaders: two independently initdb'd primaries (pg-a, pg-b)
of the same hapg cluster start at the same moment.  Exactly one may end up
holding the Lease; the other must log that it lost and must not carry the
primary label.  Fast profile (ttl 6, loop_wait 1, retry_timeout 2).
"""

import datetime
import time

import pytest

from harness import wait_for

A, B = 'pg-a', 'pg-b'
LOST_RX = r'lost|conflict|409|held by|already (exists|held)|another|not (the )?leader|holder'


@pytest.fixture(scope='module')
def pair(make_cluster):
    c = make_cluster(names=[A, B], standbys=False)
    c.wait_leader(timeout=3 * c.profile['ttl'] + 10)
    return c


def _restart_both(c):
    for m in (A, B):
        c.stop_member(m)
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
    # both are primaries (neither is in recovery): both wanted the lease
    assert sorted(c.primaries()) == [A, B]
    # the winner keeps it over several loops; the loser never takes it
    deadline = time.monotonic() + settle_loops * loop
    seen = set()
    n = 0
    while time.monotonic() < deadline and n < 500:
        n += 1
        seen.add(c.holder())
        time.sleep(0.1)
    assert seen == {winner}, 'the lease changed hands: %r' % seen
    lease1 = c.lease()
    assert lease1['spec'].get('leaseTransitions', 0) == lease0['spec'].get('leaseTransitions', 0)
    # views and labels
    wait_for(lambda: c.status(winner)['role'] == 'leader', 3 * loop + 5, '%s to report leader' % winner)
    st = wait_for(lambda: (lambda s: s if s['leader'] == winner else None)(c.status(loser)),
                  3 * loop + 5, '%s to see %s as leader' % (loser, winner))
    assert st['role'] != 'leader', st
    wait_for(lambda: c.role_label(winner) == 'primary', 3 * loop + 5, '%s labelled primary' % winner)
    wait_for(lambda: c.role_label(loser) != 'primary', 3 * loop + 5,
             '%s (a primary without the lease) not labelled primary' % loser)
    for _ in range(3):
        assert c.role_label(loser) != 'primary'
        time.sleep(loop / 2)
    # the loser says so
    c.wait_log(loser, LOST_RX, 3 * loop + 5, since=marks[loser])
    return winner, loser, t_won


def test_race_for_an_absent_lease(pair):
    c = pair
    marks = _restart_both(c)
    st, _ = c.delete_lease()
    assert st in (200, 202, 204, 404), st
    assert c.lease() is None
    t0 = time.monotonic()
    c.start_members([A, B])
    _check_single_winner(c, marks, t0)


def test_race_for_an_expired_lease(pair):
    """A dead holder's lease: each node must wait a full ttl from when *it*
    first saw the lease, then both try the same resourceVersion: one wins."""
    c = pair
    ttl = c.profile['ttl']
    marks = _restart_both(c)
    c.delete_lease()
    # renewed an hour ago by a holder without a Pod: only a node that trusts
    # renewTime (instead of its own clock) would take it at once
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    c.create_lease('pg-ghost', renew_time=long_ago, transitions=5)
    t0 = time.monotonic()
    c.start_members([A, B])
    winner, loser, t_won = _check_single_winner(c, marks, t0)
    assert c.lease()['spec']['leaseTransitions'] == 6, c.lease()['spec']
    assert t_won >= ttl - c.profile['loop_wait'] - 0.5, \
        'the ghost lease was taken %.1fs after start, before a full ttl (%ds) was observed' % (t_won, ttl)
