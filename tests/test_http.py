"""hapg's HTTP endpoint (hapg.http_port) on a 3-member cluster under
bin/hapg-launcher, fast profile (ttl 6, loop_wait 1, retry_timeout 2): the
cluster and the "healthy start" fixture of test_failover.py.

Every endpoint's status and body on the leader, a streaming replica, a
lagging replica (?lag=), in a paused cluster, on a member whose API is cut,
on a fenced leader and during a switchover; /metrics checked by Debian's
`promtool check metrics`, every metric of the README's table present and
the values matching hapg_status(); bad input (malformed requests, huge
headers, slow clients, 1,000 concurrent connections) while the leader's
loop period is measured; HAProxy (Debian's haproxy, the configuration of
kubernetes/haproxy/haproxy.cfg) in front of the three members, writes
through it across hapg_switchover() and a node loss.
"""

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time

import psycopg2
import pytest

import haproxy_tools
from harness import children_of, lsn_to_int, proc_memory, wait_for
from test_failover import (MEMBERS, cl, healthy, healthy_start, note,  # noqa: F401
                           replicas_of, ttl)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(ROOT, 'README.md')
PROMTOOL = shutil.which('promtool')
ENDPOINTS = ['/', '/primary', '/leader', '/master', '/replica', '/read-write', '/read-only',
             '/health', '/liveness', '/readiness', '/cluster', '/history', '/metrics']


# ------------------------------------------------------------------ helpers

def get(c, member, path, method='GET', headers=None, timeout=3):
    """(status, body, headers) of one request to a member's endpoint; the
    body is parsed JSON when the answer is JSON."""
    conn = http.client.HTTPConnection('127.0.0.1', c.m(member).http_port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    body = raw.decode(errors='replace')
    if hdrs.get('content-type', '').startswith('application/json') and raw:
        body = json.loads(body)
    return r.status, body, hdrs


def status_of(c, member, path, timeout=2):
    """The status code, or 'refused' / 'timeout' when nothing answers."""
    try:
        return get(c, member, path, timeout=timeout)[0]
    except ConnectionRefusedError:
        return 'refused'
    except (socket.timeout, TimeoutError):
        return 'timeout'
    except (ConnectionError, http.client.HTTPException, OSError):
        return 'error'


def wait_status(c, member, path, want, timeout=30):
    want = want if isinstance(want, (list, tuple, set)) else [want]
    try:
        return wait_for(lambda: status_of(c, member, path) in want and True, timeout,
                        '%s %s to answer %s' % (member, path, want))
    except AssertionError as e:
        try:
            last = get(c, member, path)
        except OSError as x:
            last = x
        raise AssertionError('%s; last answer %r' % (e, last))


def metrics(c, member, accept=None):
    """{(name, frozenset(labels)): value} of one /metrics answer, and the raw text."""
    st, text, hdrs = get(c, member, '/metrics', headers={'Accept': accept} if accept else None)
    assert st == 200, text
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, 'unparsable metric line %r' % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ''))
        out[(m.group(1), labels)] = float(m.group(4))
    return out, text, hdrs


def metric(ms, name, **labels):
    for (n, lbl), v in ms.items():
        if n == name and all((k, str(val)) in lbl for k, val in labels.items()):
            return v
    raise KeyError('%s %r not in /metrics' % (name, labels))


def readme_metrics():
    """(name, type) of every row of the README's metrics table."""
    with open(README) as f:
        text = f.read()
    return re.findall(r'^\| `(hapg_[a-z_]+)` \| (gauge|counter|histogram) \|', text, re.M)


def http_worker_pid(c, member):
    for pid in children_of(c.postmaster_pid(member)):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                if b'hapg http' in f.read():
                    return pid
        except OSError:
            continue
    return None


def pg_connect(port, timeout=3):
    conn = psycopg2.connect(host='127.0.0.1', port=port, user='postgres', dbname='postgres',
                            connect_timeout=timeout, application_name='hapg-http-test')
    conn.autocommit = True
    return conn


# ------------------------------------------------------------------ endpoints

def test_leader_and_replicas(cl):
    """A healthy cluster: the leader answers 200 on /primary (and its
    aliases), /read-write, /read-only, 503 on /replica; replicas the other
    way round; every member is healthy, alive and ready; the bodies say
    role, state, timeline, lsn, lag, leader, paused."""
    c = cl
    leader = healthy(c)
    st = c.status(leader)
    for path in ('/primary', '/leader', '/master', '/read-write', '/read-only', '/health',
                 '/liveness', '/readiness', '/'):
        code, body, hdrs = get(c, leader, path)
        assert code == 200, (path, body)
        assert hdrs['content-type'] == 'application/json'
        assert body['member'] == leader and body['role'] == 'leader' and body['leader'] == leader
        assert body['state'] == 'running' and body['paused'] is False
        assert body['timeline'] == int(st['timeline']) and body['in_recovery'] is False
        assert lsn_to_int(body['lsn']) > 0 and body['lag'] == 0
    for path in ('/replica', '/replica?lag=1MB'):
        code, body, _ = get(c, leader, path)
        assert code == 503 and body['role'] == 'leader', body
    # HAProxy's check: OPTIONS, status only; HEAD: no body
    code, body, hdrs = get(c, leader, '/primary', method='OPTIONS')
    assert code == 200 and body == '' and 'GET' in hdrs.get('allow', '')
    code, body, _ = get(c, leader, '/primary', method='HEAD')
    assert code == 200 and body == ''

    for r in replicas_of(leader):
        for path in ('/replica', '/replica?lag=1MB', '/replica?lag=16777216', '/read-only',
                     '/health', '/liveness', '/readiness'):
            code, body, _ = get(c, r, path)
            assert code == 200, (r, path, body)
            assert body['role'] == 'replica' and body['leader'] == leader
            assert body['state'] == 'streaming' and body['streaming'] is True
            assert body['in_recovery'] is True and body['timeline'] == int(st['timeline'])
            assert body['lag'] is not None and body['lag'] < 16 * 1024 * 1024
        for path in ('/primary', '/leader', '/master', '/read-write'):
            code, body, _ = get(c, r, path)
            assert code == 503 and body['role'] == 'replica', (r, path, body)
        assert get(c, r, '/replica', method='OPTIONS')[0] == 200
        assert get(c, r, '/primary', method='OPTIONS')[0] == 503


def test_cluster_and_history(cl):
    """/cluster is hapg_members as JSON, /history is hapg_history."""
    c = cl
    leader = healthy(c)
    for m in MEMBERS:
        view = c.members_view(m)
        code, body, _ = get(c, m, '/cluster')
        assert code == 200
        assert body['leader'] == leader and body['paused'] is False
        got = {x['member']: x for x in body['members']}
        assert set(got) == set(view) == set(MEMBERS)
        for name, row in view.items():
            assert got[name]['role'] == row['role']
            assert got[name]['is_leader'] == row['is_leader']
            assert got[name]['connect_address'] == row['connect_address']
            assert got[name]['failover_priority'] == row['failover_priority']
        hist = c.sql(m, 'SELECT old_timeline, new_timeline, lsn::text AS lsn, leader FROM hapg_history')
        code, body, _ = get(c, m, '/history')
        assert code == 200 and isinstance(body, list) and len(body) == len(hist)
        for h, b in zip(hist, body):
            assert (b['old_timeline'], b['new_timeline'], b['leader']) == \
                (h['old_timeline'], h['new_timeline'], h['leader'])
            assert lsn_to_int(b['lsn']) == lsn_to_int(h['lsn'])


def test_bad_requests(cl):
    """Unknown paths 404, other methods 405, a bad ?lag= 400, a body 413 or
    405, malformed request lines 400, headers beyond the limit 431: each
    with a clear answer, and the server goes on answering."""
    c = cl
    leader = healthy(c)
    assert get(c, leader, '/nope')[0] == 404
    code, body, hdrs = get(c, leader, '/primary', method='POST')
    assert code == 405 and 'GET' in hdrs['allow'] and 'only GET' in body['error']
    r = replicas_of(leader)[0]
    code, body, _ = get(c, r, '/replica?lag=lots')
    assert code == 400 and 'lag must be' in body['error']
    port = c.m(leader).http_port
    for raw, want in ((b'GARBAGE /x\r\n\r\n', b' 400 '),
                      (b'GET /primary HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'a' * 100000 + b'\r\n\r\n',
                       b' 431 '),
                      (b'GET /primary HTTP/9.9\r\nHost: x\r\n\r\n', b' 505 ')):
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        try:
            s.sendall(raw)
            data = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            data = b''
        finally:
            s.close()
        print('RAW', raw[:30], '->', data[:120])
        assert want in data.split(b'\r\n')[0] + b' ', (raw[:40], data[:200])
    assert get(c, leader, '/primary')[0] == 200


def test_lagging_replica(cl):
    """A replica whose WAL receiver is stopped (SIGSTOP) while the leader
    writes 8 MB: still 'streaming', but beyond ?lag=1MB: /replica?lag=1MB
    503, /replica and /replica?lag=100MB 200; the leader's /metrics shows
    its lag.  SIGCONT: back within the lag."""
    c = cl
    leader = healthy(c)
    r = replicas_of(leader)[0]
    pid = c.scalar(r, 'SELECT pid FROM pg_stat_wal_receiver')
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        c.sql(leader, 'CREATE TABLE IF NOT EXISTS http_fill (x text)')
        c.sql(leader, "INSERT INTO http_fill SELECT repeat('x', 1000) FROM generate_series(1, 8000)",
              timeout=60)
        wait_status(c, r, '/replica?lag=1MB', 503, timeout=20)
        code, body, _ = get(c, r, '/replica?lag=1MB')
        assert body['lag'] > 1024 * 1024 and 'bytes behind the leader' in body['reason']
        assert get(c, r, '/replica')[0] == 200
        assert get(c, r, '/replica?lag=100MB')[0] == 200
        assert get(c, r, '/read-only?lag=1MB')[0] == 503
        ms, _, _ = metrics(c, leader)
        assert metric(ms, 'hapg_replication_lag_bytes', replica=r) > 1024 * 1024
        other = [m for m in replicas_of(leader) if m != r][0]
        wait_for(lambda: metric(metrics(c, leader)[0], 'hapg_replication_lag_bytes',
                                replica=other) < 1024 * 1024, 10, 'the other replica caught up')
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_status(c, r, '/replica?lag=1MB', 200, timeout=30)
    c.sql(leader, 'DROP TABLE IF EXISTS http_fill')


def test_paused(cl):
    """Paused: the leader is still /primary, replicas /replica, every body
    and /metrics say paused."""
    c = cl
    leader = healthy(c)
    c.sql(leader, 'SELECT hapg_pause()')
    try:
        wait_for(lambda: all(get(c, m, '/')[1]['paused'] for m in MEMBERS), 20,
                 'every member to see the pause')
        assert get(c, leader, '/primary')[0] == 200
        for r in replicas_of(leader):
            code, body, _ = get(c, r, '/replica')
            assert code == 200 and body['paused'] is True
        for m in MEMBERS:
            assert get(c, m, '/cluster')[1]['paused'] is True
            assert metric(metrics(c, m)[0], 'hapg_paused') == 1
    finally:
        c.sql(leader, 'SELECT hapg_resume()')
    wait_for(lambda: not any(get(c, m, '/')[1]['paused'] for m in MEMBERS), 20,
             'every member to see the resume')


def test_replica_api_cut(cl):
    """A replica cut off from the API keeps streaming: /replica 200,
    /liveness 200 (its loop runs), the body says api_ok false, /metrics
    counts the failed requests (code 0) and api_ok 0."""
    c = cl
    leader = healthy(c)
    r = replicas_of(leader)[0]
    before = metrics(c, r)[0]
    c.double.close_port(c.m(r).api_port)
    try:
        wait_for(lambda: get(c, r, '/')[1]['api_ok'] is False, 20, '%s to see the API cut' % r)
        assert get(c, r, '/replica')[0] == 200
        assert get(c, r, '/liveness')[0] == 200
        assert get(c, r, '/health')[0] == 200
        ms = metrics(c, r)[0]
        assert metric(ms, 'hapg_api_ok') == 0
        failed = sum(v for (n, lbl), v in ms.items()
                     if n == 'hapg_api_requests_total' and ('code', '0') in lbl)
        failed_before = sum(v for (n, lbl), v in before.items()
                            if n == 'hapg_api_requests_total' and ('code', '0') in lbl)
        assert failed > failed_before
        last_ok = metric(ms, 'hapg_api_last_success_timestamp_seconds')
        time.sleep(2)
        assert metric(metrics(c, r)[0], 'hapg_api_last_success_timestamp_seconds') == last_ok
        assert time.time() - last_ok >= 2
    finally:
        c.double.open_port(c.m(r).api_port)
    wait_for(lambda: get(c, r, '/')[1]['api_ok'] is True, 20, '%s to reach the API again' % r)


def test_leader_api_cut_fences(cl):
    """The leader cut off from the API: it leaves /primary (503: no valid
    Lease, or the connection refused: fenced, PostgreSQL stopped) within
    the ttl, before any other member answers 200 there; never do two
    members answer 200 at once; the new leader counts the election it won,
    the old one its fence (the count outlives the fence's restart)."""
    c = cl
    leader = healthy(c)
    fences_before = metric(metrics(c, leader)[0], 'hapg_fencing_events_total')
    others = replicas_of(leader)
    won_before = {m: metric(metrics(c, m)[0], 'hapg_elections_won_total') for m in others}
    lost_before = {m: metric(metrics(c, m)[0], 'hapg_elections_lost_total') for m in others}
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            now = time.monotonic()
            seen.append((now, {m: status_of(c, m, '/primary', timeout=1) for m in MEMBERS}))
            time.sleep(0.05)
    t = threading.Thread(target=poll, daemon=True)
    cut_at = time.monotonic()
    c.double.close_port(c.m(leader).api_port)
    t.start()
    try:
        new = wait_for(lambda: next((m for m in others if status_of(c, m, '/primary') == 200), None),
                       3 * ttl(c) + 20, 'a new leader answering /primary')
    finally:
        stop.set()
        t.join(10)
        c.double.open_port(c.m(leader).api_port)
    # never two members answering 200 at the same time
    for at, st in seen:
        assert sum(1 for v in st.values() if v == 200) <= 1, st
    old_down = next((at for at, st in seen if st[leader] != 200), None)
    new_up = next((at for at, st in seen if st[new] == 200), None)
    assert old_down is not None and old_down - cut_at < ttl(c) + 1, (old_down - cut_at)
    if new_up is not None:
        assert old_down < new_up
    note('leader API cut: old leader off /primary after %.1f s, new leader %s on after %s'
         % (old_down - cut_at, new, '%.1f s' % (new_up - cut_at) if new_up else 'the poll ended'))
    wait_for(lambda: metric(metrics(c, new)[0], 'hapg_elections_won_total') > won_before[new],
             10, 'the new leader to count its election')
    healthy(c, timeout=120)
    assert metric(metrics(c, leader)[0], 'hapg_fencing_events_total') == fences_before + 1
    loser = [m for m in others if m != new][0]
    assert metric(metrics(c, loser)[0], 'hapg_elections_lost_total') >= 1
    # the expired Lease still names the old leader: standing against it is
    # not a lost election (the winner that published first counted one)
    assert metric(metrics(c, new)[0], 'hapg_elections_lost_total') == lost_before[new]
    assert metric(metrics(c, new)[0], 'hapg_elections_won_total') == won_before[new] + 1


def test_switchover(cl):
    """During hapg_switchover(): at most one member answers /primary 200 at
    any moment; afterwards the candidate does and the old leader answers
    /replica 200."""
    c = cl
    leader = healthy(c)
    target = replicas_of(leader)[0]
    # as test_steer: both replicas settled on their slots first (hapg
    # reconfigures a fresh member once, which restarts its WAL receiver)
    wait_for(lambda: c.scalar(leader, 'SELECT count(*) FROM pg_replication_slots WHERE active') == 2,
             30, 'both replicas streaming through their slots')
    wait_for(lambda: c.members_view(leader)[target]['state'] == 'streaming', 20,
             '%s to show %s streaming' % (leader, target))
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            seen.append((time.monotonic(), {m: status_of(c, m, '/primary', timeout=1)
                                            for m in MEMBERS}))
            time.sleep(0.05)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        c.sql(leader, 'SELECT hapg_switchover(%s)', (target,), timeout=90)
        wait_status(c, target, '/primary', 200, timeout=30)
        wait_status(c, leader, '/replica', 200, timeout=60)
    finally:
        stop.set()
        t.join(10)
    for at, st in seen:
        assert sum(1 for v in st.values() if v == 200) <= 1, st
    note('switchover: %d polls, no member answered /primary 200 for %.2f s' % (
        len(seen), _longest_without(seen)))
    code, body, _ = get(c, target, '/primary')
    assert body['role'] == 'leader' and body['leader'] == target
    wait_for(lambda: [h for h in get(c, target, '/history')[1] if h['leader'] == target], 20,
             '/history on %s to show the switchover' % target)
    healthy(c)


def _longest_without(seen):
    """The longest stretch of polls in which no member answered 200."""
    longest, start = 0.0, None
    for at, st in seen:
        if 200 in st.values():
            if start is not None:
                longest = max(longest, at - start)
            start = None
        elif start is None:
            start = at
    return longest


def probe(c, member, what, **env):
    """kubernetes/hapg-probe ready|live for a member, as the kubelet runs
    it in the container (user postgres, PGDATA); (exit code, line)."""
    e = {'PATH': '/usr/bin:/bin', 'PGDATA': c.m(member).datadir, 'LC_ALL': 'C.UTF-8'}
    e.update(env)
    r = subprocess.run(['runuser', '-u', 'postgres', '--', '/usr/bin/env'] +
                       ['%s=%s' % kv for kv in e.items()] +
                       ['/usr/bin/python3', os.path.join(ROOT, 'kubernetes', 'hapg-probe'), what],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_probe_asks_the_endpoint(cl):
    """hapg-probe judges by the endpoint's /readiness and /liveness (found
    through PGDATA/hapg.http): ready and alive on a healthy cluster; with
    the replica's hapg worker stopped (SIGSTOP), live fails with the
    endpoint's reason ('stalled'), and passes again once it runs."""
    c = cl
    leader = healthy(c)
    for m in MEMBERS:
        with open(os.path.join(c.m(m).datadir, 'hapg.http')) as f:
            port, host, pid, scheme = f.read().split()
        assert int(port) == c.m(m).http_port and host == '127.0.0.1' and scheme == 'http'
        assert int(pid) == http_worker_pid(c, m)
        code, line = probe(c, m, 'ready')
        assert code == 0, line
        assert line == 'ready: ' + get(c, m, '/readiness')[1]['reason']
        code, line = probe(c, m, 'live')
        assert code == 0 and line.startswith("alive: hapg's last report"), line
    r = replicas_of(leader)[0]
    pid = c.worker_pid(r)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: probe(c, r, 'live', HAPG_PROBE_STALL='2')[0] == 1, 20,
                 'liveness to fail with the worker stopped')
        code, line = probe(c, r, 'live', HAPG_PROBE_STALL='2')
        assert 'stalled' in line and 'limit 2 s' in line, line
        assert get(c, r, '/liveness?stall=2')[0] == 503
        assert get(c, r, '/liveness')[0] == 200      # the default limit is 60 s
        assert get(c, r, '/liveness?stall=x')[0] == 400
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: probe(c, r, 'live', HAPG_PROBE_STALL='2')[0] == 0, 20, 'liveness to pass again')


def test_tls(cl, tmp_path):
    """hapg.http_ssl_cert_file / _key_file (reloadable): the endpoint then
    serves HTTPS only, with that certificate; the probe follows (PGDATA/
    hapg.http says https); without them it is plain HTTP again."""
    import ssl
    c = cl
    leader = healthy(c)
    r = replicas_of(leader)[0]
    m = c.m(r)
    cert, key = os.path.join(m.dir, 'http.crt'), os.path.join(m.dir, 'http.key')

    def new_certificate():
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                        '-subj', '/CN=127.0.0.1', '-keyout', key, '-out', cert],
                       check=True, capture_output=True, timeout=60)
        shutil.chown(cert, 'postgres')
        shutil.chown(key, 'postgres')
        os.chmod(key, 0o600)
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        return ctx
    ctx = new_certificate()

    def https_status(path):
        conn = http.client.HTTPSConnection('127.0.0.1', m.http_port, timeout=3, context=ctx)
        try:
            conn.request('GET', path)
            return conn.getresponse().status
        finally:
            conn.close()

    def https_ok():
        try:
            return https_status('/replica') == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
    c.reload(r, {'hapg.http_ssl_cert_file': cert, 'hapg.http_ssl_key_file': key})
    try:
        wait_for(https_ok, 20, '%s to serve HTTPS' % r)
        assert https_status('/primary') == 503
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            get(c, r, '/replica')          # plain HTTP is not served any more
        with open(os.path.join(m.datadir, 'hapg.http')) as f:
            assert f.read().split()[3] == 'https'
        code, line = probe(c, r, 'ready')
        assert code == 0 and line.startswith('ready: a replica streaming'), line
        # a certificate renewed in place (same files) is served after a reload
        ctx = new_certificate()
        assert not https_ok()              # the old certificate is still served
        c.reload(r, {'hapg.http_ssl_cert_file': cert, 'hapg.http_ssl_key_file': key})
        wait_for(https_ok, 20, '%s to serve the renewed certificate' % r)
    finally:
        m.overrides.clear()
        c._write_overrides(m)
        c.reload(r, {})
    wait_status(c, r, '/replica', 200, timeout=20)


# ------------------------------------------------------------------ metrics

def test_metrics(cl):
    """/metrics passes promtool check metrics (text and OpenMetrics), has
    every metric of the README's table with its type, and its values agree
    with hapg_status()."""
    c = cl
    leader = healthy(c)
    assert PROMTOOL, 'promtool (Debian package prometheus) is not installed'
    documented = readme_metrics()
    assert len(documented) >= 29, documented
    for m in MEMBERS:
        s1 = c.status(m)
        ms, text, hdrs = metrics(c, m)
        s2 = c.status(m)
        assert hdrs['content-type'].startswith('text/plain; version=0.0.4')
        r = subprocess.run([PROMTOOL, 'check', 'metrics'], input=text, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        types = dict(re.findall(r'^# TYPE (\S+) (\S+)$', text, re.M))
        for name, typ in documented:
            assert types.get(name) == typ, (name, typ, types.get(name))
        assert set(types) == {n for n, _ in documented}, set(types) ^ {n for n, _ in documented}
        for (n, lbl) in ms:
            d = dict(lbl)
            assert d['cluster'] == 'pg' and d['member'] == m, (n, lbl)
        is_leader = m == leader
        assert metric(ms, 'hapg_primary') == (1 if is_leader else 0)
        assert metric(ms, 'hapg_replica') == (0 if is_leader else 1)
        assert metric(ms, 'hapg_streaming') == (0 if is_leader else 1)
        assert metric(ms, 'hapg_timeline') == int(s2['timeline'])
        assert metric(ms, 'hapg_lease_transitions_total') == s2['lease_transitions']
        assert metric(ms, 'hapg_paused') == (1 if s2['paused'] else 0)
        assert metric(ms, 'hapg_cluster_unlocked') == 0
        assert metric(ms, 'hapg_api_ok') == 1
        assert s1['loop_count'] <= metric(ms, 'hapg_loops_total') <= s2['loop_count']
        assert 0 < metric(ms, 'hapg_lease_remaining_seconds') <= ttl(c)
        assert time.time() - metric(ms, 'hapg_api_last_success_timestamp_seconds') < 10
        assert metric(ms, 'hapg_failover_priority') == 1
        assert metric(ms, 'hapg_pending_restart') == 0
        assert metric(ms, 'hapg_loop_duration_seconds_count') > 0
        assert metric(ms, 'hapg_api_request_duration_seconds_count') > 0
        assert metric(ms, 'hapg_api_requests_total', verb='PUT' if is_leader else 'GET') > 0
        lsn = lsn_to_int(s2['lsn'])
        if is_leader:
            assert 0 < metric(ms, 'hapg_wal_written_position_bytes')
            assert metric(ms, 'hapg_wal_received_position_bytes') == 0
            lag = {dict(lbl)['replica'] for (n, lbl) in ms if n == 'hapg_replication_lag_bytes'}
            assert lag == set(replicas_of(leader))
        else:
            assert 0 < metric(ms, 'hapg_wal_replayed_position_bytes') <= \
                lsn_to_int(c.scalar(m, 'SELECT pg_last_wal_replay_lsn()::text'))
            assert metric(ms, 'hapg_wal_received_position_bytes') > 0
            assert lsn > 0
        # OpenMetrics when asked, as Prometheus asks
        st, om, hdrs = get(c, m, '/metrics', headers={
            'Accept': 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5'})
        assert st == 200 and hdrs['content-type'].startswith('application/openmetrics-text')
        assert om.endswith('# EOF\n') and '# TYPE hapg_fencing_events counter' in om
    # a setting that needs a restart shows as pending
    r = replicas_of(leader)[0]
    c.reload(r, {'max_connections': 31})
    try:
        wait_for(lambda: metric(metrics(c, r)[0], 'hapg_pending_restart') == 1, 10,
                 'pending_restart on %s' % r)
        assert get(c, r, '/')[1]['pending_restart'] is True
    finally:
        c.reload(r, {})
        c.m(r).overrides.clear()
        c._write_overrides(c.m(r))
        c.reload(r, {})


# ------------------------------------------------------------------ bad input

def _loop_periods(c, member, seconds):
    """Intervals (s) between successive loop_count changes of member's
    worker, sampled every 50 ms for `seconds`."""
    conn = pg_connect(c.m(member).port)
    out = []
    try:
        cur = conn.cursor()
        last = None
        last_at = None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cur.execute('SELECT loop_count FROM hapg_status()')
            n = cur.fetchone()[0]
            now = time.monotonic()
            if last is not None and n != last:
                out.append(now - last_at)
            if n != last:
                last, last_at = n, now
            time.sleep(0.05)
    finally:
        conn.close()
    return out


def _flood(port, stop, stats):
    """1,000 connections at once: slow clients that send a header byte every
    second, clients sending 100 kB headers, garbage, and clients asking
    /primary over and over; every socket reopened when closed."""
    socks = []
    kinds = ['slow'] * 500 + ['big'] * 150 + ['junk'] * 150 + ['get'] * 200
    lock = threading.Lock()

    def one(kind):
        while not stop.is_set():
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(('127.0.0.1', port))
                with lock:
                    socks.append(s)
                if kind == 'slow':
                    s.sendall(b'GET /primary HTTP/1.1\r\n')
                    while not stop.is_set():
                        s.sendall(b'X')
                        time.sleep(1)
                elif kind == 'big':
                    s.sendall(b'GET /primary HTTP/1.1\r\nX: ' + b'a' * 100000 + b'\r\n\r\n')
                    s.recv(100)
                elif kind == 'junk':
                    s.sendall(os.urandom(512) + b'\r\n\r\n')
                    s.recv(100)
                else:
                    s.sendall(b'GET /primary HTTP/1.1\r\nHost: x\r\n\r\n')
                    if s.recv(100).startswith(b'HTTP/1.1 200'):
                        with lock:
                            stats['ok'] += 1
            except OSError:
                with lock:
                    stats['errors'] += 1
                time.sleep(0.1)
            finally:
                s.close()
    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in kinds]
    for t in threads:
        t.start()
    return threads


def test_flood(cl):
    """1,000 concurrent connections (slowloris, huge headers, garbage,
    normal GETs) at the leader's endpoint: the leader's loop keeps its
    period (it is another process), the HTTP worker's memory stays bounded,
    slow clients are cut off after hapg.http_timeout, the endpoint answers
    again once the flood ends.  (From one source address the flood fills
    every connection slot and the backlog: GETs made during it mostly time
    out; that is the connection limit doing its job.)"""
    c = cl
    leader = healthy(c)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    pid = http_worker_pid(c, leader)
    assert pid, 'no hapg http process under the leader'
    base = _loop_periods(c, leader, 6)
    mark = c.log_mark(leader)
    rss_before = proc_memory(pid)['rss_kb'] * 1024
    stop = threading.Event()
    stats = {'ok': 0, 'errors': 0}
    threads = _flood(c.m(leader).http_port, stop, stats)
    try:
        time.sleep(2)
        during = _loop_periods(c, leader, 12)
        rss_during = proc_memory(pid)['rss_kb'] * 1024
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    note('flood: loop period baseline max %.2f s mean %.2f s (%d loops), during max %.2f s '
         'mean %.2f s (%d loops); http worker memory %s -> %s; %d GETs answered 200, %d socket errors'
         % (max(base), sum(base) / len(base), len(base), max(during), sum(during) / len(during),
            len(during), rss_before, rss_during, stats['ok'], stats['errors']))
    lw = c.profile['loop_wait']
    assert len(during) >= 12 / (lw + 1) - 1
    assert max(during) < lw + 1.5, during
    assert http_worker_pid(c, leader) == pid, 'the HTTP worker restarted'
    # memory bounded: the connection limit times the per-connection memory
    assert rss_during - rss_before < 16 * 1024 * 1024, (rss_before, rss_during)
    wait_status(c, leader, '/primary', 200, timeout=20)
    assert c.status(leader)['role'] == 'leader'
    # the slow clients were cut off (hapg.http_timeout for a whole request)
    assert re.search(r'hapg http: closed \d+ connections? whose request did not arrive within',
                     c.log(leader, since=mark)), 'no slow client was cut off'


# ------------------------------------------------------------------ HAProxy

def test_haproxy(cl, tmp_path):
    """HAProxy with the example configuration (kubernetes/haproxy/haproxy.cfg)
    in front of the three members: writes by /primary keep working across
    hapg_switchover() and the loss of the leader's node; reads by
    /replica?lag= land on replicas."""
    c = cl
    leader = healthy(c)
    c.sql(leader, 'CREATE TABLE IF NOT EXISTS http_writes (i int, at timestamptz)')
    os.chmod(str(tmp_path), 0o755)
    cfg, wport, rport = haproxy_tools.render_config(
        [(m, c.m(m).port, c.m(m).http_port) for m in MEMBERS], str(tmp_path))
    hp = haproxy_tools.HAProxy(cfg, str(tmp_path))
    w = None
    try:
        haproxy_tools.wait_routed(wport, rport)
        w = haproxy_tools.Writer(wport, 'http_writes').start()
        time.sleep(2)
        target = replicas_of(leader)[0]
        t0 = time.monotonic()
        c.sql(leader, 'SELECT hapg_switchover(%s)', (target,), timeout=90)
        # HAProxy sees the change at its next checks (inter 1s, fall 2, rise 1)
        wait_for(lambda: haproxy_tools.try_scalar(wport, 'SELECT (hapg_status()).member') == target,
                 15, 'HAProxy to route writes to %s' % target)
        t_routed = time.monotonic()
        wait_for(lambda: w.resumed_after(t_routed), 15, 'writes through HAProxy after the switchover')
        time.sleep(2)
        sw_gap = w.gap_after(t0)
        healthy(c)
        leader = target
        t1 = time.monotonic()
        c.kill9_tree(leader)
        wait_for(lambda: w.resumed_after(t1 + 0.1), 3 * ttl(c) + 30,
                 'writes through HAProxy after the node loss')
        time.sleep(2)
        fo_gap = w.gap_after(t1)
        note('HAProxy: write gap across switchover %.2f s, across node-loss failover %.2f s '
             '(ttl %d s); %d writes, %d errors' % (sw_gap, fo_gap, ttl(c), len(w.acked), w.errors))
        assert sw_gap < 10, sw_gap
        assert fo_gap < 3 * ttl(c) + 10, fo_gap
        assert haproxy_tools.try_scalar(wport, 'SELECT pg_is_in_recovery()') is False
        assert haproxy_tools.try_scalar(rport, 'SELECT pg_is_in_recovery()') is True
    finally:
        if w is not None:
            w.stop()
        hp.stop()
    # the lost node comes back (as healthy_start would do it)
    for m in MEMBERS:
        if not c.m(m).launcher_alive():
            c.start_member(m, wait=False)
    healthy(c, timeout=120)
