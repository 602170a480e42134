"""The fault campaign's checker (bench/chaoscheck.py) on recorded histories
made up for the purpose: it must flag the zombie leader of issue 9, two
members writable together, and lost writes, and stay quiet on clean
hand-overs and on a leader that legitimately comes back on a newer
timeline.  Pure: no cluster."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))

import chaoscheck  # noqa: E402
from chaoscheck import Poll, Write  # noqa: E402

_ids = iter(range(1, 1 << 30))


def w(member, tl, send, ack=None, clk=None, lsn=0, gen=1, src='w0'):
    ack = send + 0.002 if ack is None else ack
    clk = send + 0.001 if clk is None else clk
    return Write(next(_ids), member, src, send, ack, tl, clk, lsn, gen)


def steady(member, tl, t0, t1, step=0.03, gen=1):
    out, t = [], t0
    while t < t1:
        out.append(w(member, tl, t, gen=gen))
        t += step
    return out


def test_clean_failover_is_not_a_violation():
    hist = steady('pg-0', 5, 100.0, 110.0) + steady('pg-1', 6, 116.0, 120.0)
    assert chaoscheck.zombie_writes(hist) == ([], [])
    assert chaoscheck.overlaps(hist) == []


def test_issue_9_zombie_leader_is_caught():
    # the example of issue 9: the new leader takes its first write at 08.716,
    # the old one is resumed at 14.253 and runs 6 INSERTs on timeline 5
    hist = steady('pg-0', 5, 0.0, 3.0)
    hist += steady('pg-1', 6, 8.716, 16.0)
    paused = [w('pg-0', 5, 3.0 + 0.001 * k, ack=14.255 + 0.001 * k, clk=14.252 + 0.001 * k)
              for k in range(3)]                            # sent during the pause
    after = [w('pg-0', 5, 14.256 + 0.002 * k) for k in range(3)]    # sent after SIGCONT
    hist += paused + after
    proven, late = chaoscheck.zombie_writes(hist)
    assert sorted(x.id for x, _ in proven) == sorted(x.id for x in paused + after)
    assert {b.member for _, b in proven} == {'pg-1'} and late == []
    # and one zombie write is enough
    one = steady('pg-0', 5, 0.0, 3.0) + steady('pg-1', 6, 8.716, 9.0) + [w('pg-0', 5, 14.26)]
    assert len(chaoscheck.zombie_writes(one)[0]) == 1
    # the overlap rule sees it too: pg-1 wrote inside pg-0's tenure on timeline 5
    assert chaoscheck.overlaps(hist)


def test_judged_against_every_write_seen():
    # the new leader's first write happened before the window being judged
    old = steady('pg-1', 6, 8.7, 9.0)
    win = [w('pg-0', 5, 14.26)]
    assert chaoscheck.zombie_writes(win, chaoscheck.first_acks(old + win))[0]
    assert chaoscheck.zombie_writes(win)[0] == []


def test_same_timeline_twice_is_a_violation():
    hist = steady('pg-1', 6, 10.0, 11.0) + [w('pg-2', 6, 12.0)]
    assert len(chaoscheck.zombie_writes(hist)[0]) == 1


def test_leader_back_on_a_newer_timeline_is_fine():
    hist = steady('pg-0', 5, 0.0, 2.0) + steady('pg-1', 6, 8.0, 10.0) + steady('pg-0', 7, 16.0, 18.0)
    assert chaoscheck.zombie_writes(hist) == ([], [])
    assert chaoscheck.overlaps(hist) == []


def test_late_ack_is_listed_but_not_proven():
    # sent and run before the new leader's first ack, answered after it
    hist = steady('pg-1', 6, 10.0, 11.0) + [w('pg-0', 5, 9.9, ack=10.5, clk=9.95)]
    proven, late = chaoscheck.zombie_writes(hist)
    assert proven == [] and len(late) == 1


def test_generations_are_separate():
    # a rebuilt cluster starts on timeline 1 again
    hist = steady('pg-1', 6, 10.0, 11.0, gen=1) + steady('pg-0', 1, 20.0, 21.0, gen=2)
    assert chaoscheck.zombie_writes(hist) == ([], [])
    assert chaoscheck.overlaps(hist) == []


def test_overlap_needs_a_write_strictly_inside_a_tenure():
    a = steady('pg-0', 5, 0.0, 5.0)
    assert chaoscheck.overlaps(a + [w('pg-1', 6, 2.0)])
    assert chaoscheck.overlaps(a + [w('pg-1', 6, 5.5)]) == []       # after the tenure
    assert chaoscheck.overlaps(a + [w('pg-1', 6, -1.0)]) == []      # before it
    # incremental tenure map gives the same answer
    ten = {}
    for x in a:
        chaoscheck.add_tenure(ten, x)
    b = [w('pg-1', 6, 2.0)]
    chaoscheck.add_tenure(ten, b[0])
    assert len(chaoscheck.overlaps(b, ten)) == 1


def test_poll_duals():
    ps = [Poll(7, 'pg-0', False, 1.00, 1.004, 1), Poll(7, 'pg-1', False, 1.001, 1.003, 1),
          Poll(7, 'pg-2', True, None, None, 1), Poll(8, 'pg-0', False, 1.1, 1.102, 1),
          Poll(8, 'pg-1', False, None, None, 1)]
    d = chaoscheck.poll_duals(ps)
    assert len(d) == 1 and {d[0][0].member, d[0][1].member} == {'pg-0', 'pg-1'}
    # not overlapping: not a violation
    assert chaoscheck.poll_duals([Poll(7, 'pg-0', False, 1.0, 1.002, 1),
                                  Poll(7, 'pg-1', False, 1.003, 1.005, 1)]) == []


def test_lost_and_wal_span():
    a = [w('pg-0', 5, 0.1 * k, lsn=1000 + 100 * k) for k in range(10)]
    present = {x.id for x in a[:7]}
    lost = chaoscheck.lost(a, present)
    assert [x.id for x in lost] == [x.id for x in a[7:]]
    assert chaoscheck.lost_wal_bytes(lost, a) == 300
    assert chaoscheck.lost_wal_bytes([], a) == 0


def test_gaps():
    hist = [w('pg-0', 1, 1.0, ack=1.0), w('pg-0', 1, 1.5, ack=1.5), w('pg-1', 2, 4.0, ack=4.0)]
    assert abs(chaoscheck.gaps(hist, 0.5, 4.5) - 2.5) < 1e-9
