"""Steering from SQL on a 3-member cluster under bin/hapg-launcher, fast
profile (ttl 6, loop_wait 1, retry_timeout 2): planned switchover (named
candidate or none, called on a replica or on the leader), scheduled and
stale switchovers, pause and resume, manual failover, the clean hand-over
when the leader is stopped with SIGTERM, and every refusal with its error
text compared with tests/expected/refusals.out.

The cluster and the "healthy start" fixture are those of test_failover.py
(imported): each test starts with one leader and two streaming replicas and
makes no assumption about which member leads.  A checker
(tests/checker.py) writes to every member every 50 ms during the
scenarios: no two members may accept writes at once, and where a scenario
promises no loss, no acknowledged write may be missing on the new leader.
"""

import difflib
import json
import os
import re
import signal
import time

import psycopg2
import pytest

from checker import Checker
from harness import wait_for
from test_failover import (MEMBERS, assert_checker_clean, cl, healthy,  # noqa: F401
                           healthy_start, note, replicas_of, set_and_wait, streaming_from,
                           timeline, ttl, wait_acked, wait_following)

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)

HERE = os.path.dirname(os.path.abspath(__file__))
REWIND_RE = re.compile(r'hapg-launcher: .*(rewinding from|base backup:)')


# ------------------------------------------------------------------ helpers

def call(c, member, sql, params=None, timeout_s=60):
    """Run one steering call as the superuser; returns (value, notices).
    The session may end under us when the call stops this server."""
    conn = psycopg2.connect(host='127.0.0.1', port=c.m(member).port, user='postgres',
                            dbname='postgres', connect_timeout=5,
                            options='-c statement_timeout=%d' % (timeout_s * 1000),
                            application_name='hapg-steer-test')
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            value = cur.fetchone()[0]
        return value, list(conn.notices)
    finally:
        conn.close()


def refusal(c, member, sql, params=None, setup=None):
    """The error a steering call raises: (message, detail, hint)."""
    conn = psycopg2.connect(host='127.0.0.1', port=c.m(member).port, user='postgres',
                            dbname='postgres', connect_timeout=5,
                            options='-c statement_timeout=60000')
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if setup:
                cur.execute(setup)
            try:
                cur.execute(sql, params)
            except psycopg2.Error as e:
                return (e.diag.message_primary or '', e.diag.message_detail or '',
                        e.diag.message_hint or '')
            raise AssertionError('%s on %s did not fail: %r' % (sql, member, cur.fetchone()))
    finally:
        conn.close()


def ensure_extension(c, leader):
    c.sql(leader, 'CREATE EXTENSION IF NOT EXISTS hapg')


def lease_annotation(c, key):
    ann = ((c.lease() or {}).get('metadata') or {}).get('annotations') or {}
    raw = ann.get(key)
    return json.loads(raw) if raw else None


def no_rewind(c, member, mark):
    log = c.log(member, mark)
    m = REWIND_RE.search(log)
    assert m is None, '%s rejoined with a rewind or base backup: %s' % (member, m.group(0))


def wait_leader_is(c, member, timeout):
    return wait_for(lambda: c.holder() == member and c.m(member).running()
                    and not c.in_recovery(member), timeout,
                    '%s to hold the Lease and accept writes' % member, interval=0.05)


def switchover_scenario(c, old, caller, candidate):
    """Switch over while the checker writes: returns the new leader and the
    longest write gap; asserts no loss and a rejoin without rewind."""
    ensure_extension(c, old)
    # both replicas settled on their slots (hapg reconfigures a fresh member
    # once, which restarts its WAL receiver)
    wait_for(lambda: c.scalar(old, 'SELECT count(*) FROM pg_replication_slots WHERE active') == 2,
             30, 'both replicas streaming through their slots')
    tl = timeline(c, old)
    marks = {m: c.log_mark(m) for m in MEMBERS}
    chk = Checker(c).start()
    try:
        wait_acked(chk, old)
        t0 = time.monotonic()
        args = '' if candidate is None else '%s'
        value, notices = call(c, caller, 'SELECT hapg_switchover(%s)' % args,
                              None if candidate is None else (candidate,))
        took = time.monotonic() - t0
        new = value
        note('hapg_switchover(%s) on %s returned %r after %.2fs; notices %r' % (
            candidate, caller, value, took, notices))
        if candidate is not None:
            assert new == candidate
        assert new in replicas_of(old)
        if caller == old:
            assert any('stops now and hands over' in n for n in notices), notices
        wait_leader_is(c, new, 30)
        assert c.holder() == new
        wait_acked(chk, new, n=chk.count_acked(new) + 10)
        for m in replicas_of(new):
            wait_following(c, new, m, timeout=60)
        assert c.primaries() == [new]
        assert timeline(c, new) == tl + 1
        for m in MEMBERS:
            no_rewind(c, m, marks[m])
        wait_for(lambda: [r for r in c.sql(new, 'SELECT * FROM hapg_history WHERE new_timeline = %s',
                                           (tl + 1,))
                          if r['leader'] == new and 'switchover' in r['reason']], 10,
                 'hapg_history to show the switchover to %s' % new)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=new, no_loss=True)
    return new


# ------------------------------------------------------------------ switchover

def test_switchover_to_a_named_candidate_called_on_a_replica(cl, healthy_start):
    """hapg_switchover('<replica>') on the other replica waits until the
    candidate accepts writes and returns its name; nothing acknowledged is
    lost; the old leader streams from the new one without pg_rewind."""
    c = cl
    old = healthy_start
    cand, caller = replicas_of(old)
    switchover_scenario(c, old, caller, cand)


def test_switchover_to_a_replica_that_was_behind_a_moment_ago(cl, healthy_start):
    """A candidate refused on positions (here: more than
    hapg.maximum_lag_on_failover behind in the leader's last renewal, which
    is up to one loop old) is judged again on the next renewal: once it has
    caught up, the call succeeds instead of failing on old news.  (This is
    what a WAL segment switch does to a fresh replica for an instant; CI
    once failed on it.)"""
    c = cl
    old = healthy_start
    cand, caller = replicas_of(old)
    ensure_extension(c, old)
    wait_for(lambda: c.scalar(old, 'SELECT count(*) FROM pg_replication_slots WHERE active') == 2,
             30, 'both replicas streaming through their slots')
    pid = c.scalar(cand, 'SELECT pid FROM pg_stat_wal_receiver')
    assert pid, 'no WAL receiver on %s' % cand
    lag_sql = 'SELECT lag_bytes FROM hapg_members WHERE member = %s'
    os.kill(pid, signal.SIGSTOP)
    try:
        c.sql(old, 'CREATE TABLE IF NOT EXISTS steer_pad (x text); '
              "INSERT INTO steer_pad SELECT repeat('x', 1000) FROM generate_series(1, 4000)",
              timeout=30)
        wait_for(lambda: (c.scalar(caller, lag_sql, (cand,)) or 0) > 1024 * 1024, 20,
                 '%s to show %s more than 1 MB behind' % (caller, cand), interval=0.05)
    finally:
        os.kill(pid, signal.SIGCONT)
    # the caller still holds the renewal that shows the lag
    t0 = time.monotonic()
    value, notices = call(c, caller, 'SELECT hapg_switchover(%s)', (cand,))
    took = time.monotonic() - t0
    note('hapg_switchover(%s) on %s right after it caught up: %r after %.2fs' % (
        cand, caller, value, took))
    assert value == cand
    wait_leader_is(c, cand, 30)
    for m in replicas_of(cand):
        wait_following(c, cand, m, timeout=60)


def test_switchover_without_candidate_called_on_the_leader(cl, healthy_start):
    """hapg_switchover() on the leader picks the healthiest replica, returns
    its name with a NOTICE (this server stops to hand over), and the old
    leader comes back as a replica without pg_rewind, nothing lost."""
    c = cl
    old = healthy_start
    switchover_scenario(c, old, old, None)


def test_switchover_on_the_candidate_itself(cl, healthy_start):
    """Called on the candidate, the call returns once that very server is
    writable."""
    c = cl
    old = healthy_start
    cand = replicas_of(old)[0]
    new = switchover_scenario(c, old, cand, cand)
    assert not c.in_recovery(new)


def test_scheduled_switchover_happens_at_its_time(cl, healthy_start):
    """hapg_switchover(candidate, scheduled_at) returns at once; every member
    shows the pending switchover; it happens at its time, within a loop."""
    c = cl
    old = healthy_start
    ensure_extension(c, old)
    cand, caller = replicas_of(old)
    delay = 4.0
    msg, _ = call(c, caller, "SELECT hapg_switchover(%s, now() + %s * interval '1 second')",
                  (cand, delay))
    t_sched = time.monotonic() + delay
    note('scheduled: %s' % msg)
    assert 'scheduled' in msg and cand in msg
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['pending_switchover'], 5,
                 'hapg_status() on %s to show the pending switchover' % m)
    assert cand in c.status(old)['pending_switchover']
    assert c.holder() == old
    new = wait_for(lambda: c.holder() if c.holder() != old else None, delay + 15,
                   'the scheduled switchover', interval=0.05)
    t_switch = time.monotonic()
    note('scheduled switchover: Lease moved %.2fs after the scheduled time' % (t_switch - t_sched))
    assert new == cand
    assert t_switch >= t_sched - 0.3, 'switched %.2fs before its time' % (t_sched - t_switch)
    assert t_switch <= t_sched + c.profile['loop_wait'] + 1.5
    wait_leader_is(c, cand, 30)
    wait_for(lambda: c.status(caller)['pending_switchover'] is None, 10,
             'the pending switchover to be cleared')
    healthy(c, timeout=60)


def test_stale_scheduled_switchover_is_dropped_and_cancel_works(cl, healthy_start):
    """A switchover whose time passed long ago (written straight into the
    Lease, as if the leader had been away) is dropped with a log line, not
    carried out; hapg_cancel_switchover() drops a future one."""
    c = cl
    old = healthy_start
    ensure_extension(c, old)
    cand = replicas_of(old)[0]
    mark = c.log_mark(old)
    now_us = int(time.time() * 1e6)
    stale = {'from': old, 'to': cand, 'scheduled_at_us': now_us - 3600 * 10 ** 6,
             'requested_at_us': now_us - 7200 * 10 ** 6, 'requested_by': 'test'}

    def put_stale():
        lease = c.lease()
        lease['metadata'].setdefault('annotations', {})['hapg.io/switchover'] = json.dumps(stale)
        st, _ = c.put_lease(lease)
        return st == 200
    wait_for(put_stale, 10, 'writing a stale switchover into the Lease')
    wait_for(lambda: lease_annotation(c, 'hapg.io/switchover') is None, 10,
             'the leader to drop the stale switchover')
    wait_for(lambda: re.search(r'hapg: dropped the switchover to %s requested by "test": it is stale'
                               % cand, c.log(old, mark)), 5, 'the log line of the drop')
    time.sleep(c.profile['loop_wait'] * 2)
    assert c.holder() == old and c.primaries() == [old]

    msg, _ = call(c, cand, "SELECT hapg_switchover(NULL, now() + interval '1 hour')")
    assert 'scheduled' in msg
    assert lease_annotation(c, 'hapg.io/switchover')['to'] == ''
    msg, _ = call(c, cand, 'SELECT hapg_cancel_switchover()')
    assert msg == 'switchover cancelled'
    assert lease_annotation(c, 'hapg.io/switchover') is None
    msg, _ = call(c, cand, 'SELECT hapg_cancel_switchover()')
    assert msg == 'no switchover was pending'
    assert c.holder() == old


# ------------------------------------------------------------------ pause, manual failover

def test_pause_blocks_failover_and_manual_failover_works(cl, healthy_start):
    """Paused: every member shows it; kill -9 of the leader and nobody
    promotes, even well past the ttl; hapg_failover(candidate) then promotes
    the candidate; after hapg_resume() the killed member rejoins."""
    c = cl
    old = healthy_start
    ensure_extension(c, old)
    cand, other = replicas_of(old)
    msg, _ = call(c, other, 'SELECT hapg_pause()')
    assert msg == 'cluster "pg" paused'
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['paused'] is True, 5, '%s to show paused' % m)
        assert all(r['paused'] for r in c.sql(m, 'SELECT paused FROM hapg_members'))
    assert call(c, other, 'SELECT hapg_pause()')[0] == 'cluster "pg" was already paused'
    c.kill9_tree(old)
    t_kill = time.monotonic()
    time.sleep(ttl(c) + 3)
    assert c.holder() == old, 'the Lease moved while paused: %r' % c.holder()
    assert c.primaries() == [], 'a member was promoted while paused: %r' % c.primaries()
    note('paused: nobody promoted %.1fs after the kill (ttl %d)' % (time.monotonic() - t_kill, ttl(c)))
    err = refusal(c, other, 'SELECT hapg_switchover()')
    assert 'no leader to switch over from' in err[0] or 'is paused' in err[0], err
    t0 = time.monotonic()
    value, _ = call(c, other, 'SELECT hapg_failover(%s)', (cand,))
    note('hapg_failover(%s) returned after %.2fs' % (cand, time.monotonic() - t0))
    assert value == cand
    wait_leader_is(c, cand, 30)
    wait_following(c, cand, other, timeout=30)
    wait_for(lambda: [r for r in c.sql(cand, 'SELECT * FROM hapg_history')
                      if r['leader'] == cand and 'manual failover' in r['reason']], 10,
             'hapg_history to show the manual failover to %s' % cand)
    assert call(c, cand, 'SELECT hapg_resume()')[0] == 'cluster "pg" resumed'
    for m in (cand, other):
        wait_for(lambda m=m: c.status(m)['paused'] is False, 5, '%s to show resumed' % m)
    c.start_member(old)
    wait_following(c, cand, old, timeout=90)
    healthy(c, timeout=60)


def test_resume_lets_failover_happen(cl, healthy_start):
    """Kill the leader while paused: nobody promotes; hapg_resume() and a
    replica takes over at once (the Lease has long expired)."""
    c = cl
    old = healthy_start
    ensure_extension(c, old)
    r1, r2 = replicas_of(old)
    call(c, r1, 'SELECT hapg_pause()')
    for m in (r1, r2):
        wait_for(lambda m=m: c.status(m)['paused'] is True, 5, '%s to show paused' % m)
    c.kill9_tree(old)
    time.sleep(ttl(c) + 2)
    assert c.primaries() == [] and c.holder() == old
    t0 = time.monotonic()
    call(c, r2, 'SELECT hapg_resume()')
    new = wait_for(lambda: (lambda h: h if h in (r1, r2) else None)(c.holder()), 15,
                   'a replica to take over after hapg_resume()', interval=0.05)
    wait_leader_is(c, new, 30)
    note('resume: %s leads %.2fs after hapg_resume()' % (new, time.monotonic() - t0))
    assert time.monotonic() - t0 < 5
    c.start_member(old)
    healthy(c, timeout=90)


# ------------------------------------------------------------------ clean hand-over on stop

def test_sigterm_to_the_leader_hands_over_without_loss(cl, healthy_start):
    """SIGTERM to the leader's launcher (pod deletion): the best replica holds
    the Lease and accepts writes well before the ttl, with every
    acknowledged write; started again, the old leader streams from it
    without pg_rewind."""
    c = cl
    old = healthy_start
    marks = {m: c.log_mark(m) for m in MEMBERS}
    chk = Checker(c).start()
    try:
        wait_acked(chk, old)
        lpid = c.launcher_pid(old)
        t_term = time.monotonic()
        os.kill(lpid, signal.SIGTERM)
        first = wait_for(lambda: chk.first_ack(after=t_term, exclude=(old,)), ttl(c) + 10,
                         'a replica to accept writes after SIGTERM to %s' % old, interval=0.02)
        took = first.end - t_term
        new = first.member
        note('SIGTERM hand-over: %s writable %.2fs after SIGTERM to %s (ttl %d)' % (
            new, took, old, ttl(c)))
        assert took < ttl(c) / 2, 'took %.2fs: not a hand-over, the Lease ran out' % took
        assert c.holder() == new
        c.m(old).launcher.wait(timeout=30)
        log = c.log(old, marks[old])
        assert re.search(r'hapg hand-over: released the Lease to "%s"' % new, log), log[-2000:]
        wait_acked(chk, new, n=chk.count_acked(new) + 10)
    finally:
        chk.stop()
    assert_checker_clean(chk, final_leader=new, no_loss=True)
    c.start_member(old)
    wait_following(c, new, old, timeout=60)
    for m in MEMBERS:
        no_rewind(c, m, marks[m])


# ------------------------------------------------------------------ refusals

def test_every_refusal_has_its_error_text(cl, healthy_start):
    """Each refusal is an SQL error with a reason and a hint, and changes
    nothing.  The texts (member names replaced by their roles, byte counts
    and API errors by placeholders) must match tests/expected/refusals.out."""
    c = cl
    leader = healthy_start
    ensure_extension(c, leader)
    r1, r2 = replicas_of(leader)
    names = {leader: 'LEADER', r1: 'REPLICA1', r2: 'REPLICA2'}
    out = []

    def norm(s):
        for k, v in names.items():
            s = s.replace('"%s"' % k, '"%s"' % v)
        s = re.sub(r'\b\d+ bytes\b', 'N bytes', s)
        return s

    def case(title, member, sql, params=None, setup=None, detail=None):
        msg, det, hint = refusal(c, member, sql, params, setup=setup)
        before = c.lease()
        out.append('-- %s (on %s)' % (title, names.get(member, member)))
        out.append('ERROR:  %s' % norm(msg))
        if det:
            out.append('DETAIL:  %s' % (detail if detail else norm(det)))
        if hint:
            out.append('HINT:  %s' % norm(hint))
        out.append('')
        return before

    def unchanged(before):
        after = c.lease()
        for k in ('hapg.io/switchover', 'hapg.io/config', 'hapg.io/handover'):
            assert (before['metadata'].get('annotations') or {}).get(k) == \
                (after['metadata'].get('annotations') or {}).get(k), k
        assert before['spec']['holderIdentity'] == after['spec']['holderIdentity']

    unchanged(case('unknown member', r1, "SELECT hapg_switchover('pg-9')"))
    unchanged(case('the candidate is the leader', r1, 'SELECT hapg_switchover(%s)', (leader,)))
    unchanged(case('scheduled in the past', r1,
                   "SELECT hapg_switchover(NULL, now() - interval '1 minute')"))
    unchanged(case('failover with a healthy leader', r1, 'SELECT hapg_failover(%s)', (r1,)))
    unchanged(case('failover without a candidate', r1, 'SELECT hapg_failover(NULL)'))

    # nofailover
    set_and_wait(c, r1, {'hapg.nofailover': 'on'})
    wait_for(lambda: c.members_view(r2)[r1]['nofailover'] is True, 10,
             'nofailover of %s to be published' % r1)
    unchanged(case('nofailover', r2, 'SELECT hapg_switchover(%s)', (r1,)))
    c.reload(r1, {'hapg.nofailover': None})
    wait_for(lambda: c.members_view(r2)[r1]['nofailover'] is False, 10,
             'nofailover of %s to be cleared' % r1)

    # lagging: its WAL receiver frozen while the leader writes 3 MB
    wrpid = wait_for(lambda: c.scalar(r2, 'SELECT pid FROM pg_stat_wal_receiver'), 15,
                     'the WAL receiver of %s' % r2)
    os.kill(wrpid, signal.SIGSTOP)
    try:
        c.sql(leader, 'CREATE TABLE IF NOT EXISTS steer_fill(v text)')
        c.sql(leader, "INSERT INTO steer_fill SELECT repeat(md5(i::text), 30) "
                      "FROM generate_series(1, 3000) i")
        wait_for(lambda: (c.members_view(r1)[r2]['lag_bytes'] or 0) > 1024 * 1024, 15,
                 'the lag of %s to show' % r2)
        unchanged(case('lagging beyond hapg.maximum_lag_on_failover', r1,
                       'SELECT hapg_switchover(%s)', (r2,)))
    finally:
        os.kill(wrpid, signal.SIGCONT)
    wait_following(c, leader, r2, timeout=60)

    # not streaming: stopped
    c.stop_member(r2)
    wait_for(lambda: r2 not in streaming_from(c, leader), 15, '%s to disconnect' % r2)
    wait_for(lambda: c.members_view(r1)[r2]['state'] != 'streaming', 10,
             'the leader to report %s gone' % r2)
    unchanged(case('not streaming', r1, 'SELECT hapg_switchover(%s)', (r2,)))
    c.start_member(r2)
    wait_following(c, leader, r2, timeout=60)
    wait_for(lambda: c.members_view(r1)[r2]['state'] == 'streaming', 10,
             'the leader to report %s streaming again' % r2)

    # paused, without a candidate
    call(c, r1, 'SELECT hapg_pause()')
    unchanged(case('paused without a candidate', r2, 'SELECT hapg_switchover()'))
    call(c, r1, 'SELECT hapg_resume()')

    # another switchover pending
    call(c, r1, "SELECT hapg_switchover(%s, now() + interval '1 hour')", (r2,))
    unchanged(case('another switchover pending', r2, 'SELECT hapg_switchover(%s)', (r1,)))
    call(c, r1, 'SELECT hapg_cancel_switchover()')

    # API unreachable from the caller
    c.double.close_port(c.m(r1).api_port)
    try:
        unchanged(case('API unreachable', r1, 'SELECT hapg_pause()', detail='<the API error>'))
    finally:
        c.double.open_port(c.m(r1).api_port)

    # timeout waiting for the new leader: the candidate cannot reach the API
    c.double.close_port(c.m(r1).api_port)
    try:
        case('timeout waiting for the new leader', r2, 'SELECT hapg_switchover(%s)', (r1,),
             setup='SET hapg.switchover_timeout = 2', detail='<what this member sees>')
    finally:
        c.double.open_port(c.m(r1).api_port)
    # the cluster recovers on its own: the Lease ran out, an election follows
    for m in MEMBERS:
        if not c.m(m).launcher_alive():
            c.start_member(m)
    healthy(c, timeout=90)

    # no request was refused by RBAC along the way
    assert not c.double.forbidden(), c.double.forbidden()
    got = '\n'.join(out)
    with open(os.path.join(c.base_dir, 'refusals.out'), 'w') as f:
        f.write(got)
    with open(os.path.join(HERE, 'expected', 'refusals.out')) as f:
        want = f.read()
    diff = '\n'.join(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                          'expected/refusals.out', 'got', lineterm=''))
    assert not diff, 'refusal texts differ:\n%s' % diff
