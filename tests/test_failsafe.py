"""Failsafe mode (hapg.failsafe_mode = on) on a 3-member cluster under
bin/hapg-launcher, each member talking to the API double through its own
port, fast profile (ttl 6, loop_wait 1, retry_timeout 2: the bound is 3 s,
a standby's patience 4 s).

A leader that cannot renew its Lease stays writable while every member in
the Lease's hapg.io/failsafe list confirms its heartbeats over replication;
a standby leaves an expired failsafe Lease alone while it hears the leader.
Tests run in file order; each starts from a healthy cluster (any leader).
The checker (tests/checker.py) writes to every member every 50 ms: never
two writable members.
"""

import http.client
import json
import os
import signal
import time

import pytest

from checker import Checker, ensure_table
from harness import wait_for
from test_failover import (MEMBERS, RBAC_YAML, assert_checker_clean, healthy, note,
                           replicas_of, ttl, undo_faults)

FAILSAFE_CONF = {'hapg.failsafe_mode': 'on'}


def bound(c):
    return min(max(ttl(c) * 0.5, 2.0), 4.0)      # hapg_failsafe_bound_ms


def patience(c):
    return bound(c) + 1.0


@pytest.fixture(scope='module')
def fcl(make_cluster):
    c = make_cluster(n=3, name='pg', launcher=True, member_ports=True, rbac=RBAC_YAML,
                     extra_conf=FAILSAFE_CONF)
    c.wait_leader('pg-0')
    ensure_table(c, 'pg-0')
    return c


@pytest.fixture(autouse=True)
def start_healthy(fcl):
    """Ports open, no faults, every member running; yields the leader."""
    c = fcl
    undo_faults(c)
    for m in MEMBERS:
        for pid in c.server_pids(m) if c.m(m).launcher_alive() else []:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if not c.m(m).launcher_alive():
            c.start_member(m, wait=False)
    leader = healthy(c, timeout=120)
    # the leader's last renewal carries the member list, and both replicas
    # as streaming (what hapg_failover judges a candidate on)
    wait_for(lambda: len(failsafe_list(c)) == 3 and streaming_in_lease(c) >= set(replicas_of(leader)),
             20, 'the Lease to list all members, the replicas streaming')
    yield leader


def failsafe_list(c):
    ann = (c.lease().get('metadata') or {}).get('annotations') or {}
    try:
        return json.loads(ann.get('hapg.io/failsafe', '{}')).get('members', [])
    except ValueError:
        return []


def streaming_in_lease(c):
    """The members the leader's last renewal reports as streaming."""
    ann = (c.lease().get('metadata') or {}).get('annotations') or {}
    try:
        pos = json.loads(ann.get('hapg.io/members', '{}'))
    except ValueError:
        return set()
    return {m for m, p in pos.items() if isinstance(p, dict) and p.get('state') == 'streaming'}


def renew_time(c):
    return (c.lease().get('spec') or {}).get('renewTime')


def longest_gap(acks, t0, t1):
    """The longest time without an acknowledged write in [t0, t1]."""
    ends = [t0] + [a.end for a in acks if t0 <= a.end <= t1] + [t1]
    return max(b - a for a, b in zip(ends, ends[1:]))


def http_get(c, member, path):
    """(status, body) of the member's HTTP endpoint."""
    conn = http.client.HTTPConnection('127.0.0.1', c.m(member).http_port, timeout=5)
    try:
        conn.request('GET', path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def log_has(c, m, mark, text):
    return text in c.log(m, since=mark)


def test_lease_lists_the_members(fcl, start_healthy):
    """The leader publishes the members it waits for on its renewals, and
    every member sees failsafe off in hapg_status() while the API works."""
    c = fcl
    assert sorted(failsafe_list(c)) == MEMBERS
    for m in MEMBERS:
        st = c.status(m)
        assert st['failsafe_active'] is False and st['failsafe_since'] is None, st


def test_settings_it_needs(fcl, start_healthy):
    """Failsafe mode needs lease-bounded commits: without them the leader
    says so, falls back to plain fencing and stops publishing the member
    list (so no replica waits for a proof that no longer exists); with them
    back it publishes the list again."""
    c = fcl
    leader = start_healthy
    mark = c.log_mark(leader)
    c.reload(leader, {'hapg.lease_bounded_commits': 'off'})
    c.wait_log(leader, r'failsafe mode is off: hapg.failsafe_mode needs hapg.lease_bounded_commits', 10,
               since=mark)
    wait_for(lambda: failsafe_list(c) == [] and 'hapg.io/failsafe' not in
             ((c.lease().get('metadata') or {}).get('annotations') or {}), 10,
             'the member list to leave the Lease')
    c.reload(leader, {'hapg.lease_bounded_commits': None})
    c.wait_log(leader, r'failsafe mode is on', 10, since=mark)
    wait_for(lambda: sorted(failsafe_list(c)) == MEMBERS, 10, 'the member list back in the Lease')


def test_api_down_for_everyone_keeps_the_leader(fcl, start_healthy):
    """The API hangs, then answers 503, then refuses connections, for every
    member, 10 x ttl in all, under a continuous writer: writes go on, no
    member fences or restarts, no failover; afterwards the same leader
    renews and failsafe ends."""
    c = fcl
    leader = start_healthy
    before = {m: c.postmaster_pid(m) for m in MEMBERS}
    marks = {m: c.log_mark(m) for m in MEMBERS}
    transitions = (c.lease().get('spec') or {}).get('leaseTransitions', 0)
    phase = 10 * ttl(c) / 3.0
    chk = Checker(c).start()
    try:
        wait_for(lambda: chk.count_acked(leader) > 5, 10, 'writes on %s' % leader)
        t0 = time.monotonic()
        for m in MEMBERS:
            c.double.add_fault(user=m, mode='hang')
        time.sleep(phase)
        c.double.clear_faults()
        for m in MEMBERS:
            c.double.add_fault(user=m, mode='error', status=503)
        active = c.status(leader)
        primary = http_get(c, leader, '/primary')
        metrics = http_get(c, leader, '/metrics')[1]
        time.sleep(phase)
        c.double.clear_faults()
        for m in MEMBERS:
            c.double.close_port(c.m(m).api_port)
        time.sleep(phase)
        t1 = time.monotonic()
        for m in MEMBERS:
            c.double.open_port(c.m(m).api_port)
        r0 = renew_time(c)
        wait_for(lambda: renew_time(c) != r0, 3 * ttl(c), 'a renewal after the outage')
        wait_for(lambda: not c.status(leader)['failsafe_active'], 3 * ttl(c),
                 'failsafe to end on %s' % leader)
        time.sleep(1)
    finally:
        c.double.clear_faults()
        for m in MEMBERS:
            c.double.open_port(c.m(m).api_port)
        chk.stop()
    gap = longest_gap(chk.acked(leader), t0, t1)
    note('API down for everyone %.0f s: longest write gap on %s %.2f s; status during it %r'
         % (t1 - t0, leader, gap, {k: active[k] for k in ('failsafe_active', 'failsafe_since',
                                                           'api_ok')}))
    assert_checker_clean(chk)
    assert active['failsafe_active'] is True and active['failsafe_since'] is not None, active
    # load balancers and the readiness probe keep sending writes to it
    assert primary[0] == 200 and 'failsafe' in primary[1], primary
    assert 'hapg_failsafe_active 1' in metrics
    assert gap < 2.0, 'writes stopped for %.2f s during the outage' % gap
    assert c.holder() == leader
    assert (c.lease().get('spec') or {}).get('leaseTransitions', 0) == transitions
    assert {m: c.postmaster_pid(m) for m in MEMBERS} == before, 'a server restarted'
    for m in MEMBERS:
        assert not log_has(c, m, marks[m], 'fencing'), '%s fenced' % m
    assert log_has(c, leader, marks[leader], 'failsafe mode: the Lease could not be renewed')
    assert log_has(c, leader, marks[leader], 'failsafe mode ends')


def test_api_cut_for_the_leader_only(fcl, start_healthy):
    """Only the leader loses the API; the replicas see its Lease expire but
    hear it over replication and leave the Lease alone; the leader keeps
    writing and renews once its port opens again."""
    c = fcl
    leader = start_healthy
    marks = {m: c.log_mark(m) for m in MEMBERS}
    chk = Checker(c).start()
    try:
        wait_for(lambda: chk.count_acked(leader) > 5, 10, 'writes on %s' % leader)
        t0 = time.monotonic()
        c.double.close_port(c.m(leader).api_port)
        time.sleep(4 * ttl(c))
        t1 = time.monotonic()
        held = c.holder()
        c.double.open_port(c.m(leader).api_port)
        r0 = renew_time(c)
        wait_for(lambda: renew_time(c) != r0, 3 * ttl(c), 'a renewal after the cut')
    finally:
        c.double.open_port(c.m(leader).api_port)
        chk.stop()
    gap = longest_gap(chk.acked(leader), t0, t1)
    note('API cut for %s %.0f s: longest write gap %.2f s' % (leader, t1 - t0, gap))
    assert_checker_clean(chk)
    assert held == leader, 'the Lease went to %r during the cut' % held
    assert c.holder() == leader
    assert gap < 2.0, 'writes stopped for %.2f s' % gap
    for m in replicas_of(leader):
        assert log_has(c, m, marks[m], 'failsafe: the leader was heard'), \
            '%s did not say why it left the Lease alone' % m


@pytest.mark.parametrize('how', ['sigstop', 'kill'])
def test_leader_cut_and_a_replica_lost_fences(fcl, start_healthy, how):
    """The leader loses the API and then one replica is lost: stopped
    (SIGSTOP, so its connection stays open and it confirms nothing), or
    gone (kill -9 of its whole tree, what deleting its Pod does to the
    server): the leader fences within the bound; the other replica takes
    over after its patience; never two writable members."""
    c = fcl
    leader = start_healthy
    lost, survivor = replicas_of(leader)
    mark = c.log_mark(leader)
    chk = Checker(c).start()
    stopped = []
    try:
        wait_for(lambda: chk.count_acked(leader) > 5, 10, 'writes on %s' % leader)
        c.double.close_port(c.m(leader).api_port)
        wait_for(lambda: c.status(leader)['failsafe_active'], 3 * ttl(c),
                 'failsafe on %s' % leader, interval=0.1)
        t_stop = time.monotonic()
        if how == 'kill':
            c.kill9_tree(lost)
        else:
            for pid in c.server_pids(lost):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        last = wait_for(lambda: (lambda a: a if a and time.monotonic() - a.end > 1.0 else None)(
            chk.last_ack(leader)), 3 * ttl(c), 'the leader to stop acknowledging writes',
            interval=0.1)
        new = wait_for(lambda: (lambda h: h if h == survivor else None)(c.holder()),
                       4 * ttl(c), '%s to take over' % survivor, interval=0.1)
        wait_for(lambda: chk.first_ack(survivor, after=t_stop), 30, 'writes on %s' % survivor)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        c.double.open_port(c.m(leader).api_port)
        chk.stop()
    first = chk.first_ack(survivor, after=t_stop)
    note('%s lost (%s): %s acknowledged its last write %.2f s later, %s took over and wrote '
         '%.2f s after the loss' % (lost, how, leader, last.end - t_stop, new, first.end - t_stop))
    assert_checker_clean(chk)
    assert last.end - t_stop <= bound(c) + 1.0, \
        'the leader wrote %.2f s after a member stopped (bound %.1f s)' % (last.end - t_stop, bound(c))
    assert first.end > last.end
    assert 'failsafe mode could not hold' in c.log(leader, since=mark) or \
        'failsafe mode cannot go on' in c.log(leader, since=mark)


def test_leader_killed_during_an_outage(fcl, start_healthy):
    """The API is down for everyone and the leader dies (kill -9, the whole
    tree): nobody promotes until the API is back, then a replica takes
    over within a ttl and its patience."""
    c = fcl
    leader = start_healthy
    for m in MEMBERS:
        c.double.close_port(c.m(m).api_port)
    try:
        wait_for(lambda: c.status(leader)['failsafe_active'], 3 * ttl(c),
                 'failsafe on %s' % leader, interval=0.1)
        c.kill9_tree(leader)
        time.sleep(2 * ttl(c))
        assert c.primaries() == [], 'a member promoted while the API was down: %r' % c.primaries()
    finally:
        for m in MEMBERS:
            c.double.open_port(c.m(m).api_port)
    t_back = time.monotonic()
    new = wait_for(lambda: (lambda h: h if h and h != leader and c.primaries() == [h] else None)(
        c.holder()), ttl(c) + patience(c) + 10, 'a new leader after the API came back')
    took = time.monotonic() - t_back
    note('API back: %s leads %.2f s later' % (new, took))
    assert new in replicas_of(leader)
    assert took <= ttl(c) + patience(c) + 3


def test_manual_failover_while_the_leader_is_cut_off(fcl, start_healthy):
    """hapg_failover(candidate) while the leader is cut off from the API
    but writable in failsafe: the candidate takes the released Lease at
    once, but accepts writes only after its patience since the last WAL
    from the old leader, which meanwhile fences (it no longer hears the
    candidate): never two writable members."""
    c = fcl
    leader = start_healthy
    cand, caller = replicas_of(leader)
    mark = c.log_mark(leader)
    chk = Checker(c).start()
    try:
        wait_for(lambda: chk.count_acked(leader) > 5, 10, 'writes on %s' % leader)
        c.double.close_port(c.m(leader).api_port)
        wait_for(lambda: c.status(leader)['failsafe_active'], 3 * ttl(c),
                 'failsafe on %s' % leader, interval=0.1)
        # the caller judges on its own clock: the Lease must have expired there
        wait_for(lambda: (lambda e: e is not None and e.total_seconds() == 0)(
            c.status(caller)['lease_expires_in']), 2 * ttl(c),
            'the Lease to expire as %s sees it' % caller, interval=0.1)
        t0 = time.monotonic()
        conn = c.connect(caller, timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '60s'")
                cur.execute('SELECT hapg_failover(%s)', (cand,))
                value = cur.fetchone()[0]
        finally:
            conn.close()
        took = time.monotonic() - t0
        wait_for(lambda: chk.first_ack(cand, after=t0), 30, 'writes on %s' % cand)
        last_old = wait_for(lambda: (lambda a: a if a and time.monotonic() - a.end > 1.0 else None)(
            chk.last_ack(leader)), 3 * ttl(c), 'the old leader to stop acknowledging writes',
            interval=0.1)
    finally:
        c.double.open_port(c.m(leader).api_port)
        chk.stop()
    first_new = chk.first_ack(cand, after=t0)
    note('hapg_failover(%s) returned %r after %.2f s; old leader last ack %+.2f s, '
         'new leader first ack %+.2f s' % (cand, value, took, last_old.end - t0,
                                           first_new.end - t0))
    assert value == cand
    assert_checker_clean(chk)
    assert first_new.start > last_old.end, 'both accepted writes'
    assert 'fencing' in c.log(leader, since=mark)
