"""Synchronous replication (hapg.synchronous_mode = on) on a 3-member
cluster under bin/hapg-launcher, each member talking to the API double
through its own port, fast profile (ttl 6, loop_wait 1, retry_timeout 2).

The leader publishes its synchronous standby in the Lease (hapg.io/sync)
and keeps synchronous_standby_names in step; after a failover only a
published standby may take over, so no acknowledged commit is lost.  The
checker (tests/checker.py) writes to every member every 50 ms; a commit
whose wait for the standby was cancelled (pg_cancel_backend; the
server warns that it may not be replicated) does not count as acknowledged.
Tests run in file order; each starts from a healthy cluster (any leader).
"""

import json
import os
import signal
import threading
import time

import psycopg2
import pytest

from checker import Checker, ensure_table
from harness import wait_for
from test_failover import (MEMBERS, RBAC_YAML, assert_checker_clean, healthy, note,
                           rejoin, replicas_of, ttl, undo_faults, wait_acked,
                           wait_new_leader)

SYNC_CONF = {'hapg.synchronous_mode': 'on'}
KILLS = int(os.environ.get('HAPG_SYNC_KILLS', '20'))
STOPS = int(os.environ.get('HAPG_SYNC_STOPS', '5'))
CONTRAST_KILLS = int(os.environ.get('HAPG_SYNC_CONTRAST_KILLS', '5'))


@pytest.fixture(scope='module')
def scl(make_cluster):
    c = make_cluster(n=3, name='pg', launcher=True, member_ports=True, rbac=RBAC_YAML,
                     extra_conf=SYNC_CONF)
    c.wait_leader('pg-0')
    ensure_table(c, 'pg-0')
    return c


def sync_ann(c):
    """The Lease's hapg.io/sync, parsed (None when absent)."""
    ann = ((c.lease() or {}).get('metadata') or {}).get('annotations') or {}
    raw = ann.get('hapg.io/sync')
    return json.loads(raw) if raw else None


def settled(c, leader, k=1):
    """The published set: k standbys, none of them the leader, configured on
    the leader and reported sync by its walsenders; returns the names."""
    a = sync_ann(c)
    if not a or a.get('k') != k or len(a.get('members', [])) != k or leader in a['members']:
        return None
    rows = c.sql(leader, "SELECT application_name AS n, sync_state AS s FROM pg_stat_replication")
    states = {r['n']: r['s'] for r in rows}
    if any(states.get(m) not in ('sync', 'quorum') for m in a['members']):
        return None
    return a['members']


def wait_settled(c, leader, k=1, timeout=30):
    return wait_for(lambda: settled(c, leader, k), timeout,
                    '%d synchronous standby(s) of %s published and in force (Lease: %r)' % (
                        k, leader, sync_ann(c)), interval=0.1)


@pytest.fixture(autouse=True)
def start_healthy(scl):
    """Faults and overrides undone, every member running; yields the leader
    once its synchronous standby is in place."""
    c = scl
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
    wait_settled(c, leader)
    yield leader


def test_leader_publishes_and_configures_its_synchronous_standby(scl, start_healthy):
    """One replica is published, configured as FIRST 1 and shown as sync
    everywhere; the other is potential."""
    c = scl
    leader = start_healthy
    a = sync_ann(c)
    assert a['mode'] == 'on' and a['strict'] is False and a['k'] == 1, a
    sync = a['members'][0]
    other = [m for m in replicas_of(leader) if m != sync][0]
    assert c.scalar(leader, 'SHOW synchronous_standby_names') == 'FIRST 1 ("%s")' % sync
    for m in MEMBERS:
        rows = {r['member']: r for r in c.sql(m, 'SELECT member, sync_state, nosync FROM hapg_members')}
        wait_for(lambda m=m: {r['member']: r['sync_state'] for r in
                              c.sql(m, 'SELECT member, sync_state FROM hapg_members')} ==
                 {leader: None, sync: 'sync', other: 'potential'}, 10,
                 'hapg_members on %s to show %s sync, %s potential' % (m, sync, other))
        assert rows[sync]['nosync'] is False
        st = c.status(m)
        assert st['sync_mode'] == 'on' and st['sync_required'] == 1 and st['sync_standbys'] == [sync], st


def kill_and_check(c, chk, old, how):
    """Node loss (kill) or a freeze past the ttl (stop) of the leader; returns
    the new leader, its first write's delay, and the acknowledged commits it
    lacks."""
    wait_acked(chk, old, n=chk.count_acked(old) + 5)
    if how == 'kill':
        t0 = c.kill9_tree(old)
    else:
        t0 = time.monotonic()
        for pid in [c.m(old).launcher.pid] + c.server_pids(old):
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
    first = wait_for(lambda: chk.first_ack(after=t0, exclude=(old,)), ttl(c) + 30,
                     'a replica to accept writes after the %s of %s' % (how, old), interval=0.05)
    new = first.member
    if how == 'stop':
        time.sleep(1)
        for pid in c.server_pids(old) + [c.m(old).launcher.pid]:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    wait_new_leader(c, old, 10)
    wait_acked(chk, new, n=chk.count_acked(new) + 5, timeout=30)
    lost = chk.missing(new)
    return new, first.end - t0, lost


def drill(c, how, n, expect_no_loss=True):
    """n failovers in a row with the checker writing throughout; the delay
    between the last check and the fault is spread over 0..1.2 s."""
    chk = Checker(c).start()
    took = []
    lost_total = 0
    new = None
    try:
        for i in range(n):
            old = healthy(c, timeout=120)
            if expect_no_loss:
                wait_settled(c, old)
            time.sleep((i % 5) * 0.3)
            new, t, lost = kill_and_check(c, chk, old, how)
            took.append(t)
            lost_total = len(lost)
            note('%s %d/%d of %s: %s writable after %.2f s; acknowledged commits missing on it: %d' % (
                how, i + 1, n, old, new, t, len(lost)))
            if expect_no_loss:
                assert not lost, 'acknowledged commits missing on %s after the %s of %s: %s\n%s' % (
                    new, how, old, [(a.member, a.seq, chk.fmt(a.end)) for a in lost[:10]], chk.report())
            rejoin(c, old, new, timeout=90)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=new, no_loss=expect_no_loss)
    took.sort()
    note('%s x%d: first write on the new leader after median %.2f s, max %.2f s; '
         'acknowledged commits lost: %d of %d' % (how, n, took[len(took) // 2], took[-1],
                                                  lost_total, chk.count_acked()))
    return lost_total


def test_kill_the_leader_repeatedly_loses_no_acknowledged_commit(scl, start_healthy):
    """kill -9 of the leader's whole process tree, KILLS times at spread
    delays: every acknowledged commit is on the new leader, never two
    writable members."""
    drill(scl, 'kill', KILLS)


def test_freeze_the_leader_past_the_ttl_loses_no_acknowledged_commit(scl, start_healthy):
    """SIGSTOP of the leader's processes until a replica took over, then
    SIGCONT, STOPS times: every acknowledged commit is on the new leader."""
    drill(scl, 'stop', STOPS)


def test_switchover_goes_to_the_synchronous_standby(scl, start_healthy):
    """hapg_switchover() without a candidate picks the synchronous standby;
    the new leader publishes a synchronous standby of its own."""
    c = scl
    old = start_healthy
    sync = settled(c, old)[0]
    got = c.scalar(old, 'SELECT hapg_switchover()', timeout=90)
    assert got == sync
    wait_settled(c, sync)
    assert old in replicas_of(sync)


def longest_gap(acks, t0, t1):
    """The longest time without an acknowledged write in [t0, t1]."""
    ends = [t0] + sorted(a.end for a in acks if t0 <= a.end <= t1) + [t1]
    return max(b - a for a, b in zip(ends, ends[1:]))


def test_a_synchronous_standby_stopped_cleanly_does_not_stall_commits(scl, start_healthy):
    """SIGTERM to the synchronous standby's launcher (a clean stop): it tells
    the leader through its Pod on the way out, and commits on the leader
    pause for at most 2 x loop_wait; the other standby takes its place."""
    c = scl
    leader = start_healthy
    sync = settled(c, leader)[0]
    other = [m for m in replicas_of(leader) if m != sync][0]
    mark = c.log_mark(sync)
    chk = Checker(c, members=[leader]).start()
    try:
        wait_acked(chk, leader)
        t0 = time.monotonic()
        c.stop_member(sync)
        wait_acked(chk, leader, n=chk.count_acked(leader) + 40, timeout=30)
        t1 = time.monotonic()
    finally:
        chk.stop()
    gap = longest_gap(chk.acked(member=leader), t0, t1)
    note('clean stop of the synchronous standby %s: longest pause of commits on %s %.2f s '
         '(loop_wait %d s)' % (sync, leader, gap, c.profile['loop_wait']))
    assert 'asked the leader to stop waiting for it' in c.log(sync, mark)
    assert gap <= 2 * c.profile['loop_wait'], gap
    assert wait_settled(c, leader) == [other]
    c.start_member(sync, wait=False)


def set_everywhere(c, settings):
    for m in MEMBERS:
        c.reload(m, settings)


def commit_in_thread(c, member):
    """A commit on member without a statement_timeout; returns (thread,
    result dict with 'done' time or 'error')."""
    res = {}

    def run():
        try:
            conn = psycopg2.connect(host='127.0.0.1', port=c.m(member).port, user='postgres',
                                    dbname='postgres', connect_timeout=5)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO hapg_check (member, seq) VALUES ('strict', -1)")
            res['warnings'] = list(conn.notices)
            res['done'] = time.monotonic()
            conn.close()
        except Exception as e:  # noqa: BLE001
            res['error'] = str(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res


def test_strict_mode_commits_wait_for_a_standby(scl, start_healthy):
    """With hapg.synchronous_mode_strict, both replicas stopped: a commit
    waits, and completes once a replica is back."""
    c = scl
    leader = start_healthy
    set_everywhere(c, {'hapg.synchronous_mode_strict': 'on'})
    wait_for(lambda: (sync_ann(c) or {}).get('strict') is True, 20, 'the Lease to say strict')
    for m in replicas_of(leader):
        c.stop_member(m)
    t, res = commit_in_thread(c, leader)
    t.join(4 * c.profile['loop_wait'] + 2)
    assert 'done' not in res and 'error' not in res, res
    t_back = time.monotonic()
    c.start_member(replicas_of(leader)[0], wait=False)
    t.join(60)
    assert 'done' in res, res
    note('strict: the waiting commit completed %.1f s after a replica was started' % (res['done'] - t_back))


def test_without_strict_commits_go_on_without_standbys(scl, start_healthy):
    """Both replicas stopped, strict off: the leader stops waiting for them
    within a few loops, publishing first that nobody is synchronous."""
    c = scl
    leader = start_healthy
    for m in replicas_of(leader):
        c.stop_member(m)
    t0 = time.monotonic()
    t, res = commit_in_thread(c, leader)
    t.join(30)
    assert 'done' in res, res
    took = res['done'] - t0
    note('non-strict: a commit with both replicas stopped completed after %.1f s' % took)
    assert took <= 5 * c.profile['loop_wait'] + 5, took
    wait_for(lambda: (sync_ann(c) or {}).get('k') == 0, 10, 'the Lease to promise no standby')
    for m in replicas_of(leader):
        c.start_member(m, wait=False)
    wait_settled(c, healthy(c, timeout=60))


def test_failover_refuses_a_candidate_outside_the_synchronous_set(scl, start_healthy):
    """Paused, the leader killed: hapg_failover() refuses the asynchronous
    replica (unless forced) and promotes the synchronous one."""
    c = scl
    old = start_healthy
    sync = settled(c, old)[0]
    other = [m for m in replicas_of(old) if m != sync][0]
    c.scalar(old, 'SELECT hapg_pause()')
    try:
        c.kill9_tree(old)
        err = None
        end = time.monotonic() + ttl(c) + 20
        while time.monotonic() < end:
            try:
                c.scalar(other, "SELECT hapg_failover(%s)", (other,), timeout=60)
                err = 'promoted'
                break
            except psycopg2.Error as e:
                err = str(e)
                if 'healthy leader' not in err:
                    break
            time.sleep(0.5)
        assert err and 'is not a synchronous standby' in err and 'force => true' in err, err
        got = c.scalar(sync, "SELECT hapg_failover(%s)", (sync,), timeout=90)
        assert got == sync
    finally:
        for m in MEMBERS:
            if c.m(m).running():
                c.scalar(m, 'SELECT hapg_resume()')
                break
    rejoin(c, old, sync, timeout=90)


def test_off_for_contrast_counts_lost_commits(scl, start_healthy):
    """The same kill -9 drill with hapg.synchronous_mode = off: prints how
    many acknowledged commits were lost (not asserted: asynchronous)."""
    c = scl
    set_everywhere(c, {'hapg.synchronous_mode': 'off'})
    try:
        wait_for(lambda: sync_ann(c) is None, 30, 'the Lease to drop hapg.io/sync')
        lost = drill(c, 'kill', CONTRAST_KILLS, expect_no_loss=False)
        note('contrast, synchronous_mode off: %d acknowledged commits lost over %d kills' % (
            lost, CONTRAST_KILLS))
    finally:
        set_everywhere(c, {'hapg.synchronous_mode': None})
