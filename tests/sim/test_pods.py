"""Pod-level simulation of hapg: three pods, each in its own network namespace
with its own address and port 5432, started through the real container
entrypoint (kubernetes/entrypoint.py) against the Kubernetes API double over
TLS.  See podsim.py for what stands for what.

The scenarios run in order on one cluster (each starts by waiting for a
healthy cluster, bounded in time; one run alone starts the pods itself):

0. the plumbing, before any pod runs: from each pod's netns the API answers
   over TLS (the pod's ca.crt) to the pod's token, RBAC (kubernetes/rbac.yaml)
   lets it read Pods but not Secrets, the other pods are reachable, and a
   cut pod reaches nothing;
1. bootstrap from three empty volumes: one initdb, one system identifier
   (recorded in the API, shared by all), a primary and two streaming
   replicas with the right role labels;
2. network partition of the leader: a replica takes over, the old leader
   stops accepting writes before the new one accepts any, and rejoins as a
   replica when reconnected; acknowledged writes up to 1 s before the cut
   survive;
3. pod deletion (SIGTERM) of the leader: a replica holds the Lease well
   before the ttl, nothing acknowledged is lost, the restarted pod rejoins
   as a replica;
4. volume wipe of a replica: it clones itself from the leader and streams,
   without a second initdb.

Every scenario also checks that RBAC refused the pods nothing and that the
readiness probe (kubernetes/hapg-probe ready) passes in every pod at the
end.  Figures go into one closing summary line.

Run (as root; skipped otherwise, or without `ip netns`), about a minute:
    /usr/bin/python3 -m pytest -p no:cacheprovider -q tests/sim
HAPG_KEEP=1 keeps the files (/var/tmp/hapg-sim-*; always kept after a
failure), HAPG_DOUBLE_VERBOSE=1 logs every API request, HAPG_SIM_SUBNET=a.b.c
forces the /24 used.
"""

import json
import re
import threading
import time

import pytest

import netsim
import podsim
from podsim import RESULTS, wait_for

_ok, _why = netsim.can_simulate()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)

# initdb's first line: counted in every pod's log
INITDB_MARK = re.compile(r'The files belonging to this database system will be owned by')
BASEBACKUP_MARK = re.compile(r'pg_basebackup', re.I)


@pytest.fixture(scope='module')
def sim():
    s = podsim.Sim()
    podsim.CURRENT['sim'] = s
    try:
        s.setup()
        yield s
    finally:
        try:
            s.teardown()
        finally:
            podsim.CURRENT.pop('sim', None)


# --------------------------------------------------------------------------
# helpers

def streaming_from(sim, leader):
    """application_names streaming from the leader (through its socket)."""
    out = sim.psql(leader, "SELECT application_name FROM pg_stat_replication "
                           "WHERE state = 'streaming' ORDER BY 1")
    return [x for x in out.split('\n') if x]


def timeline(sim, name):
    """The timeline hapg reports for a pod (hapg_status(), from inside it)."""
    return int(sim.psql(name, 'SELECT timeline FROM hapg_status()', timeout=5))


def healthy(sim):
    """The leader's name if: the Lease is held, its holder is labelled
    primary and every other pod replica, every other pod streams from the
    leader and is on the leader's timeline; else None."""
    h = sim.holder()
    if not h:
        return None
    roles = sim.roles()
    want = {nm: ('primary' if nm == h else 'replica') for nm in sim.pod_names}
    if roles != want:
        return None
    others = sorted(nm for nm in sim.pod_names if nm != h)
    if streaming_from(sim, h) != others:
        return None
    tl = timeline(sim, h)
    if any(timeline(sim, nm) != tl for nm in others):
        return None
    return h


def wait_healthy(sim, timeout, what='a healthy cluster'):
    """Wait until healthy() gives the same leader twice in a row, 1 s apart
    (a member that has just started may look like a streaming replica for
    a moment before it finds out that it diverged)."""
    seen = []

    def twice():
        h = healthy(sim)
        if h and seen and seen[-1][0] == h and time.monotonic() - seen[-1][1] >= 1.0:
            return h
        if not h:
            seen.clear()
        elif not seen or seen[-1][0] != h:
            seen[:] = [(h, time.monotonic())]
        return None
    return wait_for(twice, timeout, '%s (lease holder %r, roles %r)' % (
        what, _safe(sim.holder), _safe(sim.roles)), interval=0.5)


class DivergedLabelWatch(threading.Thread):
    """Measures how long a pod carries the replica label while hapg reports
    it on an older timeline than the leader's (a diverged old primary that
    has not been rewound yet): reported, not asserted."""

    def __init__(self, sim, name, leader):
        super().__init__(daemon=True)
        self.sim, self.name, self.leader = sim, name, leader
        self.stop_ev = threading.Event()
        self.seconds = 0.0

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            try:
                if self.sim.roles().get(self.name) == 'replica' and \
                        timeline(self.sim, self.name) < timeline(self.sim, self.leader):
                    self.seconds += 0.25
            except Exception:  # noqa: BLE001 - not running at the moment
                pass
            self.stop_ev.wait(max(0.0, 0.25 - (time.monotonic() - t)))

    def stop(self):
        self.stop_ev.set()
        self.join(10)


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return '<%s>' % e


def writable(sim, name):
    """True if the pod's server accepts writes now (connects and is not in
    recovery), False if not, checked from inside the pod."""
    try:
        return sim.psql(name, 'SELECT pg_is_in_recovery()', timeout=4) == 'f'
    except Exception:  # noqa: BLE001
        return False


class WritableProbe(threading.Thread):
    """Polls writable(pod) and keeps (t_start, t_end, bool) samples: the
    answer holds for some instant between t_start and t_end."""

    def __init__(self, sim, name, interval=0.2):
        super().__init__(daemon=True)
        self.sim, self.name, self.interval = sim, name, interval
        self.samples = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            w = writable(self.sim, self.name)
            self.samples.append((t, time.monotonic(), w))
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join(15)

    def last_writable(self):
        """The latest instant it was seen writable (end of that sample)."""
        ts = [t1 for t0, t1, w in self.samples if w]
        return ts[-1] if ts else None

    def first_writable_after(self, since):
        """The earliest instant it may have been writable after `since`
        (start of the first sample that saw it writable)."""
        for t0, t1, w in self.samples:
            if t0 >= since and w:
                return t0
        return None

    def first_unwritable_after(self, since):
        for t0, t1, w in self.samples:
            if t0 >= since and not w:
                return t1
        return None


def rows_on(sim, name, auth):
    out = sim.psql(name, 'SELECT id FROM sim_writes ORDER BY id', db=auth.get('dbname', 'postgres'),
                   timeout=30)
    return {int(x) for x in out.split('\n') if x}


def all_ready(sim):
    """{pod: (status, line)} of the readiness probe in every pod; asserts
    every one passes."""
    res = {nm: sim.probe(nm, 'ready') for nm in sim.pod_names}
    assert all(rc == 0 for rc, _ in res.values()), 'readiness probes: %r' % res
    return res


def assert_no_forbidden(sim):
    """The pods act as the ServiceAccount of kubernetes/rbac.yaml (the
    double's --rbac): RBAC must never have refused them anything."""
    if sim.rbac:
        assert not sim.forbidden(), 'RBAC refused requests of the pods: %r' % sim.forbidden()


def start_writer(sim):
    auth = sim.app_auth()
    w = podsim.Writer(sim, auth)
    w.ensure_table()
    ip_, port, pod = sim.service_endpoints()[0]
    c = podsim.connect(ip_, port, auth)
    with c.cursor() as cur:
        cur.execute('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')
        assert cur.fetchone()[0] is False, 'the application role %s is a superuser' % auth['user']
    c.close()
    w.start()
    wait_for(lambda: w.acked_count() >= 20, 30, 'the writer to get 20 writes acknowledged '
             '(errors: %r)' % w.errors[-3:])
    return w, auth


# --------------------------------------------------------------------------
# 0. the plumbing: each pod's netns reaches the API over TLS as its SA

API_CHECK = r'''
import json, socket, ssl, sys, urllib.error, urllib.request
sa, url, paths, peers = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(',')
tok = open(sa + '/token').read().strip()
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
out = {}
for p in filter(None, paths):
    req = urllib.request.Request(url + p, headers={'Authorization': 'Bearer ' + tok})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            out[p] = r.status
    except urllib.error.HTTPError as e:
        out[p] = e.code
    except OSError as e:
        out[p] = type(e).__name__
for peer in peers:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((peer, 5432))
        out[peer] = 'open'
    except ConnectionRefusedError:
        out[peer] = 'refused'
    except OSError as e:
        out[peer] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
'''


def test_0_pod_network_and_api_access(sim):
    """Before any pod runs: from inside each pod's network namespace, the API
    answers over TLS verified with the pod's ca.crt, to the pod's token; RBAC
    lets it read Pods and not Secrets; the other pods' addresses answer (a
    refused connection: nothing listens yet) instead of timing out."""
    ns = sim.namespace
    own = '/api/v1/namespaces/%s/pods/%%s' % ns
    secret = '/api/v1/namespaces/%s/secrets/%s' % (ns, sim.secret_name)
    for nm, p in sim.pods.items():
        peers = [q.ip for q in sim.pods.values() if q is not p]
        out = podsim.run(['ip', 'netns', 'exec', p.net.netns, podsim.PYTHON, '-c', API_CHECK,
                          p.sa_dir, sim.kube.url, ','.join([own % nm, secret]), ','.join(peers)],
                         timeout=60)
        res = json.loads(out.strip().splitlines()[-1])
        assert res[own % nm] == 200, (nm, res)
        if sim.rbac:
            assert res[secret] == 403, '%s may read the Secret: %r' % (nm, res)
        assert all(res[ip_] == 'refused' for ip_ in peers), (nm, res)
    cut = sim.pod_names[0]
    sim.cut(cut)
    try:
        p = sim.pods[cut]
        out = podsim.run(['ip', 'netns', 'exec', p.net.netns, podsim.PYTHON, '-c', API_CHECK,
                          p.sa_dir, sim.kube.url, '', sim.pods[sim.pod_names[1]].ip], timeout=60)
        res = json.loads(out.strip().splitlines()[-1])
        assert res[sim.pods[sim.pod_names[1]].ip] in ('timeout', 'TimeoutError'), \
            'a cut pod still reaches the others: %r' % res
    finally:
        sim.heal(cut)
        # the Secret reads above were refused on purpose: start counting afresh
        sim.kube.ok('POST', '/_double/stats/reset', token=None)


# --------------------------------------------------------------------------
# 1. bootstrap

def test_1_bootstrap_from_empty_volumes(sim):
    t0 = time.monotonic()
    for p in sim.pods.values():
        assert not list(p.volume_entries()), '%s: volume not empty' % p.name
    sim.start_all()
    leader = wait_healthy(sim, 180, 'bootstrap: one primary and two streaming replicas')
    took = time.monotonic() - t0
    sim.event('bootstrap done in %.1fs: leader %s' % (took, leader))

    logs = {nm: p.log() for nm, p in sim.pods.items()}
    initdbs = {nm: len(INITDB_MARK.findall(text)) for nm, text in logs.items()}
    assert sum(initdbs.values()) == 1, 'expected exactly one initdb, got %r' % initdbs
    initdb_pod = [nm for nm, k in initdbs.items() if k][0]

    sysids = {nm: sim.system_identifier(nm) for nm in sim.pod_names}
    assert None not in sysids.values(), sysids
    assert len(set(sysids.values())) == 1, 'system identifiers differ: %r' % sysids
    sysid = sysids[leader]
    where = sim.find_in_api(sysid)
    assert where, 'the system identifier %s is recorded nowhere in the API' % sysid

    for nm in sim.pod_names:
        in_rec = sim.psql(nm, 'SELECT pg_is_in_recovery()')
        assert in_rec == ('f' if nm == leader else 't'), (nm, in_rec)
        for k, v in sim.profile.items():
            got = sim.psql(nm, 'SHOW hapg.%s' % k)
            assert got == '%ds' % v, '%s: hapg.%s = %s, want %ds (fast profile)' % (nm, k, got, v)
    all_ready(sim)
    assert_no_forbidden(sim)
    RESULTS['bootstrap'] = {'verdict': 'ok', 'took': took, 'leader': leader,
                            'initdb on': initdb_pod, 'sysid in': where[0]}


# --------------------------------------------------------------------------
# 2. the leader cut off the network

def test_2_leader_partition_fails_over_and_rejoins(sim):
    sim.restore()
    old = wait_healthy(sim, 120)
    ttl = sim.profile['ttl']
    writer, auth = start_writer(sim)
    probe = WritableProbe(sim, old)
    others = {nm: WritableProbe(sim, nm) for nm in sim.pod_names if nm != old}
    for pr in [probe] + list(others.values()):
        pr.start()
    try:
        time.sleep(1.5)
        assert writable(sim, old)
        t_cut = time.monotonic()
        sim.cut(old)

        new = wait_for(lambda: (lambda h: h if h and h != old else None)(sim.holder()),
                       ttl + 15, 'a replica to take the Lease from %s' % old, interval=0.1)
        t_new = time.monotonic()
        sim.event('%s holds the Lease %.1fs after the cut' % (new, t_new - t_cut))
        # the old leader fences: it stops accepting writes, within its ttl
        t_fenced = wait_for(lambda: probe.first_unwritable_after(t_cut), ttl + 10,
                            'the old leader %s to stop accepting writes' % old)
        sim.event('%s stopped accepting writes %.1fs after the cut' % (old, t_fenced - t_cut))
        rc, line = sim.probe(old, 'ready')
        assert rc != 0, 'the fenced %s still passes its readiness probe: %s' % (old, line)
        first_new = wait_for(lambda: writer.first_ack_after(t_cut, new), 30,
                             'a write acknowledged by the new leader %s through the Service '
                             '(writer errors: %r)' % (new, writer.errors[-3:]))
        sim.event('first write through the Service on %s %.1fs after the cut' % (
            new, first_new[1] - t_cut))
        # never two writable primaries (each pod polled from inside every 0.2 s)
        last_old_writable = probe.last_writable()
        first_other = min((t for t in (pr.first_writable_after(t_cut) for pr in others.values())
                           if t is not None), default=None)
        assert first_other is not None, 'no replica was ever seen writable'
        assert last_old_writable is not None and last_old_writable > t_cut - 2.0
        assert last_old_writable < first_other, \
            'two writable primaries: %s was writable until +%.2fs, another pod from +%.2fs' % (
                old, last_old_writable - t_cut, first_other - t_cut)
        assert last_old_writable < first_new[1]
        gap = first_other - last_old_writable
        # role labels follow: the primary Service selects the new leader
        # alone (hapg takes the label off the cut-off old leader's Pod: that
        # one cannot reach the API to do it itself)
        wait_for(lambda: [e[2] for e in sim.service_endpoints()] == [new], 15,
                 'the primary Service to select %s alone (now %r, labels %r)' % (
                     new, _safe(sim.service_endpoints), _safe(sim.roles)))
        label_while_cut = sim.roles().get(old)

        time.sleep(1.0)
        t_heal = time.monotonic()
        watch = DivergedLabelWatch(sim, old, new)
        watch.start()
        sim.heal(old)
        try:
            leader = wait_healthy(sim, 120, 'the old leader %s to rejoin as a replica of %s'
                                  % (old, new))
        finally:
            watch.stop()
        assert leader == new
        t_rejoin = time.monotonic() - t_heal
        sim.event('%s streams from %s again %.1fs after reconnection' % (old, new, t_rejoin))
        wait_for(lambda: writer.first_ack_after(time.monotonic() - 0.1), 20, 'writes go on')
        all_ready(sim)
    finally:
        for pr in [probe] + list(others.values()):
            pr.stop()
        writer.stop()
        if sim.net.is_cut(old):
            sim.heal(old)

    rows = rows_on(sim, new, auth)
    acked = [a[0] for a in writer.acked]
    lost = sorted(set(acked) - rows)
    must_have = writer.acked_before(t_cut - 1.0)
    lost_must = sorted(set(must_have) - rows)
    lost_window = [i for i in lost if i not in must_have]
    sim.event('writes: %d acknowledged, %d lost (%d in the last second before the cut), '
              '%d writer errors' % (len(acked), len(lost), len(lost_window), len(writer.errors)))
    assert not lost_must, 'acknowledged writes lost (acknowledged > 1 s before the cut): %r' % (
        lost_must[:20],)
    after = [a[0] for a in writer.acked if a[1] > t_cut]
    assert not (set(after) - rows), 'writes acknowledged after the cut lost: %r' % sorted(
        set(after) - rows)[:20]
    # the rejoined replica has them too
    wait_for(lambda: rows_on(sim, old, auth) >= rows, 30,
             'the rejoined %s to have every row of %s' % (old, new))
    assert_no_forbidden(sim)
    RESULTS['partition'] = {
        'verdict': 'ok', 'failover': t_new - t_cut, 'fenced after': t_fenced - t_cut,
        'no writable primary for': gap,
        'first write on new': first_new[1] - t_cut, 'rejoin': t_rejoin,
        'acked': len(acked), 'lost in last 1s': len(lost_window),
        'old leader labelled replica on its old timeline': '~%.1fs' % watch.seconds,
        'old label while cut': label_while_cut or 'none'}


# --------------------------------------------------------------------------
# 3. pod deletion of the leader

def test_3_leader_pod_deletion_hands_over(sim):
    sim.restore()
    old = wait_healthy(sim, 120)
    ttl = sim.profile['ttl']
    writer, auth = start_writer(sim)
    try:
        time.sleep(1.0)
        result = {}

        def deleter():
            result['stop'] = sim.delete_pod(old)
        t_term = time.monotonic()
        th = threading.Thread(target=deleter)
        th.start()
        new = wait_for(lambda: (lambda h: h if h and h != old else None)(sim.holder()),
                       ttl + 15, 'a replica to take the Lease from the deleted %s' % old,
                       interval=0.05)
        t_new = time.monotonic() - t_term
        th.join(sim.grace_seconds + 30)
        took, killed = result.get('stop', (None, None))
        sim.event('%s holds the Lease %.2fs after SIGTERM to %s' % (new, t_new, old))
        assert t_new < ttl / 2.0, 'hand-over took %.2fs, not well before the ttl (%ss)' % (
            t_new, ttl)
        assert killed is False, '%s did not exit within its grace period' % old
        first_new = wait_for(lambda: writer.first_ack_after(t_term, new), 30,
                             'a write acknowledged by %s (errors %r)' % (new, writer.errors[-3:]))
        wait_for(lambda: [e[2] for e in sim.service_endpoints()] == [new], 15,
                 'the primary Service to select %s alone' % new)

        t_start = time.monotonic()
        mark = sim.pods[old].log_mark()
        sim.start_pod(old)
        leader = wait_healthy(sim, 120, 'the deleted %s to come back as a replica' % old)
        assert leader == new
        t_back = time.monotonic() - t_start
        later = sim.pods[old].log(mark)
        assert not INITDB_MARK.search(later), 'the restarted %s ran initdb' % old
        rewound = bool(re.search(r'pg_rewind', later))
        all_ready(sim)
    finally:
        writer.stop()
    rows = rows_on(sim, new, auth)
    acked = [a[0] for a in writer.acked]
    lost = sorted(set(acked) - rows)
    sim.event('writes: %d acknowledged, %d lost, %d writer errors' % (
        len(acked), len(lost), len(writer.errors)))
    assert not lost, 'acknowledged writes lost in the hand-over: %r' % lost[:20]
    assert_no_forbidden(sim)
    RESULTS['pod_deletion'] = {'verdict': 'ok', 'lease moved after': t_new,
                               'old pod stopped in': took, 'first write on new':
                               first_new[1] - t_term, 'back as replica': t_back,
                               'pg_rewind': 'yes' if rewound else 'no', 'acked': len(acked),
                               'lost': len(lost)}


# --------------------------------------------------------------------------
# 4. a replica's volume wiped

def test_4_wiped_replica_reclones(sim):
    sim.restore()
    leader = wait_healthy(sim, 120)
    victim = sorted(nm for nm in sim.pod_names if nm != leader)[0]
    sysid = sim.system_identifier(leader)
    auth = sim.app_auth()
    writer = podsim.Writer(sim, auth)
    writer.start()
    try:
        wait_for(lambda: writer.acked_count() >= 20, 30, 'writes before the wipe')
        sim.pods[victim].terminate()
        sim.event('%s stopped' % victim)
        sim.pods[victim].wipe_volume()
        assert not list(sim.pods[victim].volume_entries())
        sim.event('%s: volume wiped' % victim)
        mark = sim.pods[victim].log_mark()
        t0 = time.monotonic()
        sim.start_pod(victim)
        assert wait_healthy(sim, 180, '%s to re-clone and stream from %s' % (victim, leader)) \
            == leader
        took = time.monotonic() - t0
    finally:
        writer.stop()
    later = sim.pods[victim].log(mark)
    assert not INITDB_MARK.search(later), '%s ran initdb on its wiped volume:\n%s' % (
        victim, later[-3000:])
    assert BASEBACKUP_MARK.search(later), '%s: no pg_basebackup in its log:\n%s' % (
        victim, later[-3000:])
    assert re.search(r'cloning %s at ' % re.escape(leader), later), \
        '%s did not clone the leader %s:\n%s' % (victim, leader, later[-3000:])
    all_ready(sim)
    assert sim.system_identifier(victim) == sysid
    initdbs = sum(len(INITDB_MARK.findall(p.log())) for p in sim.pods.values())
    assert initdbs == 1, 'initdb ran %d times in the whole run' % initdbs
    rows = rows_on(sim, leader, auth)
    wait_for(lambda: rows_on(sim, victim, auth) >= rows, 30,
             'the re-cloned %s to have every row of %s' % (victim, leader))
    assert_no_forbidden(sim)
    RESULTS['volume_wipe'] = {'verdict': 'ok', 'pod': victim, 're-cloned and streaming': took}
