"""Fixtures for the API double's fidelity tests: a running double, certificates, kubeconfig.

Helpers live in doubletools.py (a unique module name: tests/conftest.py exists too).
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doubletools import KUBECTL, MKCERTS, Double, write_kubeconfig  # noqa: E402


@pytest.fixture(scope='session')
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('certs'))
    subprocess.run(['sh', MKCERTS, d], check=True, timeout=60)
    return d


@pytest.fixture
def double(tmp_path):
    """Plain HTTP double, 3 API ports, tokens for tester/pg-0/pg-1/pg-2."""
    d = Double(str(tmp_path), listens=3)
    yield d
    d.kill()


@pytest.fixture
def make_double(tmp_path):
    """Factory for doubles with custom options; all are killed at teardown."""
    made = []

    def make(**kw):
        sub = tempfile.mkdtemp(dir=str(tmp_path))
        d = Double(sub, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.kill()


@pytest.fixture
def tls_double(tmp_path, certs):
    """HTTPS double (CA-verified), 3 API ports + a plain admin port."""
    d = Double(str(tmp_path), tls_dir=certs, listens=3)
    yield d
    d.kill()



@pytest.fixture
def kubeconfig(tmp_path, tls_double):
    """kubeconfig for tls_double (CA verification, bearer token of user tester), namespace kt."""
    return write_kubeconfig(str(tmp_path / 'kubeconfig'), tls_double.url, tls_double.ca, 'tok-admin',
                            namespace='kt')


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    """Run the real kubectl against tls_double: kubectl(*args, stdin=None, check=True, token=None).

    token= runs it with another bearer token (a copy of the kubeconfig)."""
    home = tmp_path / 'home'
    home.mkdir()

    def run(*args, stdin=None, check=True, token=None):
        cfg = kubeconfig
        if token:
            cfg = str(tmp_path / ('kubeconfig-' + token))
            data = json.load(open(kubeconfig))
            data['users'][0]['user']['token'] = token
            json.dump(data, open(cfg, 'w'))
        env = {'PATH': '/usr/bin:/bin', 'HOME': str(home), 'KUBECONFIG': cfg}
        p = subprocess.run([KUBECTL, '--request-timeout=10s'] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError('kubectl %s failed (%d): %s %s' % (' '.join(args), p.returncode,
                                                                   p.stdout, p.stderr))
        return p
    return run
