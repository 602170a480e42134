"""pytest glue for the multi-node tests (tests/test_*.py).

- `tests/` is put on sys.path so tests can `import harness`.
- `make_cluster` (module scope) builds clusters that are torn down at the end
  of the module; their files are kept (path printed) when a test of the module
  failed, or always with HAPG_KEEP=1.
- Backends: a module that sets `HAPG_BACKENDS = True` runs against every
  backend HAPG_BACKENDS (environment; default `double`, else e.g.
  `double real`) names: the API double, and the real kube-apiserver of
  scripts/kube-control-plane.sh (tests/realkube.py).  Test ids end in
  [double] or [real].  `@pytest.mark.double_only(reason)` marks a test that
  needs a fault only the double can inject: skipped on the real server.
- When a test fails, the last lines of every member's log and of the double's
  log are attached to the report.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def backends():
    # interned: pytest 7 compares a module-scoped parameter with `is` when it
    # decides whether a module's fixtures (its cluster) can be kept
    return [sys.intern(b) for b in os.environ.get('HAPG_BACKENDS', 'double').replace(',', ' ').split()]


def pytest_configure(config):
    config.addinivalue_line('markers', 'double_only(reason): needs a fault only the API double injects')


def pytest_generate_tests(metafunc):
    if 'backend' in metafunc.fixturenames and getattr(metafunc.module, 'HAPG_BACKENDS', False):
        metafunc.parametrize('backend', backends(), scope='module')


def pytest_collection_modifyitems(config, items):
    for item in items:
        mark = item.get_closest_marker('double_only')
        cs = getattr(item, 'callspec', None)
        if mark and cs is not None and cs.params.get('backend') == 'real':
            item.add_marker(pytest.mark.skip(
                reason='double only: %s' % (mark.args[0] if mark.args else 'a fault of the double')))


@pytest.fixture(scope='module')
def backend(request):
    """'double' or 'real' (parametrized for modules with HAPG_BACKENDS = True)."""
    return getattr(request, 'param', 'double')


def _clusters_of(item):
    return getattr(item.module, '_hapg_clusters', [])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and item.module is not None:
        item.module._hapg_failed = True
        for c in _clusters_of(item):
            c.failed = True
            try:
                rep.sections.append(('hapg logs of %s (%s)' % (c.name, c.base_dir),
                                     c.log_tails(30)))
            except Exception as e:  # noqa: BLE001
                rep.sections.append(('hapg logs', 'could not read logs: %s' % e))


@pytest.fixture(scope='module')
def make_cluster(request, backend):
    """Factory: make_cluster(**Cluster kwargs) -> started Cluster, stopped at
    the end of the module."""
    made = []
    mod = request.module
    if not hasattr(mod, '_hapg_clusters'):
        mod._hapg_clusters = []

    def factory(**kw):
        kw.setdefault('backend', backend)
        c = harness.Cluster(**kw)
        made.append(c)
        mod._hapg_clusters.append(c)
        c.start()
        return c

    yield factory
    failed = getattr(mod, '_hapg_failed', False)
    for c in reversed(made):
        c.stop(keep=True if failed else None)
        if c in mod._hapg_clusters:
            mod._hapg_clusters.remove(c)


@pytest.fixture(scope='module')
def cluster(make_cluster):
    """The default 3-member cluster (pg-0 primary, pg-1/pg-2 streaming) with
    the fast profile, its leader elected and labels in place."""
    c = make_cluster(n=3)
    c.wait_leader('pg-0')
    c.wait_labels({'pg-0': 'primary', 'pg-1': 'replica', 'pg-2': 'replica'})
    return c
