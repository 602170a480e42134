"""Quorum commit (hapg.synchronous_mode = quorum, synchronous_node_count 2)
on a 5-member cluster under bin/hapg-launcher, fast profile.

The leader keeps synchronous_standby_names = ANY 2 (its four standbys) and
publishes the four as voters with k 2: a commit is acknowledged once two
of them have it.  After the leader and one standby die together, the three
survivors are exactly the |V| - k + 1 = 3 voters a candidate must hear;
the one that takes over is the most advanced of them and has every
acknowledged commit.  The checker writes to every member every 50 ms.
"""

import os
import time

import pytest

from checker import Checker, ensure_table
from harness import wait_for
from test_failover import RBAC_YAML, assert_checker_clean, note, ttl, undo_faults
from test_sync import sync_ann

NAMES = ['pg-0', 'pg-1', 'pg-2', 'pg-3', 'pg-4']
QUORUM_CONF = {'hapg.synchronous_mode': 'quorum', 'hapg.synchronous_node_count': '2'}
ROUNDS = int(os.environ.get('HAPG_SYNC_QUORUM_ROUNDS', '2'))


@pytest.fixture(scope='module')
def qcl(make_cluster):
    c = make_cluster(n=5, name='pg', launcher=True, member_ports=True, rbac=RBAC_YAML,
                     extra_conf=QUORUM_CONF)
    c.wait_leader('pg-0')
    ensure_table(c, 'pg-0')
    return c


def streaming_from(c, leader):
    rows = c.sql(leader, "SELECT application_name AS n FROM pg_stat_replication WHERE state = 'streaming'")
    return {r['n'] for r in rows}


def quorum_settled(c):
    """One leader, the four others streaming, published as voters with k 2
    and configured as ANY 2 on the leader; returns the leader."""
    h = c.holder()
    if h not in NAMES or c.primaries() != [h]:
        return None
    others = sorted(m for m in NAMES if m != h)
    if set(others) - streaming_from(c, h):
        return None
    a = sync_ann(c)
    if not a or a.get('mode') != 'quorum' or a.get('k') != 2 or sorted(a.get('members', [])) != others:
        return None
    want = 'ANY 2 (%s)' % ', '.join('"%s"' % m for m in others)
    if c.scalar(h, 'SHOW synchronous_standby_names') != want:
        return None
    return h


def wait_quorum(c, timeout=180):
    return wait_for(lambda: quorum_settled(c), timeout,
                    'a leader with four voters, ANY 2, in the Lease and in force (Lease: %r)' % (
                        sync_ann(c),), interval=0.3)


@pytest.fixture(autouse=True)
def start_quorum(qcl):
    c = qcl
    undo_faults(c)
    for m in NAMES:
        if not c.m(m).launcher_alive():
            c.start_member(m, wait=False)
    yield wait_quorum(c)


def test_leader_publishes_four_voters_and_any_two(qcl, start_quorum):
    """Every member shows the four standbys as quorum, the mode and k."""
    c = qcl
    leader = start_quorum
    for m in NAMES:
        wait_for(lambda m=m: {r['member']: r['sync_state'] for r in
                              c.sql(m, 'SELECT member, sync_state FROM hapg_members')} ==
                 {n: (None if n == leader else 'quorum') for n in NAMES}, 15,
                 'hapg_members on %s to show four quorum standbys' % m)
        st = c.status(m)
        assert st['sync_mode'] == 'quorum' and st['sync_required'] == 2, st
        assert sorted(st['sync_standbys']) == sorted(n for n in NAMES if n != leader), st


def test_leader_and_one_standby_lost_together_lose_no_acknowledged_commit(qcl, start_quorum):
    """kill -9 of the leader and of one standby at the same moment, ROUNDS
    times: a survivor takes over with every acknowledged commit."""
    c = qcl
    chk = Checker(c).start()
    new = None
    try:
        for i in range(ROUNDS):
            old = wait_quorum(c)
            victim = sorted(m for m in NAMES if m != old)[i % 4]
            wait_for(lambda: chk.count_acked(old) >= 10 * (i + 1), 15,
                     'writes acknowledged by %s' % old, interval=0.05)
            time.sleep(0.2 * i)
            t0 = time.monotonic()
            for m in (old, victim):
                c.kill9_tree(m)
            first = wait_for(lambda: chk.first_ack(after=t0, exclude=(old, victim)), ttl(c) + 30,
                             'a survivor to accept writes after %s and %s died' % (old, victim),
                             interval=0.05)
            new = first.member
            wait_for(lambda: chk.count_acked(new, after=t0) >= 5, 30,
                     'writes acknowledged by %s' % new, interval=0.05)
            lost = chk.missing(new)
            note('quorum round %d: %s and %s killed; %s writable after %.2f s; '
                 'acknowledged commits missing on it: %d' % (i + 1, old, victim, new, first.end - t0, len(lost)))
            assert not lost, 'acknowledged commits missing on %s: %s\n%s' % (
                new, [(a.member, a.seq) for a in lost[:10]], chk.report())
            for m in (old, victim):
                c.start_member(m, wait=False)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=new, no_loss=True)


def test_survivors_below_the_quorum_do_not_take_over(qcl, start_quorum):
    """Leader and two standbys lost: the two survivors are fewer than the
    three voters a candidate must hear, so nobody takes over on its own
    (one of the lost ones may have the last acknowledged commits); once a
    third voter returns, a survivor does."""
    c = qcl
    old = start_quorum
    lost_ones = sorted(m for m in NAMES if m != old)[:2]
    survivors = sorted(m for m in NAMES if m not in lost_ones and m != old)
    t0 = time.monotonic()
    for m in [old] + lost_ones:
        c.kill9_tree(m)
    time.sleep(ttl(c) * 2 + 4)
    assert c.holder() == old, 'the Lease went to %r with only two voters heard' % c.holder()
    assert not [m for m in survivors if not c.in_recovery(m)]
    c.start_member(lost_ones[0], wait=False)
    new = wait_for(lambda: (lambda h: h if h and h != old else None)(c.holder()), 90,
                   'a member to take over once a third voter is back', interval=0.2)
    note('below quorum: no takeover for %.0f s; %s took over after %s returned' % (
        time.monotonic() - t0, new, lost_ones[0]))
    for m in [old] + lost_ones:
        if not c.m(m).launcher_alive():
            c.start_member(m, wait=False)
