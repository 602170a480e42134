"""Failover, fencing, following and rejoining on a 3-member cluster whose
members run under bin/hapg-launcher (the harness's launcher mode), each
member talking to the API double through its own port, fast profile (ttl 6,
loop_wait 1, retry_timeout 2).

One cluster for the module; tests run in file order and each starts from a
healthy cluster (one leader holding the Lease, the two others streaming from
it; the autouse fixture `healthy_start` puts back faults, ports, settings and
stopped members first).  Whoever leads after a test leads the next one, so no
test assumes which member is the leader.

During the scenarios a checker (tests/checker.py) writes to every member
every 50 ms: no two members may accept writes at the same time, and where
the scenario promises it, no acknowledged write may be missing on the new
leader.  Measured times are printed (pytest -s, or in the report of a
failure).
"""

import json
import os
import re
import shutil
import signal
import time

import pytest

from checker import Checker, ensure_table
from harness import lsn_to_int, parse_k8s_time, wait_for

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)
MEMBERS = ['pg-0', 'pg-1', 'pg-2']
MB = 1024 * 1024


def ttl(c):
    return c.profile['ttl']


def fence_margin(c):
    return min(2.0, max(0.5, ttl(c) * 0.1))


def note(msg):
    print('hapg failover: %s' % msg, flush=True)


# ------------------------------------------------------------------ helpers

def timeline(c, m):
    return int(c.status(m)['timeline'])


def replicas_of(leader):
    return sorted(m for m in MEMBERS if m != leader)


def streaming_from(c, leader):
    rows = c.sql(leader, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
    return {r['application_name'] for r in rows}


def wait_following(c, leader, member, timeout=60):
    """Wait until `member` really follows `leader`: a streaming walsender
    for it on the leader (by application_name), the leader's timeline, and
    a commit made on the leader just now replayed.  (A standby that forked
    off the leader's history also shows up as 'streaming' for a moment each
    time it retries, so the row alone proves nothing.)"""
    c.sql(leader, 'SELECT txid_current()')
    marker = lsn_to_int(c.scalar(leader, 'SELECT pg_current_wal_lsn()::text'))
    tl = [timeline(c, leader)]

    def ok():
        if member not in streaming_from(c, leader):
            return False
        r = c.sql1(member, 'SELECT pg_is_in_recovery() AS rec, pg_last_wal_replay_lsn()::text AS lsn')
        # the leader's timeline as it reports it now: right after a promotion
        # hapg_status() may still show the old one for a moment
        tl[0] = timeline(c, leader)
        return (r['rec'] and lsn_to_int(r['lsn'] or '0/0') >= marker
                and timeline(c, member) == tl[0])
    return wait_for(ok, timeout, '%s to follow %s on its timeline past %X/%X (leader on %d)' % (
        member, leader, marker >> 32, marker & 0xffffffff, tl[0]))


def _healthy_now(c):
    h = c.holder()
    if h not in MEMBERS:
        return None
    for m in MEMBERS:
        if not c.m(m).running():
            return None
    if c.primaries() != [h]:
        return None
    others = replicas_of(h)
    if not set(others) <= streaming_from(c, h):
        return None
    for m in MEMBERS:
        s = c.status(m)
        if s['leader'] != h or s['api_ok'] is not True:
            return None
        if s['role'] != ('leader' if m == h else 'replica'):
            return None
    tl = timeline(c, h)
    for m in others:
        if not c.in_recovery(m) or timeline(c, m) != tl:
            return None
    return h


def healthy(c, timeout=120):
    """Wait for exactly one leader (the Lease holder, the only member out of
    recovery) with the two others streaming from it and every member
    agreeing; returns the leader."""
    return wait_for(lambda: _healthy_now(c), timeout,
                    'one leader with two streaming replicas (holder %r, primaries %r)' % (
                        _safe(c.holder), _safe(c.primaries)), interval=0.3)


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return '<%s>' % e


def candidacy(c, member):
    p = c.pod(member) or {}
    raw = ((p.get('metadata') or {}).get('annotations') or {}).get('hapg.io/candidacy')
    return json.loads(raw) if raw else None


def assert_ineligible(c, member, lease_at_kill):
    """member published an ineligible candidacy for the election that
    followed the Lease version seen at the kill."""
    term = lease_at_kill['metadata']['resourceVersion']
    cand = wait_for(lambda: (lambda d: d if d and d.get('term') == term else None)(candidacy(c, member)),
                    10, 'the candidacy of %s for term %s' % (member, term))
    assert cand['eligible'] is False, cand


def wait_new_leader(c, old, timeout):
    """The first holder of the Lease other than `old`, once it is writable."""
    new = wait_for(lambda: (lambda h: h if h and h != old else None)(c.holder()), timeout,
                   'the Lease to pass from %s to another member' % old, interval=0.05)
    wait_for(lambda: c.m(new).running() and not c.in_recovery(new), 30,
             '%s to finish promoting' % new, interval=0.05)
    return new


def history_has(c, viewer, old_tl, new_tl, leader):
    rows = c.sql(viewer, 'SELECT * FROM hapg_history')
    return [r for r in rows if r['old_timeline'] == old_tl and r['new_timeline'] == new_tl
            and r['leader'] == leader]


def wait_history_everywhere(c, old_tl, new_tl, leader, timeout=30):
    for m in MEMBERS:
        wait_for(lambda m=m: history_has(c, m, old_tl, new_tl, leader), timeout,
                 'hapg_history on %s to show the switch %d -> %d to %s' % (m, old_tl, new_tl, leader))


def rejoin(c, member, leader, timeout=60):
    """Start a member's launcher again and wait until it follows leader."""
    if not c.m(member).launcher_alive():
        c.start_member(member, timeout=timeout)
    wait_following(c, leader, member, timeout=timeout)


def wait_acked(chk, member, n=10, timeout=15):
    wait_for(lambda: chk.count_acked(member) >= n, timeout,
             'the checker to get %d writes acknowledged by %s' % (n, member), interval=0.05)


def assert_checker_clean(chk, final_leader=None, no_loss=False):
    note(chk.report())
    v = chk.violations()
    assert not v, 'two members accepted writes at the same time:\n%s' % chk.report()
    if final_leader is not None:
        lost = chk.missing(final_leader)
        note('%d acknowledged writes missing on %s' % (len(lost), final_leader))
        if no_loss:
            assert not lost, '%d acknowledged writes are missing on the new leader %s: %s\n%s' % (
                len(lost), final_leader,
                ', '.join('%s#%s acked at %s' % (a.member, a.seq, chk.fmt(a.end)) for a in lost[:10]),
                chk.report())
        return lost
    return None


def walreceiver_pid(c, member):
    return wait_for(lambda: c.scalar(member, 'SELECT pid FROM pg_stat_wal_receiver'), 15,
                    'the WAL receiver of %s' % member)


def received_lsn(c, member):
    r = c.sql1(member, 'SELECT pg_last_wal_receive_lsn()::text AS r, pg_last_wal_replay_lsn()::text AS p')
    return max(lsn_to_int(r['r'] or '0/0'), lsn_to_int(r['p'] or '0/0'))


def set_and_wait(c, member, settings):
    """Reload settings on a member and wait until the server shows them."""
    c.reload(member, settings)
    for k, v in settings.items():
        if v is None:
            continue
        wait_for(lambda k=k, v=v: c.scalar(member, 'SELECT current_setting(%s)', (k,)) == str(v), 10,
                 '%s = %s on %s' % (k, v, member))


# ------------------------------------------------------------------ fixtures

# The members run with exactly the privileges kubernetes/rbac.yaml grants
# (the double enforces its Role on their tokens; it names the cluster "pg").
RBAC_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'kubernetes', 'rbac.yaml')


@pytest.fixture(scope='module')
def cl(make_cluster):
    c = make_cluster(n=3, name='pg', launcher=True, member_ports=True, rbac=RBAC_YAML)
    c.wait_leader('pg-0')
    ensure_table(c, 'pg-0')
    return c


def undo_faults(c):
    """The double's faults cleared, every member's API port open, every
    setting a test overrode put back (reloaded where the member runs)."""
    c.double.clear_faults()
    for m in MEMBERS:
        c.double.open_port(c.m(m).api_port)
    for m in MEMBERS:
        mm = c.m(m)
        if mm.overrides:
            mm.overrides.clear()
            c._write_overrides(mm)
            if mm.running():
                c.reload(m, {})


@pytest.fixture(autouse=True)
def healthy_start(cl):
    """Undo what an earlier (possibly failed) test left behind, then wait for
    a healthy cluster; yields its leader."""
    c = cl
    undo_faults(c)
    for m in MEMBERS:
        if not c.m(m).launcher_alive():
            if not os.path.exists(os.path.join(c.m(m).datadir, 'PG_VERSION')):
                leader = c.wait_leader(timeout=60)
                c.reclone(m, leader)
            c.start_member(m, wait=False)
    try:
        leader = healthy(c, timeout=60)
    except AssertionError:
        # an earlier test failed and left a member that cannot rejoin (its
        # failure was reported there): give it a fresh copy so that this
        # test starts healthy
        leader = c.wait_leader(timeout=30)
        for m in MEMBERS:
            if m != leader and m not in streaming_from(c, leader):
                note('healthy_start: re-cloning %s from %s (left broken by an earlier test)'
                     % (m, leader))
                c.stop_member(m)
                c.reclone(m, leader)
                c.start_member(m, wait=False)
        leader = healthy(c)
    yield leader


# ------------------------------------------------------------------ node loss

def test_node_loss_replica_takes_over_and_old_leader_rejoins(cl, healthy_start):
    """kill -9 of the leader's launcher, postmaster and every backend (node
    loss): a replica is writable within ttl + 1 s, holds the Lease, the other
    replica follows it; the old node, started again, is rewound and streams
    from the new leader; hapg_history shows the switch everywhere."""
    c = cl
    old = healthy_start
    tl = timeline(c, old)
    chk = Checker(c).start()
    try:
        wait_acked(chk, old)
        t_kill = c.kill9_tree(old)
        first = wait_for(lambda: chk.first_ack(after=t_kill, exclude=(old,)), ttl(c) + 15,
                         'a replica to accept writes after the node loss of %s' % old, interval=0.05)
        new = first.member
        took = first.end - t_kill
        note('node loss of %s: %s writable %.2fs after the kill (ttl %ds)' % (old, new, took, ttl(c)))
        assert took <= ttl(c) + 1, '%s became writable %.2fs after the kill, more than ttl + 1 s' % (new, took)
        assert c.holder() == new, 'the Lease is held by %r, not by the new primary %s' % (c.holder(), new)
        assert c.primaries() == [new]
        # the dead leader cannot update its own Pod: the new one takes the
        # label off, so no Service keeps routing to it
        wait_for(lambda: c.role_label(old) != 'primary', 10,
                 'the stale role=primary label of %s to be removed' % old)
        assert c.role_label(new) == 'primary'
        other = [m for m in replicas_of(old) if m != new][0]
        wait_following(c, new, other, timeout=30)
        assert c.in_recovery(other)
        assert timeline(c, new) == tl + 1
        # the old node comes back: refused as a primary, rewound, a standby
        mark = c.log_mark(old)
        t_start = time.monotonic()
        rejoin(c, old, new)
        note('old leader %s following %s %.1fs after its launcher started' % (
            old, new, time.monotonic() - t_start))
        log = c.log(old, mark)
        assert re.search(r'hapg: this server was a primary but member "%s" holds the Lease' % new, log), \
            log[-3000:]
        assert re.search(r'hapg-launcher: .*(rewind done|base backup done)', log), log[-3000:]
        assert c.primaries() == [new]
        assert c.holder() == new
        wait_history_everywhere(c, tl, tl + 1, new)
        wait_acked(chk, new, n=chk.count_acked(new) + 5)
        assert healthy(c, timeout=30) == new
    finally:
        chk.stop()
    # writes acknowledged by the dead leader but not yet sent are lost (async
    # replication): counted, not asserted
    assert_checker_clean(chk, final_leader=new)


# ------------------------------------------------------------------ leader cut off from the API

def _leader_cut_off(c, old, arm, disarm, what):
    tl = timeline(c, old)
    chk = Checker(c).start()
    mark = c.log_mark(old)
    try:
        wait_acked(chk, old)
        wait_for(lambda: chk.last_obs_of(old), 5, 'the checker to read the Lease')
        t_arm = time.monotonic()
        arm()
        try:
            first = wait_for(lambda: chk.first_ack(after=t_arm, exclude=(old,)), ttl(c) + 15,
                             'a replica to accept writes after %s' % what, interval=0.05)
            new = first.member
            last_old = chk.last_ack(old)
            refused = wait_for(lambda: chk.first_refusal_after(old, last_old.end), 5,
                               '%s to refuse a write' % old, interval=0.05)
            renew = chk.last_obs_of(old)
            renew_wall = parse_k8s_time(renew.renew_time).timestamp()
            fence_after_renew = chk.wall(refused.end) - renew_wall
            note('%s cut off by %s: last write acknowledged %.2fs after the fault, refused '
                 '%.2fs after its last renewal (deadline ttl - margin = %.1fs); %s writable '
                 '%.2fs after the fault, %.2fs after the old leader stopped' % (
                     old, what, last_old.end - t_arm, fence_after_renew, ttl(c) - fence_margin(c),
                     new, first.end - t_arm, first.start - last_old.end))
            assert last_old.end < first.start, \
                'the old leader %s acknowledged a write at %s, after the new leader %s accepted one at %s' % (
                    old, chk.fmt(last_old.end), new, chk.fmt(first.start))
            assert fence_after_renew < ttl(c), \
                '%s still accepted writes %.2fs after its last renewal (ttl %ds)' % (
                    old, fence_after_renew, ttl(c))
            c.wait_log(old, r'fencing: stopping this primary \(could not renew the Lease', 5, since=mark)
            assert c.holder() == new
            wait_for(lambda: c.primaries() == [new], 10, 'only %s out of recovery' % new)
            other = [m for m in replicas_of(old) if m != new][0]
            wait_following(c, new, other, timeout=30)
        finally:
            disarm()
        t_clear = time.monotonic()
        rejoin(c, old, new)
        note('old leader %s following %s %.1fs after its API came back' % (
            old, new, time.monotonic() - t_clear))
        assert c.primaries() == [new]
        wait_history_everywhere(c, tl, tl + 1, new)
        wait_acked(chk, new, n=chk.count_acked(new) + 5)
        assert healthy(c, timeout=30) == new
    finally:
        chk.stop()
    # a fast shutdown ships all WAL to the standbys: nothing may be lost
    assert_checker_clean(chk, final_leader=new, no_loss=True)


@pytest.mark.double_only('HTTP 503 for one member')
def test_leader_cut_off_by_503_fences_before_the_lease_expires(cl, healthy_start):
    c = cl
    old = healthy_start
    _leader_cut_off(c, old,
                    lambda: c.double.add_fault(user=old, mode='error', status=503),
                    lambda: c.double.clear_faults(old),
                    '503 errors')


def test_leader_cut_off_by_hanging_requests_fences_before_the_lease_expires(cl, healthy_start):
    """Requests that never answer: every request of the leader is cut off at
    its fence deadline at the latest."""
    c = cl
    old = healthy_start
    _leader_cut_off(c, old,
                    lambda: c.double.add_fault(user=old, mode='hang'),
                    lambda: c.double.clear_faults(old),
                    'hanging requests')


def test_leader_cut_off_by_closed_port_fences_before_the_lease_expires(cl, healthy_start):
    c = cl
    old = healthy_start
    port = c.m(old).api_port
    _leader_cut_off(c, old,
                    lambda: c.double.close_port(port),
                    lambda: c.double.open_port(port),
                    'its API port closed')


@pytest.mark.double_only('garbage 200 answers to one member\'s Lease writes')
def test_leader_answered_with_garbage_fences_before_the_lease_expires(cl, healthy_start):
    """Every Lease write of the leader is answered 200 with a body that is
    not the Lease (a proxy's error page; the double never executes the
    request): that proves no renewal, so the leader fences by its deadline
    as if cut off.  A garbage 200 used to count as a renewal, and the old
    leader kept accepting writes after a replica had taken the Lease
    (found by bench/chaos.py, fault kind api-garbage)."""
    c = cl
    old = healthy_start
    _leader_cut_off(c, old,
                    lambda: c.double.add_fault(user=old, mode='garbage', verbs=['update'],
                                               resources=['leases']),
                    lambda: c.double.clear_faults(old),
                    'garbage answers to its Lease writes')


# ------------------------------------------------------------------ the whole API down

def test_whole_api_down_nobody_promotes_and_the_leader_fences(cl, healthy_start):
    """Every request fails (fault for user '*'; on the real server the API
    server is stopped with SIGSTOP: connections stay open, nothing answers,
    for longer than ttl and so than any request deadline): the standbys
    cannot elect anyone and stay in recovery, the leader stops accepting
    writes by its fence deadline (within ttl of the outage); once the API is
    back the cluster recovers to one leader with two streaming replicas."""
    c = cl
    old = healthy_start
    reps = replicas_of(old)
    lease0 = c.lease()
    n_hist = len(c.sql(old, 'SELECT * FROM hapg_history'))
    chk = Checker(c).start()
    mark = c.log_mark(old)
    try:
        wait_acked(chk, old)
        t0 = time.monotonic()
        if c.backend == 'real':
            c.double.pause()
        else:
            c.double.add_fault(user='*', mode='error', status=503)
        try:
            hold_until = t0 + ttl(c) + 4      # past every standby's view of the expiry
            samples = 0
            while time.monotonic() < hold_until:
                for r in reps:
                    assert c.in_recovery(r) is True, '%s left recovery while the API was down' % r
                samples += 1
                time.sleep(0.3)
            last_old = chk.last_ack(old)
            refused = chk.first_refusal_after(old, last_old.end)
            assert refused is not None, '%s still accepts writes %.1fs into the outage' % (
                old, time.monotonic() - t0)
            note('whole API down: %s acknowledged its last write %.2fs and refused one %.2fs '
                 'into the outage (ttl %ds); standbys sampled %d times, all in recovery' % (
                     old, last_old.end - t0, refused.end - t0, ttl(c), samples))
            assert refused.end - t0 < ttl(c), \
                '%s kept accepting writes %.2fs into the outage' % (old, refused.end - t0)
            assert chk.writable_members(after=t0) in ([], [old]), chk.report()
            c.wait_log(old, r'fencing: stopping this primary \(could not renew the Lease', 1, since=mark)
            t1 = time.monotonic()
        finally:
            if c.backend == 'real':
                c.double.resume()
            else:
                c.double.clear_faults()
        t1_wall = chk.wall(t1)
        assert not chk.acked(after=last_old.end, before=t1), 'writes were acknowledged after the fence'
        leader = healthy(c)
        t_ok = time.monotonic()
        note('whole API down: healthy again %.1fs after the API came back, leader %s' % (
            t_ok - t1, leader))
        lease1 = c.lease()
        # the fenced leader can only lead again through a promotion (a new
        # timeline), so there is exactly one new switch, made after the outage
        hist = wait_for(lambda: (lambda h: h if len(h) > n_hist else None)(
            c.sql(leader, 'SELECT * FROM hapg_history')), 20, 'the switch in hapg_history')
        new_entries = hist[n_hist:]
        for h in new_entries:
            assert h['switched_at'] is not None and h['switched_at'].timestamp() >= t1_wall, \
                'a promotion during the outage: %r' % h
        assert len(new_entries) == 1 and new_entries[0]['leader'] == leader, (leader, hist)
        t_old = lease0['spec'].get('leaseTransitions', 0)
        t_new = lease1['spec'].get('leaseTransitions', 0)
        assert t_new == t_old + (0 if leader == old else 1), (lease0['spec'], lease1['spec'])
        wait_acked(chk, leader, n=chk.count_acked(leader) + 5, timeout=20)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=leader, no_loss=True)


# ------------------------------------------------------------------ who wins

def _kill_and_elect(c, old):
    """Node loss of the leader; returns (the Lease as it was at the kill,
    the new leader)."""
    lease = c.lease()
    assert lease['spec']['holderIdentity'] == old
    c.kill9_tree(old)
    lease_at_kill = c.lease()
    new = wait_new_leader(c, old, ttl(c) + 15)
    return lease_at_kill, new


def test_lagging_replica_is_not_promoted(cl, healthy_start):
    """A replica more than hapg.maximum_lag_on_failover (1MB) behind the
    position the leader last published is ineligible: its WAL receiver is
    frozen (SIGSTOP), the leader writes ~3MB and dies; the up-to-date replica
    wins although the lagging one sorts first by name."""
    c = cl
    old = healthy_start
    lag, fresh = replicas_of(old)          # the lagging one would win a tie on name
    wr = walreceiver_pid(c, lag)
    os.kill(wr, signal.SIGSTOP)
    try:
        lsn0 = lsn_to_int(c.scalar(old, 'SELECT pg_current_wal_lsn()::text'))
        c.sql(old, 'CREATE TABLE IF NOT EXISTS lag_fill (v text)')
        c.sql(old, "INSERT INTO lag_fill SELECT repeat(md5(i::text), 30) FROM generate_series(1, 3000) i")
        lsn1 = lsn_to_int(c.scalar(old, 'SELECT pg_current_wal_lsn()::text'))
        assert lsn1 - lsn0 >= 2.5 * MB, 'only %d bytes of WAL written' % (lsn1 - lsn0)
        wait_for(lambda: lsn_to_int(c.lease()['metadata']['annotations']['hapg.io/lsn']) >= lsn1, 10,
                 'the leader to publish its position in the Lease')
        wait_for(lambda: received_lsn(c, fresh) >= lsn1, 10, '%s to receive everything' % fresh)
        behind = lsn1 - received_lsn(c, lag)
        assert behind > 1.5 * MB, 'precondition: %s is only %d bytes behind' % (lag, behind)
        mark = c.log_mark(lag)
        lease_at_kill, new = _kill_and_elect(c, old)
        note('lagging replica: %s was %.1f MB behind; %s won' % (lag, behind / MB, new))
        assert new == fresh, 'the lagging replica %s was promoted' % new
        assert_ineligible(c, lag, lease_at_kill)
        c.wait_log(lag, r'expired; ineligible candidate .*lagging', 5, since=mark)
        assert c.in_recovery(lag)
    finally:
        os.kill(wr, signal.SIGCONT)
    wait_following(c, new, lag, timeout=60)
    rejoin(c, old, new)
    assert healthy(c, timeout=30) == new


def test_nofailover_replica_is_not_promoted(cl, healthy_start):
    c = cl
    old = healthy_start
    lo, hi = replicas_of(old)
    try:
        set_and_wait(c, lo, {'hapg.nofailover': 'on'})
        mark = c.log_mark(lo)
        lease_at_kill, new = _kill_and_elect(c, old)
        note('nofailover on %s: %s won' % (lo, new))
        assert new == hi, '%s (hapg.nofailover = on) was promoted' % new
        assert_ineligible(c, lo, lease_at_kill)
        c.wait_log(lo, r'ineligible candidate .*hapg\.nofailover is on', 5, since=mark)
        assert c.in_recovery(lo)
        wait_following(c, new, lo, timeout=30)
    finally:
        c.reload(lo, {'hapg.nofailover': None})
    rejoin(c, old, new)
    assert healthy(c, timeout=30) == new


def test_higher_failover_priority_wins_at_equal_positions(cl, healthy_start):
    c = cl
    old = healthy_start
    lo, hi = replicas_of(old)
    try:
        set_and_wait(c, hi, {'hapg.failover_priority': 5})
        set_and_wait(c, lo, {'hapg.failover_priority': 1})
        # equal positions: nothing is written, both replicas have it all
        pos = lsn_to_int(c.scalar(old, 'SELECT pg_current_wal_lsn()::text'))
        for r in (lo, hi):
            wait_for(lambda r=r: received_lsn(c, r) >= pos, 10, '%s to catch up' % r)
        lease_at_kill, new = _kill_and_elect(c, old)
        term = lease_at_kill['metadata']['resourceVersion']
        cands = {r: wait_for(lambda r=r: (lambda d: d if d and d.get('term') == term else None)(
            candidacy(c, r)), 10, 'the candidacy of %s' % r) for r in (lo, hi)}
        note('failover priority: candidacies %r; %s won' % (cands, new))
        assert cands[lo]['lsn'] == cands[hi]['lsn'] and cands[lo]['timeline'] == cands[hi]['timeline'], \
            'precondition: the replicas were not at the same position: %r' % cands
        assert (cands[lo]['priority'], cands[hi]['priority']) == (1, 5), cands
        assert new == hi, '%s (priority 1) won over %s (priority 5)' % (new, hi)
        wait_following(c, new, lo, timeout=30)
    finally:
        c.reload(hi, {'hapg.failover_priority': None})
        c.reload(lo, {'hapg.failover_priority': None})
    rejoin(c, old, new)
    assert healthy(c, timeout=30) == new


# ------------------------------------------------------------------ data directory removed

def test_data_directory_removed_under_the_leader(cl, healthy_start):
    """rm -rf of the leader's data directory while it runs: it releases the
    Lease and stops at once, so a replica is writable well before the ttl."""
    c = cl
    old = healthy_start
    m = c.m(old)
    chk = Checker(c).start()
    mark = c.log_mark(old)
    try:
        wait_acked(chk, old)
        t_rm = time.monotonic()
        deadline = t_rm + 10
        while os.path.exists(m.datadir):
            shutil.rmtree(m.datadir, ignore_errors=True)
            assert time.monotonic() < deadline, 'could not remove %s' % m.datadir
        t_gone = time.monotonic()
        first = wait_for(lambda: chk.first_ack(after=t_rm, exclude=(old,)), ttl(c) + 15,
                         'a replica to accept writes after the data directory went away',
                         interval=0.05)
        new = first.member
        took = first.end - t_rm
        note('data directory of %s removed (rm took %.2fs): %s writable %.2fs after the removal '
             'started (ttl %ds)' % (old, t_gone - t_rm, new, took, ttl(c)))
        assert took < ttl(c) / 2, '%s became writable only %.2fs after the removal' % (new, took)
        c.wait_log(old, r'released the leader Lease', 5, since=mark)
        assert c.holder() == new
        other = [x for x in replicas_of(old) if x != new][0]
        wait_following(c, new, other, timeout=30)
        assert c.primaries() == [new]
    finally:
        chk.stop()
    assert_checker_clean(chk)
    # the node gets a new copy of the data and rejoins
    c.stop_member(old)
    c.reclone(old, new)
    rejoin(c, old, new)
    assert healthy(c, timeout=30) == new


# ------------------------------------------------------------------ privileges

def test_every_scenario_ran_within_the_manifests_privileges(cl):
    """Everything above ran with the members' tokens bound to the Role of
    kubernetes/rbac.yaml, enforced by the double: no request was refused."""
    assert cl.rbac_identity == 'system:serviceaccount:default:hapg'
    assert not cl.double.forbidden(), cl.double.forbidden()
