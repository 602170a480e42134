"""pytest glue of the pod simulation (tests/sim).

- puts tests/ and tests/sim/ on sys.path (harness, netsim, podsim);
- attaches the last lines of every pod's log and of the double's log to a
  failing test's report, and keeps the run's files then;
- prints one closing summary line of the scenarios' figures.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import podsim  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    sim = podsim.CURRENT.get('sim')
    if rep.skipped and not podsim.RESULTS:
        lr = rep.longrepr
        podsim.SKIPPED['reason'] = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    if rep.failed:
        for key, word in (('bootstrap', 'bootstrap'), ('partition', 'partition'),
                          ('pod_deletion', 'deletion'), ('volume_wipe', 'wiped')):
            if word in item.name:
                crash = getattr(getattr(rep, 'longrepr', None), 'reprcrash', None)
                msg = (getattr(crash, 'message', '') or '').split('\n')[0][:160]
                podsim.RESULTS[key] = {'verdict': 'FAILED in %s: %s' % (rep.when, msg)}
    if rep.failed and sim is not None:
        sim.failed = True
        try:
            rep.sections.append(('hapg sim logs (%s)' % sim.base_dir, sim.log_tails(40)))
            rep.sections.append(('hapg sim events', '\n'.join(
                '[%6.1fs] %s' % e for e in sim.events)))
        except Exception as e:  # noqa: BLE001
            rep.sections.append(('hapg sim logs', 'could not read logs: %s' % e))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = podsim.summary_line()
    if line:
        terminalreporter.write_line(line)
