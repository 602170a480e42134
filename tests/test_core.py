"""Core behaviour of hapg on a 3-member cluster (pg-0 primary, pg-1 and pg-2
streaming standbys) against the Kubernetes API double, fast profile
(ttl 6, loop_wait 1, retry_timeout 2).

One cluster for the whole module; the tests run in file order and every test
leaves the cluster healthy (faults cleared, settings restored).  pg-0 leads
throughout: API outages here are shorter than the leader's fence deadline
(last renewal + ttl - margin); longer ones, failover and rejoining are
tests/test_failover.py's.
"""

import json
import re
import threading
import time

import pytest

from harness import lsn_to_int, parse_k8s_time, pid_alive, proc_memory, seconds, wait_for

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)
MEMBERS = ['pg-0', 'pg-1', 'pg-2']
STANDBYS = ['pg-1', 'pg-2']
WRITE_VERBS = ('create', 'update', 'patch', 'delete')
LSN_RX = re.compile(r'^[0-9A-F]+/[0-9A-F]+$', re.I)


def ttl(c):
    return c.profile['ttl']


def loop(c):
    return c.profile['loop_wait']


def revocation_delay(c):
    """How long a revoked token may still be accepted: kube-apiserver caches
    a successful token authentication for 10 s (TokenSuccessCacheTTL, not a
    flag); the double forgets a revoked token at once."""
    return 10 if c.backend == 'real' else 0


def settle(c):
    """A bound for 'within a few loops' (includes a request deadline)."""
    return 4 * loop(c) + 2 * c.profile['retry_timeout'] + 3


def spec(c):
    return (c.lease() or {}).get('spec') or {}


def fence_margin(c):
    """As src/lease.c: ttl/10, between 0.5 and 2 s."""
    return min(2.0, max(0.5, ttl(c) * 0.1))


def healthy(c):
    """Wait until every member reports api_ok and pg-0 holds the lease."""
    c.wait_leader('pg-0', timeout=3 * ttl(c) + 10)
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['api_ok'] is True, settle(c) + ttl(c),
                 '%s to report api_ok again' % m)


def pids(c):
    return {m: (c.postmaster_pid(m), c.worker_pid(m)) for m in MEMBERS}


def assert_pids_unchanged(c, before):
    after = pids(c)
    for m in MEMBERS:
        pm, wk = before[m]
        assert after[m][0] == pm, '%s: postmaster pid changed %s -> %s (server restarted?)' % (
            m, pm, after[m][0])
        assert after[m][1] == wk, '%s: hapg worker pid changed %s -> %s (worker crashed/restarted)' % (
            m, wk, after[m][1])
        assert pid_alive(wk), '%s: hapg worker %s is gone' % (m, wk)


# ---------------------------------------------------------------- steady state

def test_exactly_one_leader_and_it_is_the_primary(cluster):
    c = cluster
    assert c.primaries() == ['pg-0'], 'only pg-0 should be out of recovery'
    assert c.holder() == 'pg-0'
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['leader'] == 'pg-0', settle(c),
                 '%s to see pg-0 as leader' % m)
    roles = {m: c.status(m)['role'] for m in MEMBERS}
    assert roles == {'pg-0': 'leader', 'pg-1': 'replica', 'pg-2': 'replica'}, roles
    leaders = [m for m in MEMBERS if c.status(m)['role'] == 'leader']
    assert leaders == ['pg-0']


def test_lease_fields_and_renewal(cluster):
    c = cluster
    lease1 = c.lease()
    s1 = lease1['spec']
    assert s1['holderIdentity'] == 'pg-0'
    assert s1['leaseDurationSeconds'] == ttl(c)
    assert s1.get('acquireTime'), 'acquireTime missing: %r' % s1
    r1 = parse_k8s_time(s1['renewTime'])
    a1 = parse_k8s_time(s1['acquireTime'])
    assert a1 <= r1
    tr1 = s1.get('leaseTransitions', 0)
    rv1 = lease1['metadata']['resourceVersion']
    # renewTime advances, resourceVersion changes, transitions stay
    t0 = time.monotonic()
    lease2 = wait_for(lambda: (lambda l: l if parse_k8s_time(l['spec']['renewTime']) > r1 else None)(c.lease()),
                      3 * loop(c) + 2, 'renewTime to advance past %s' % s1['renewTime'])
    assert time.monotonic() - t0 < 2 * loop(c) + 2, 'renewal took longer than ~loop_wait'
    s2 = lease2['spec']
    assert lease2['metadata']['resourceVersion'] != rv1
    assert s2['holderIdentity'] == 'pg-0'
    assert s2.get('leaseTransitions', 0) == tr1, 'leaseTransitions changed without a new holder'
    assert s2['acquireTime'] == s1['acquireTime'], 'acquireTime must not change on renewal'
    # the leader's annotations
    ann = lease2['metadata'].get('annotations') or {}
    assert LSN_RX.match(ann.get('hapg.io/lsn', '')), ann
    assert str(ann.get('hapg.io/timeline')) == '1', ann
    members = json.loads(ann['hapg.io/members'])
    for sb in STANDBYS:
        assert sb in members, 'hapg.io/members lacks %s: %r' % (sb, members)
        assert members[sb].get('state') == 'streaming', members
        assert LSN_RX.match(members[sb].get('lsn', '')), members
    primary_lsn = c.scalar('pg-0', 'SELECT pg_current_wal_lsn()::text')
    assert lsn_to_int(ann['hapg.io/lsn']) <= lsn_to_int(primary_lsn)


def _check_views(c, timeline=1):
    """Every member's hapg_members agrees with the Pods; returns a list of
    disagreements (empty when all agree)."""
    problems = []
    pods = {m: c.pod(m) for m in MEMBERS}
    labels = {m: ((pods[m].get('metadata') or {}).get('labels') or {}).get('role') for m in MEMBERS}
    want_label = {'pg-0': 'primary', 'pg-1': 'replica', 'pg-2': 'replica'}
    if labels != want_label:
        problems.append('pod labels %r' % labels)
    for viewer in MEMBERS:
        view = c.members_view(viewer)
        if sorted(view) != MEMBERS:
            problems.append('%s sees members %r' % (viewer, sorted(view)))
            continue
        for m in MEMBERS:
            row = view[m]
            want = {
                'role': 'leader' if m == 'pg-0' else 'replica',
                'is_leader': m == 'pg-0',
                'state': 'running' if m == 'pg-0' else 'streaming',
                'connect_address': '127.0.0.1:%d' % c.m(m).port,
                'pod_role_label': labels[m],
            }
            got = {k: row.get(k) for k in want}
            if got != want:
                problems.append('%s sees %s as %r, want %r' % (viewer, m, got, want))
            if row.get('timeline') is None or int(row['timeline']) != timeline:
                problems.append('%s sees %s on timeline %r' % (viewer, m, row.get('timeline')))
            if not row.get('lsn') or not LSN_RX.match(str(row['lsn'])):
                problems.append('%s sees %s lsn %r' % (viewer, m, row.get('lsn')))
    return problems


def test_pod_labels_and_members_view_agree(cluster):
    c = cluster
    try:
        wait_for(lambda: not _check_views(c), settle(c), 'pods and hapg_members to agree')
    except AssertionError:
        raise AssertionError('views disagree: %s' % '; '.join(_check_views(c)))
    # the status annotation of each Pod
    for m in MEMBERS:
        st = c.pod_status(m)
        assert st is not None, '%s has no hapg.io/status annotation' % m
        assert st['role'] == ('leader' if m == 'pg-0' else 'replica'), st
        assert st['state'] == ('running' if m == 'pg-0' else 'streaming'), st
        assert int(st['timeline']) == 1, st
        assert st['connect_address'] == '127.0.0.1:%d' % c.m(m).port, st
        assert LSN_RX.match(st['lsn']), st
        assert st.get('version'), st
    # lag on the leader's view: numbers, not negative
    view = c.members_view('pg-0')
    for sb in STANDBYS:
        lag = view[sb]['lag_bytes']
        assert lag is not None and int(lag) >= 0, view[sb]
        assert view[sb]['last_seen'] is not None, view[sb]


def test_status_fields_sane(cluster):
    c = cluster
    lease = c.lease()
    for m in MEMBERS:
        s1 = c.status(m)
        assert s1['cluster'] == 'c1', s1
        assert s1['member'] == m, s1
        assert s1['leader'] == 'pg-0', s1
        assert s1['role'] == ('leader' if m == 'pg-0' else 'replica'), s1
        assert s1['state'] == ('running' if m == 'pg-0' else 'streaming'), s1
        assert s1['api_ok'] is True, s1
        assert int(s1['timeline']) == 1, s1
        assert LSN_RX.match(str(s1['lsn'])), s1
        assert int(s1['lease_transitions']) == lease['spec'].get('leaseTransitions', 0), s1
        exp = seconds(s1['lease_expires_in'])
        assert exp is not None and 0 < exp <= ttl(c), 'lease_expires_in %r' % (exp,)
        age = seconds(s1['info_age'])
        assert age is not None and 0 <= age <= 2 * loop(c) + c.profile['retry_timeout'] + 1, s1
        assert s1['last_loop'] is not None
        lag = c.scalar(m, 'SELECT extract(epoch FROM now() - %s::timestamptz)', (s1['last_loop'],))
        assert -1 <= float(lag) <= 2 * loop(c) + 2, 'last_loop %s is %ss old' % (s1['last_loop'], lag)
        wpid = s1['worker_pid']
        assert pid_alive(wpid), 'worker_pid %r is not a live process' % wpid
        with open('/proc/%d/stat' % wpid) as f:
            ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        assert ppid == c.postmaster_pid(m), 'worker_pid %d is not a child of %s postmaster' % (wpid, m)
        # the loop is running
        s2 = wait_for(lambda m=m: (lambda s: s if s['loop_count'] > s1['loop_count'] else None)(c.status(m)),
                      2 * loop(c) + 3, '%s loop_count to advance' % m)
        assert s2['worker_pid'] == wpid
    # lsn on the primary is not ahead of the server
    st = c.status('pg-0')
    assert lsn_to_int(st['lsn']) <= lsn_to_int(c.scalar('pg-0', 'SELECT pg_current_wal_lsn()::text'))


def test_status_and_members_need_pg_monitor(cluster):
    c = cluster
    c.sql('pg-0', "DROP ROLE IF EXISTS hapg_nobody; CREATE ROLE hapg_nobody LOGIN")
    c.sql('pg-0', "DROP ROLE IF EXISTS hapg_mon; CREATE ROLE hapg_mon LOGIN IN ROLE pg_monitor")
    import psycopg2
    for role, allowed in (('hapg_nobody', False), ('hapg_mon', True)):
        for q in ('SELECT * FROM hapg_status()', 'SELECT * FROM hapg_members'):
            conn = psycopg2.connect(host='127.0.0.1', port=c.m('pg-0').port, user=role,
                                    dbname='postgres', connect_timeout=5)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    if allowed:
                        cur.execute(q)
                        assert cur.fetchall(), q
                    else:
                        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                            cur.execute(q)
            finally:
                conn.close()


def test_steady_state_writes(cluster):
    """Renewals happen (one lease write per loop at most), standbys write
    nothing, nobody patches Pods while a client inserts."""
    c = cluster
    healthy(c)
    c.sql('pg-0', 'CREATE TABLE IF NOT EXISTS steady(id bigserial primary key, v text)')
    c.wait_for(lambda: not _check_views(c), settle(c), 'steady state before measuring')
    stop = threading.Event()
    inserted = [0]
    errors = []

    def client():
        try:
            conn = c.connect('pg-0')
            with conn.cursor() as cur:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    cur.execute("INSERT INTO steady(v) SELECT repeat('x', 100) FROM generate_series(1, 50)")
                    inserted[0] += 50
                    time.sleep(0.01)
            conn.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    lease_before = c.lease()
    lsn_before = lease_before['metadata']['annotations']['hapg.io/lsn']
    t = threading.Thread(target=client)
    c.double.reset_stats()
    t0 = time.monotonic()
    t.start()
    try:
        time.sleep(5 * loop(c) + 0.2)   # a measurement window, not a wait for a condition
        stats = {m: c.double.user_stats(m) for m in MEMBERS}
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert inserted[0] > 0
    loops = elapsed / loop(c)
    for sb in STANDBYS:
        writes = {v: stats[sb][v] for v in WRITE_VERBS}
        assert sum(writes.values()) == 0, '%s wrote in steady state: %r (all: %r)' % (sb, writes, stats[sb])
    p = stats['pg-0']
    assert p['patch'] == 0, 'pg-0 patched (its Pod) in steady state: %r' % p
    assert p['create'] == 0 and p['delete'] == 0, p
    assert p['update'] <= int(loops) + 1, 'more than one lease write per loop: %d in %.1f loops' % (
        p['update'], loops)
    assert p['update'] >= int(loops) - 2, 'too few renewals: %d in %.1f loops' % (p['update'], loops)
    lease_after = c.lease()
    assert lease_after['metadata']['resourceVersion'] != lease_before['metadata']['resourceVersion']
    assert lease_after['spec']['holderIdentity'] == 'pg-0'
    assert lease_after['spec'].get('leaseTransitions', 0) == lease_before['spec'].get('leaseTransitions', 0)
    lsn_after = lease_after['metadata']['annotations']['hapg.io/lsn']
    assert lsn_to_int(lsn_after) > lsn_to_int(lsn_before), \
        'the lease hapg.io/lsn did not follow the inserts (%s -> %s)' % (lsn_before, lsn_after)


# ---------------------------------------------------------------- conflicts

@pytest.mark.double_only('an injected 409 on one update')
def test_injected_409_is_reread_and_leadership_kept(cluster):
    c = cluster
    healthy(c)
    before = spec(c)
    mark = c.log_mark('pg-0')
    c.double.add_fault(user='pg-0', mode='error', status=409, verbs=['update'],
                       resources=['leases'], count=1)
    try:
        c.wait_log('pg-0', r'conflict|409', settle(c), since=mark)
    finally:
        c.double.clear_faults('pg-0')
    r0 = parse_k8s_time(c.lease()['spec']['renewTime'])
    after = wait_for(lambda: (lambda s: s if parse_k8s_time(s['renewTime']) > r0 else None)(spec(c)),
                     3 * loop(c) + 3, 'pg-0 to renew again after the 409')
    assert after['holderIdentity'] == 'pg-0'
    assert after.get('leaseTransitions', 0) == before.get('leaseTransitions', 0)
    assert c.status('pg-0')['role'] == 'leader'
    assert c.role_label('pg-0') == 'primary'


@pytest.mark.double_only("holding one member's Lease watch only")
def test_lease_changed_behind_the_workers_back(cluster):
    """Someone else updates the Lease (an annotation) while the leader cannot
    see it (its Lease watch is held by the double), so the resourceVersion
    it renews with is stale: it must get a 409, re-read and renew again,
    keeping leadership."""
    c = cluster
    healthy(c)
    before = spec(c)
    # hold pg-0's Lease watch: open ones end within ~1 s, new ones hang
    c.double.add_fault(user='pg-0', mode='hang', verbs=['watch'], resources=['leases'])
    try:
        time.sleep(2 * loop(c) + 1.2)      # let the open watch end and a renewal pass
        r_before = parse_k8s_time(spec(c)['renewTime'])
        wait_for(lambda: parse_k8s_time(spec(c)['renewTime']) > r_before, 3 * loop(c) + 3,
                 'pg-0 to renew with its Lease watch held')
        mark = c.log_mark('pg-0')
        lease = c.lease()
        lease['metadata'].setdefault('annotations', {})['test.hapg.io/bogus'] = 'x'
        st, out = c.put_lease(lease)
        assert st == 200, (st, out)
        c.double.reset_stats()
        bogus_rv = out['metadata']['resourceVersion']
        r0 = parse_k8s_time(out['spec']['renewTime'])
        after = wait_for(lambda: (lambda l: l if (parse_k8s_time(l['spec']['renewTime']) > r0 and
                                                  l['metadata']['resourceVersion'] != bogus_rv) else None)(c.lease()),
                         3 * loop(c) + 3, 'pg-0 to renew after the foreign update')
        reads = c.double.resource_stats('pg-0', 'leases')['get']
        log = c.log('pg-0', mark)
    finally:
        c.double.clear_faults('pg-0')
    assert after['spec']['holderIdentity'] == 'pg-0'
    assert after['spec'].get('leaseTransitions', 0) == before.get('leaseTransitions', 0)
    assert re.search(r'(?i)conflict|409', log) or reads > 0, \
        'pg-0 renewed after a foreign update without a conflict and without re-reading:\n%s' % log
    if re.search(r'(?i)conflict|409', log):
        # it went through the 409 path: it re-read
        assert reads > 0, 'pg-0 logged a conflict but did not re-read the Lease'
    assert c.status('pg-0')['role'] == 'leader'
    assert c.role_label('pg-0') == 'primary'
    assert not re.search(r'(?i)lost (the )?(lease|leadership)|demot', log), log[-2000:]


# ---------------------------------------------------------------- API faults

def _outage(c, arm, disarm, err_rx, what):
    """An API outage shorter than the leader's fence deadline: every member
    notices it and says why, SQL keeps answering, nothing restarts, and pg-0
    keeps the Lease afterwards.  The outage starts right after a renewal and
    ends more than a loop before last renewal + ttl - margin, so the leader
    renews again in time."""
    healthy(c)
    before = pids(c)
    marks = {m: c.log_mark(m) for m in MEMBERS}
    transitions = spec(c).get('leaseTransitions', 0)
    c.sql('pg-0', 'CREATE TABLE IF NOT EXISTS during_outage(i int)')
    r0 = spec(c)['renewTime']
    renewed = wait_for(lambda: (lambda s: s if s['renewTime'] != r0 else None)(spec(c)),
                       3 * loop(c) + 2, 'a renewal to start the outage right after', interval=0.02)
    arm()
    t_armed = time.monotonic()
    since_renewal = time.time() - parse_k8s_time(renewed['renewTime']).timestamp()
    deadline = t_armed - since_renewal + ttl(c) - fence_margin(c)
    end = deadline - loop(c) - 0.4      # its next renewal comes within a loop
    down = {}
    noticed = {}                        # seconds after the outage began
    n = 0
    try:
        while time.monotonic() < end and n < 1000:
            n += 1
            t0 = time.monotonic()
            c.sql('pg-0', 'INSERT INTO during_outage VALUES (1)')
            for m in MEMBERS:
                st = c.status(m)
                if st['api_ok'] is False and st['last_error']:
                    if m not in down:
                        noticed[m] = round(time.monotonic() - t_armed, 2)
                    down.setdefault(m, st['last_error'])
                else:
                    assert m not in down, '%s: api_ok true again during %s: %r' % (m, what, st)
                assert c.scalar(m, 'SELECT 1') == 1
            assert time.monotonic() - t0 < 2.0, 'SQL was slow during %s' % what
            time.sleep(0.1)
        t_end = time.monotonic()
    finally:
        disarm()
    assert set(down) == set(MEMBERS), \
        'within %.1fs of %s only %r reported api_ok false (after %r s)' % (
            t_end - t_armed, what, sorted(down), noticed)
    print('api_ok false after %s: %r s (window %.1f s)' % (what, noticed, t_end - t_armed))
    # a replica hears nothing once the leader stops renewing: it reads the
    # Lease when its watch has been silent for two loops (at that instant,
    # not at its next loop) and the read fails within a request deadline
    bound = 2 * loop(c) + c.profile['retry_timeout'] / 2 + 0.6
    late = {m: s for m, s in noticed.items() if s > bound}
    assert not late, 'noticed %s later than %.1f s: %r' % (what, bound, late)
    for m, err in down.items():
        assert re.search(err_rx, err, re.I), '%s: last_error %r does not mention %s' % (m, err, what)
    assert pids(c) == before, 'a process restarted during %s' % what
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['api_ok'] is True, settle(c) + ttl(c),
                 '%s to recover after %s' % (m, what))
    c.wait_leader('pg-0', timeout=settle(c) + ttl(c))
    wait_for(lambda: not _check_views(c), settle(c) + ttl(c), 'views to agree after %s' % what)
    assert_pids_unchanged(c, before)
    assert spec(c).get('leaseTransitions', 0) == transitions, \
        'leaseTransitions changed although pg-0 held the lease before and after %s' % what
    for m in MEMBERS:
        log = c.log(m, marks[m])
        assert not re.search(r'server process .* was terminated|terminated by signal|PANIC', log), log[-3000:]
        assert not re.search(r'fencing', log), '%s fenced during a short outage:\n%s' % (m, log[-3000:])
        # a warning about failed renewals must say why; one with no error
        # (e.g. right after the lease was renewed again) is misleading
        bogus = [l for l in log.splitlines() if 'Last error: none' in l]
        assert not bogus, '%s logged a renewal warning without an error after %s:\n%s' % (
            m, what, '\n'.join(l for l in log.splitlines() if 'could not renew' in l or 'Last error' in l))


@pytest.mark.double_only('HTTP 503 from the API')
def test_api_outage_503(cluster):
    c = cluster
    _outage(c,
            lambda: [c.double.add_fault(user=m, mode='error', status=503) for m in MEMBERS],
            lambda: c.double.clear_faults(),
            r'503|unavailable', '503 errors')


def test_api_outage_hang(cluster):
    c = cluster
    _outage(c,
            lambda: [c.double.add_fault(user=m, mode='hang') for m in MEMBERS],
            lambda: c.double.clear_faults(),
            r'time|deadline|no answer|within', 'hanging requests')


def test_api_outage_port_closed(cluster):
    c = cluster
    _outage(c,
            lambda: c.double.close_port(c.double.api_port),
            lambda: c.double.open_port(c.double.api_port),
            r'connect|refused|reach', 'a closed port')


def test_api_outage_sigstop(cluster):
    """The API server (or the double) stopped with SIGSTOP for longer than a
    request deadline (retry_timeout) but shorter than the fence deadline:
    connections stay open and nothing answers; every member says so, and
    after SIGCONT the connections (on the real server HTTP/2 ones, watches
    sharing them) recover and pg-0 keeps the Lease."""
    c = cluster
    t = {}

    def arm():
        t['start'] = time.monotonic()
        c.double.pause()

    def disarm():
        c.double.resume()
        t['stopped'] = time.monotonic() - t['start']
    _outage(c, arm, disarm, r'time|deadline|no answer|within', 'a stopped API server')
    assert t['stopped'] > c.profile['retry_timeout'], t


def test_connections_reset_under_the_watches(cluster):
    """Every member's connections are reset while its watches are open
    (the port stays open): each opens new watches within a few loops, keeps
    api_ok, and pg-0 keeps the Lease without a new transition."""
    c = cluster
    healthy(c)
    before = pids(c)
    transitions = spec(c).get('leaseTransitions', 0)
    time.sleep(2 * loop(c))        # the watches are open by now
    c.double.reset_stats()
    _drop_connections(c)
    for m in MEMBERS:
        wait_for(lambda m=m: c.double.user_stats(m)['watch'] > 0, settle(c),
                 '%s to open a watch again after its connections were reset' % m)
    for m in MEMBERS:
        wait_for(lambda m=m: c.status(m)['api_ok'] is True, settle(c), '%s api_ok after the reset' % m)
    c.wait_leader('pg-0', timeout=settle(c))
    assert spec(c).get('leaseTransitions', 0) == transitions
    assert_pids_unchanged(c, before)


def _bad_responses(c, member, mode, err_rx, log_rx):
    healthy(c)
    before = pids(c)
    mark = c.log_mark(member)
    c.double.add_fault(user=member, mode=mode)
    try:
        st = wait_for(lambda: (lambda s: s if s['api_ok'] is False and s['last_error'] else None)(c.status(member)),
                      settle(c), '%s to report api_ok false on %s responses' % (member, mode))
        assert re.search(err_rx, st['last_error'], re.I), \
            'last_error %r does not mention the %s response' % (st['last_error'], mode)
        c.wait_log(member, log_rx, settle(c), since=mark)
    finally:
        c.double.clear_faults(member)
    wait_for(lambda: c.status(member)['api_ok'] is True, settle(c) + ttl(c),
             '%s to recover after %s responses' % (member, mode))
    c.wait_leader('pg-0', timeout=settle(c) + ttl(c))
    assert_pids_unchanged(c, before)
    return c.worker_pid(member)


@pytest.mark.double_only('a garbage body')
def test_garbage_responses_survived(cluster):
    _bad_responses(cluster, 'pg-1', 'garbage', r'json|pars|invalid|malformed|garbage|unexpected',
                   r'json|pars|invalid|malformed|garbage')


@pytest.mark.double_only('a huge body')
def test_huge_responses_survived(cluster):
    c = cluster
    wpid = _bad_responses(c, 'pg-0', 'huge', r'large|big|size|limit|exceed|huge|long',
                          r'large|big|size|limit|exceed|huge|long')
    mem = proc_memory(wpid)
    assert mem.get('rss_kb', 0) < 200 * 1024, 'worker RSS after huge responses: %r' % mem


# ---------------------------------------------------------------- tokens

def _drop_connections(c):
    """Close and reopen the members' API port: every open connection and
    watch is dropped, so each member must authenticate anew."""
    c.double.close_port(c.double.api_port)
    time.sleep(0.3)
    c.double.open_port(c.double.api_port)


def test_token_rotation_new_then_revoke(cluster):
    c = cluster
    healthy(c)
    m = c.m('pg-1')
    before = pids(c)
    c.tokens_held.add(m.name)     # the harness's token refresher leaves it alone
    old = m.token
    new = c.double.issue_token('pg-1', service_account=c.rbac_sa)
    c.write_token(m, new)
    c.double.revoke_token(old)
    m.token = new
    _drop_connections(c)          # no request may ride on an old connection
    c.double.reset_stats()
    t0 = time.monotonic()
    lc0 = c.status('pg-1')['loop_count']
    wait_for(lambda: (lambda s: s['api_ok'] is True and s['loop_count'] >= lc0 + 2)(c.status('pg-1')),
             settle(c), 'pg-1 to keep working with the rotated token')
    st = c.double.user_stats('pg-1')
    assert st['list'] + st['get'] + st['watch'] > 0, 'no authenticated reads from pg-1 after rotation: %r' % st
    assert time.monotonic() - t0 < settle(c)
    # and it keeps working for a few more loops
    time.sleep(2 * loop(c))
    s = c.status('pg-1')
    assert s['api_ok'] is True, s
    assert_pids_unchanged(c, before)


def test_token_revoked_then_new_file(cluster):
    c = cluster
    healthy(c)
    m = c.m('pg-2')
    before = pids(c)
    c.tokens_held.add(m.name)
    old = m.token
    c.double.revoke_token(old)
    _drop_connections(c)
    wait_for(lambda: (lambda s: s['api_ok'] is False and
                      re.search(r'401|unauthori[sz]ed|token', s['last_error'] or '', re.I))(c.status('pg-2')),
             settle(c) + revocation_delay(c), 'pg-2 to report api_ok false with a 401 after its token was revoked')
    new = c.double.issue_token('pg-2', service_account=c.rbac_sa)
    c.write_token(m, new)
    m.token = new
    t0 = time.monotonic()
    wait_for(lambda: c.status('pg-2')['api_ok'] is True, settle(c),
             'pg-2 to pick up the new token file')
    assert time.monotonic() - t0 < settle(c)
    assert_pids_unchanged(c, before)


# ---------------------------------------------------------------- settings

def test_invalid_reload_is_rejected_with_hint(cluster):
    c = cluster
    healthy(c)
    before = pids(c)
    mark = c.log_mark('pg-0')
    c.reload('pg-0', {'hapg.ttl': 3})        # 1 + 2*2 > 3
    try:
        def complaint():
            lines = [l for l in c.log('pg-0', mark).splitlines()
                     if 'ttl' in l.lower() and 'changed to' not in l and 'hapg' in l.lower()]
            return lines
        lines = wait_for(complaint, settle(c), 'pg-0 to log that hapg.ttl=3 is invalid')
        log = c.log('pg-0', mark)
        assert 'HINT:' in log, 'no HINT with the complaint: %s' % log[-2000:]
        # the previous values stay in force: renewals keep the old duration
        r0 = parse_k8s_time(spec(c)['renewTime'])
        s = wait_for(lambda: (lambda s: s if parse_k8s_time(s['renewTime']) > r0 else None)(spec(c)),
                     3 * loop(c) + 3, 'a renewal after the invalid reload')
        assert s['leaseDurationSeconds'] == ttl(c), 'invalid ttl applied: %r' % s
        assert s['holderIdentity'] == 'pg-0'
        assert c.status('pg-0')['api_ok'] is True
        assert lines
    finally:
        c.reload('pg-0', {'hapg.ttl': None})
    # a valid change is applied
    c.reload('pg-0', {'hapg.ttl': ttl(c) + 2})
    try:
        wait_for(lambda: spec(c).get('leaseDurationSeconds') == ttl(c) + 2, settle(c),
                 'leaseDurationSeconds to follow a valid reload of hapg.ttl')
    finally:
        c.reload('pg-0', {'hapg.ttl': None})
    wait_for(lambda: spec(c).get('leaseDurationSeconds') == ttl(c), settle(c),
             'leaseDurationSeconds back to %d' % ttl(c))
    assert_pids_unchanged(c, before)


def test_cluster_still_consistent_at_the_end(cluster):
    c = cluster
    healthy(c)
    wait_for(lambda: not _check_views(c), settle(c), 'views to agree at the end')
    assert c.primaries() == ['pg-0']
    # the standbys received what was written during the module
    lsn = c.scalar('pg-0', 'SELECT pg_current_wal_lsn()::text')
    for sb in STANDBYS:
        wait_for(lambda sb=sb: lsn_to_int(c.scalar(sb, 'SELECT pg_last_wal_replay_lsn()::text')) >= lsn_to_int(lsn),
                 30, '%s to replay up to %s' % (sb, lsn))


def test_restarted_leader_takes_its_lease_back(cluster):
    """The primary dies (kill -9) and is started again before its Lease runs
    out: the start-up guard sees that the Lease names pg-0 and starts it as a
    standby; its worker takes the Lease back by compare-and-swap (same
    holder: no transition) and promotes it onto a new timeline; no standby
    takes over and both follow the new timeline."""
    c = cluster
    healthy(c)
    transitions = spec(c).get('leaseTransitions', 0)
    tl = int(c.status('pg-0')['timeline'])
    n_hist = len(c.sql('pg-0', 'SELECT * FROM hapg_history'))
    marks = {m: c.log_mark(m) for m in MEMBERS}
    r0 = spec(c)['renewTime']
    wait_for(lambda: spec(c)['renewTime'] != r0, 3 * loop(c) + 2, 'a renewal', interval=0.02)
    c.kill9('pg-0')
    t0 = time.monotonic()
    c.start_member('pg-0')
    note = 'pg-0 started again %.1fs after the kill' % (time.monotonic() - t0)
    wait_for(lambda: not c.in_recovery('pg-0') and int(c.status('pg-0')['timeline']) == tl + 1,
             ttl(c) + settle(c), 'pg-0 to promote itself onto timeline %d (%s)' % (tl + 1, note))
    log = c.log('pg-0', marks['pg-0'])
    assert re.search(r'hapg: starting as a standby instead of a primary: the Lease names this member', log), \
        log[-3000:]
    assert re.search(r'member "pg-0" holds the Lease and is promoting \(my Lease is still valid', log), \
        log[-3000:]
    assert c.holder() == 'pg-0'
    assert spec(c).get('leaseTransitions', 0) == transitions, 'same holder: no transition'
    for sb in STANDBYS:
        c.wait_streaming('pg-0', sb)
        assert c.in_recovery(sb)
        assert not re.search(r'acquired the leader Lease|is promoting', c.log(sb, marks[sb])), \
            '%s tried to take over:\n%s' % (sb, c.log(sb, marks[sb])[-3000:])
    assert c.primaries() == ['pg-0']
    hist = wait_for(lambda: (lambda h: h if len(h) > n_hist else None)(
        c.sql('pg-0', 'SELECT * FROM hapg_history')), settle(c), 'the switch in hapg_history')
    assert [(h['old_timeline'], h['new_timeline'], h['leader']) for h in hist[n_hist:]] == \
        [(tl, tl + 1, 'pg-0')], hist
    healthy(c)
    wait_for(lambda: not _check_views(c, timeline=tl + 1), settle(c),
             'views to agree after pg-0 came back')
