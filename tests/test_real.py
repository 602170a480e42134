"""What only the real API server can show (run when HAPG_BACKENDS names
`real`): the protocol hapg's libcurl speaks to kube-apiserver, and tokens
that the API server rotates and revokes for real.

- HTTP/2: every member's TLS ClientHello (seen by its TCP proxy) offers h2,
  and kube-apiserver answers this machine's libcurl in HTTP/2, so hapg's
  watches and requests run over HTTP/2 here (the double speaks HTTP/1.1).
  The watch and keepalive logic over it is shown by test_core's
  test_connections_reset_under_the_watches[real] and
  test_api_outage_sigstop[real], and by test_failover's
  test_whole_api_down_...[real] (SIGSTOP for longer than ttl).
- Token rotation: the harness's refresher gives every member a new
  TokenRequest token every few seconds and deletes the old token's bound
  Secret shortly after, so the API server refuses the old token: the members
  must re-read their token files, and keep working through many rotations.
"""

import re
import subprocess
import time

import pytest

import conftest
import realkube
from harness import TokenRefresher, wait_for

MEMBERS = ['pg-0', 'pg-1', 'pg-2']

pytestmark = pytest.mark.skipif('real' not in conftest.backends(),
                                reason='HAPG_BACKENDS does not name the real API server')


@pytest.fixture(scope='module')
def rc(make_cluster):
    c = make_cluster(n=3, name='pg', backend='real')
    c.wait_leader('pg-0')
    c.wait_labels({'pg-0': 'primary', 'pg-1': 'replica', 'pg-2': 'replica'})
    return c


def test_hapg_speaks_http2_to_the_api_server(rc):
    c = rc
    for m in MEMBERS:
        px = c.double.proxies[m]
        offers = [realkube.alpn_offered(h) for h in px.hellos]
        assert offers and all(o is not None for o in offers), (m, px.hellos[:1])
        assert all('h2' in o for o in offers), '%s offered %r' % (m, offers)
    pki = c.double.ca_file.rsplit('/', 1)[0]
    p = subprocess.run(['curl', '-sS', '-o', '/dev/null', '-w', '%{http_version}',
                        '--cacert', c.double.ca_file, '--cert', pki + '/admin.crt', '--key', pki + '/admin.key',
                        c.double.url() + '/readyz'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == '2', 'libcurl and kube-apiserver negotiated HTTP/%s' % p.stdout


def test_members_follow_token_rotation_and_revocation(rc):
    c = rc
    c._refresher.stop()
    marks = {m: c.log_mark(m) for m in MEMBERS}
    r = c._refresher = TokenRefresher(c, interval=3, grace=3)
    wait_for(lambda: r.rotations >= 3 * len(MEMBERS), 90,
             'three rotations of every member\'s token (old token revoked each time)')
    first = {m: c.m(m).token for m in MEMBERS}
    wait_for(lambda: all(c.m(m).token != first[m] for m in MEMBERS) and r.rotations >= 4 * len(MEMBERS),
             60, 'one more rotation each')
    # an open watch outlives the token it was opened with (the API server
    # authenticates a request once, at its start): make every member connect anew
    time.sleep(11)          # past the API server's 10 s cache of good tokens
    c.double.reset_stats()
    c.double.close_port()
    time.sleep(0.3)
    c.double.open_port()
    for m in MEMBERS:
        lc = c.status(m)['loop_count']
        wait_for(lambda m=m, lc=lc: (lambda s: s['api_ok'] is True and s['loop_count'] >= lc + 2)(c.status(m)),
                 15, '%s to work with its current token' % m)
    st = c.double.stats()['by_user']
    for m in MEMBERS:
        assert sum(st.get(m, {}).values()) > 0, 'no requests of %s with its rotated tokens: %r' % (m, st)
    for m in MEMBERS:
        log = c.log(m, marks[m])
        assert not re.search(r'fencing|lost the lease|401', log), log[-3000:]
    c.wait_leader('pg-0', timeout=10)
    r.stop()
