"""The checker of the fault campaign (bench/chaos.py): pure functions over
what the campaign's client and poller recorded, unit tested in
tests/test_chaos_checker.py.

Records
-------
Write: one acknowledged INSERT.  `id` (unique, allocated when sent),
`member` (the server it was sent to), `src` (which connection), `send` and
`ack` (the client's wall clock right before the statement was sent and
right after its answer arrived), `tl`, `clk`, `lsn` (what the INSERT
returned: the server's WAL insertion timeline, its clock_timestamp() as Unix
seconds, and pg_current_wal_insert_lsn() as an integer, all taken while the
statement ran, before its commit), `gen` (cluster generation: timelines
restart when the campaign has to build a new cluster).

Poll: one round of the poller on one member: `round`, `member`, `rec`
(pg_is_in_recovery(), None if no answer), `psend`/`pack` (the probe INSERT
the poller commits when the member is out of recovery: its send and ack
times, None if not acknowledged), `gen`.

All times are on one clock: the machine's wall clock (the client's
time.time() and the servers' clock_timestamp() on the same machine).

Violations (two writable primaries)
-----------------------------------
zombie   A write w acknowledged by member A on timeline t, while another
         member B had already acknowledged a write on a timeline >= t:
         B's first acknowledged write on that timeline, b, was acknowledged
         before w was sent or before w ran on A (max(w.send, w.clk) >
         b.ack).  Both sides of the comparison are proven: w was sent or ran
         after that instant, and b had been committed by then.  This is the
         class of issue 9 (a leader resumed after SIGSTOP commits on its old
         timeline after a replica promoted).  A member that legitimately
         becomes leader again does so on a newer timeline, so it never fires
         there.  A write that was sent and ran before b.ack but whose answer
         came after it is listed as `late` (not a proven violation: the
         commit may have preceded the promotion; if it was not replicated it
         shows up as lost).
overlap  Two members acknowledging writes in overlapping intervals: a write
         b of member B lies strictly inside a tenure of A, i.e. between
         A's first acknowledged write on a timeline (b.send > its ack) and
         A's last one on the same timeline (b.ack < its send).
poll     In one poller round (all members probed at the same instant), two
         members were out of recovery and both acknowledged the probe
         commit, with overlapping send-ack intervals.

Lost writes: acknowledged writes missing from the leader's table after the
cluster recovered (see bench/chaos.py).
"""

import bisect
import collections

Write = collections.namedtuple('Write', 'id member src send ack tl clk lsn gen')
Poll = collections.namedtuple('Poll', 'round member rec psend pack gen')


def first_acks(writes):
    """{(gen, member, timeline): the first acknowledged write there}."""
    first = {}
    for w in writes:
        add_first(first, w)
    return first


def _earliest_other(first):
    """(gen, timeline) -> the two earliest first-acks, from distinct members,
    over all timelines >= that one: [(ack, member, write), ...] (<= 2)."""
    by_gen = collections.defaultdict(list)
    for (gen, member, tl), w in first.items():
        by_gen[gen].append((tl, member, w))
    out = {}
    for gen, rows in by_gen.items():
        rows.sort(key=lambda r: -r[0])
        best = {}               # member -> earliest first-ack on tl >= current
        i = 0
        tls = sorted({r[0] for r in rows}, reverse=True)
        for tl in tls:
            while i < len(rows) and rows[i][0] >= tl:
                _, member, w = rows[i]
                if member not in best or w.ack < best[member].ack:
                    best[member] = w
                i += 1
            two = sorted(best.values(), key=lambda w: w.ack)[:2]
            out[(gen, tl)] = two
        out[(gen, 'tls')] = sorted(tls)
    return out


def _candidates(table, gen, tl):
    """The two earliest first-acks on timelines >= tl (tl may be unseen)."""
    tls = table.get((gen, 'tls')) or []
    i = bisect.bisect_left(tls, tl)
    if i >= len(tls):
        return []
    return table[(gen, tls[i])]


def zombie_writes(writes, first=None):
    """(proven, late): lists of (w, b) for the writes `writes` judged
    against the first acknowledged writes `first` (first_acks() of every
    write seen; default: of `writes`).  See the module docstring."""
    table = _earliest_other(first if first is not None else first_acks(writes))
    proven, late = [], []
    for w in writes:
        for b in _candidates(table, w.gen, w.tl):
            if b.member == w.member:
                continue
            if max(w.send, w.clk) > b.ack:
                proven.append((w, b))
            elif w.ack > b.ack:
                late.append((w, b))
            break
    return proven, late


def add_tenure(tenure, w):
    """Fold one write into {(gen, member, timeline): (first-acked, last-sent)}."""
    k = (w.gen, w.member, w.tl)
    lo, hi = tenure.get(k, (None, None))
    if lo is None or w.ack < lo.ack:
        lo = w
    if hi is None or w.send > hi.send:
        hi = w
    tenure[k] = (lo, hi)


def add_first(first, w):
    """Fold one write into first_acks()'s map."""
    k = (w.gen, w.member, w.tl)
    f = first.get(k)
    if f is None or w.ack < f.ack:
        first[k] = w


def overlaps(writes, tenure=None):
    """[(a_first, b, a_last)]: a write b of one member strictly inside
    another member's tenure on one timeline (see the module docstring).
    `tenure`: add_tenure() over every write seen (default: over `writes`);
    b ranges over `writes`."""
    if tenure is None:
        tenure = {}
        for w in writes:
            add_tenure(tenure, w)
    by_member = collections.defaultdict(list)
    for w in writes:
        by_member[(w.gen, w.member)].append(w)
    for k in by_member:
        by_member[k].sort(key=lambda w: w.send)
    sends = {k: [w.send for w in v] for k, v in by_member.items()}
    out = []
    for (gen, a, tl), (lo, hi) in tenure.items():
        if lo.id == hi.id or not lo.ack < hi.send:
            continue
        for (g, b), wb in by_member.items():
            if g != gen or b == a:
                continue
            i = bisect.bisect_right(sends[(g, b)], lo.ack)
            while i < len(wb) and wb[i].send < hi.send:
                if wb[i].ack < hi.send:
                    out.append((lo, wb[i], hi))
                i += 1
    return out


def poll_duals(polls):
    """[(p, q)]: two members out of recovery whose probe commits were both
    acknowledged in one round with overlapping intervals."""
    rounds = collections.defaultdict(list)
    for p in polls:
        if p.rec is False and p.pack is not None:
            rounds[(p.gen, p.round)].append(p)
    out = []
    for ps in rounds.values():
        for i in range(len(ps)):
            for j in range(i + 1, len(ps)):
                p, q = ps[i], ps[j]
                if p.member != q.member and p.psend < q.pack and q.psend < p.pack:
                    out.append((p, q))
    return out


def lost(acked, present_ids):
    """Acknowledged writes whose id is not in present_ids."""
    return [w for w in acked if w.id not in present_ids]


def lost_wal_bytes(lost_writes, writes):
    """How much WAL the lost writes span on their timeline beyond the last
    surviving write of the same member and timeline (0 if none lost)."""
    if not lost_writes:
        return 0
    lost_ids = {w.id for w in lost_writes}
    worst = 0
    keep = collections.defaultdict(int)
    for w in writes:
        if w.id not in lost_ids:
            k = (w.gen, w.member, w.tl)
            keep[k] = max(keep[k], w.lsn)
    for w in lost_writes:
        base = keep.get((w.gen, w.member, w.tl))
        if base:
            worst = max(worst, w.lsn - base)
    return worst


def gaps(writes, t0, t1):
    """The longest time in [t0, t1] without an acknowledged write."""
    acks = sorted(w.ack for w in writes if t0 <= w.ack <= t1)
    prev, worst = t0, 0.0
    for a in acks:
        worst = max(worst, a - prev)
        prev = a
    return max(worst, t1 - prev)
