"""Members that must take no part: one with `hapg.cluster_name = ''` (the
worker idles and says why, once) and one whose Pod does not exist (it says so
clearly and does not take the Lease; once its Pod appears it takes part).
Both are stand-alone primaries on one double, fast profile.
"""

import re
import time

import pytest

from harness import wait_for

HAPG_BACKENDS = True      # the double and the real API server (conftest.py)

IDLE, NOPOD = 'pg-idle', 'pg-nopod'


@pytest.fixture(scope='module')
def loners(make_cluster):
    return make_cluster(names=[IDLE, NOPOD], standbys=False, create_pods=False,
                        member_conf={IDLE: {'hapg.cluster_name': ''}})


def _window(c, loops=5):
    """Let the workers run a few loops (a measurement window)."""
    time.sleep(loops * c.profile['loop_wait'] + 0.5)


def test_empty_cluster_name_idles_and_says_why_once(loners):
    c = loners
    c.double.reset_stats()
    _window(c)
    log = c.log(IDLE)
    lines = [l for l in log.splitlines()
             if 'cluster_name' in l and 'changed to' not in l and 'hapg' in l.lower()]
    assert lines, 'the idle worker did not log why it idles:\n%s' % log[-3000:]
    assert len(lines) == 1, 'the reason was logged %d times, not once:\n%s' % (len(lines), '\n'.join(lines))
    st = c.double.user_stats(IDLE)
    assert sum(st.values()) == 0, 'an idle member (no cluster_name) talked to the API: %r' % st
    # SQL still works on it
    assert c.status(IDLE) is not None
    assert c.scalar(IDLE, 'SELECT 1') == 1


def test_member_without_pod_takes_no_part(loners):
    c = loners
    c.double.reset_stats()
    _window(c)
    log = c.log(NOPOD)
    rx = re.compile(r'(?i)pod.*%s|%s.*pod' % (NOPOD, NOPOD))
    hits = [l for l in log.splitlines() if rx.search(l) and re.search(
        r'(?i)not found|does not exist|missing|no pod|404|absent', l)]
    assert hits, 'no clear log line about the missing Pod of %s:\n%s' % (NOPOD, log[-3000:])
    assert c.lease() is None, 'a member without a Pod took the lease: %r' % c.lease()
    st = c.double.user_stats(NOPOD)
    assert st['create'] == 0 and st['update'] == 0, 'a member without a Pod wrote: %r' % st
    s = c.status(NOPOD)
    assert s['role'] != 'leader', s
    # it must not spam: at most one such line per loop
    assert len(hits) <= 5 * 2 + 10


def test_member_takes_part_once_its_pod_exists(loners):
    c = loners
    c.create_pod(NOPOD)
    ttl = c.profile['ttl']
    c.wait_leader(NOPOD, timeout=3 * ttl + 10)
    wait_for(lambda: c.role_label(NOPOD) == 'primary', 3 * ttl, '%s labelled primary' % NOPOD)
    wait_for(lambda: c.status(NOPOD)['role'] == 'leader', 2 * c.profile['loop_wait'] + 3,
             '%s to report role leader' % NOPOD)
    # the idle member still idles
    assert sum(c.double.user_stats(IDLE).values()) == 0
