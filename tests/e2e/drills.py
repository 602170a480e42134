#!/usr/bin/python3
"""hapg's end-to-end drills on the real cluster of tests/e2e/cluster.sh.

Each drill runs with a writer inserting through the pg-primary Service's
ClusterIP (tests/e2e/writer.py, run in the control-plane container, whose
kube-proxy routes the ClusterIP), injects one fault, measures how long the
Lease took to move (takeover) and the longest time between two acknowledged
writes (write gap), waits until the cluster is whole again, and counts the
acknowledged writes missing on the leader afterwards (lost).

    drills.py [--only NAME,NAME] [--deploy]

Prints one line per drill and a table, and ends with "N passed, N failed".
Environment: KUBECONFIG, KUBE_BIN (from cluster.sh up), HAPG_E2E_STATE,
HAPG_E2E_NAME.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import time

STATE = os.environ.get("HAPG_E2E_STATE", "/var/lib/hapg-e2e")
NAME = os.environ.get("HAPG_E2E_NAME", "hapg-e2e")
KUBE_BIN = os.environ.get("KUBE_BIN", "/var/cache/hapg-kube/v1.37.2/bin")
KUBECONFIG = os.environ.get("KUBECONFIG", STATE + "/admin.kubeconfig")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = STATE + "/run"
CP = NAME + "-cp"
TTL = 30.0  # hapg.ttl in kubernetes/configmap.yaml


def log(msg):
    print("e2e: %s %s" % (time.strftime("%H:%M:%S", time.gmtime()), msg), flush=True)


def sh(args, check=True, timeout=120, input=None):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError("%s: rc %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()[-500:]))
    return r.stdout


def kubectl(*args, check=True, timeout=60):
    return sh([KUBE_BIN + "/kubectl", "--kubeconfig", KUBECONFIG] + list(args), check=check, timeout=timeout)


def kjson(*args):
    return json.loads(kubectl(*(list(args) + ["-o", "json"])))


def lease():
    """(holder, resourceVersion, transitions) of the Lease pg, or (None, ...) if absent."""
    try:
        lz = kjson("get", "lease", "pg")
    except Exception:
        return None, None, None
    spec = lz.get("spec", {})
    return spec.get("holderIdentity") or "", lz["metadata"]["resourceVersion"], spec.get("leaseTransitions")


def pods():
    return {p["metadata"]["name"]: p for p in kjson("get", "pods", "-l", "hapg.io/cluster=pg")["items"]}


def ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))


def psql(pod, sql, timeout=30, db="postgres"):
    return kubectl("exec", pod, "-c", "postgres", "--", "psql", "-XAtq", "-d", db, "-c", sql,
                   timeout=timeout).strip()


def wait_healthy(n=3, timeout=300):
    """Waits until n member Pods are Ready, one labelled primary and holding the
    Lease, the others replicas that stream; returns the leader's name."""
    end = time.monotonic() + timeout
    why = ""
    while time.monotonic() < end:
        try:
            ps = pods()
            holder = lease()[0]
            prim = [k for k, p in ps.items() if p["metadata"].get("labels", {}).get("role") == "primary"]
            reps = [k for k, p in ps.items() if p["metadata"].get("labels", {}).get("role") == "replica"]
            if (len(ps) == n and all(ready(p) for p in ps.values()) and prim == [holder]
                    and len(reps) == n - 1 and all(ps[k].get("status", {}).get("phase") == "Running" for k in ps)):
                streaming = psql(holder, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                if int(streaming) == n - 1:
                    return holder
                why = "%s replicas stream" % streaming
            else:
                why = "pods %s primary %s replicas %s holder %s" % (
                    {k: ready(p) for k, p in ps.items()}, prim, reps, holder)
        except Exception as e:
            why = str(e)[:200]
        time.sleep(1)
    raise RuntimeError("cluster not healthy after %d s: %s" % (timeout, why))


def service_ip(name):
    return kjson("get", "svc", name)["spec"]["clusterIP"]


def endpoints(name):
    ips = []
    for s in kjson("get", "endpointslices", "-l", "kubernetes.io/service-name=" + name)["items"]:
        for e in s.get("endpoints") or []:
            if e.get("conditions", {}).get("ready"):
                ips += e["addresses"]
    return sorted(ips)


def app_password():
    s = kjson("get", "secret", "pg-secrets")
    return base64.b64decode(s["data"]["app-password"]).decode()


class Writer:
    """A writer (or checker) process in a node container; its output in RUN."""

    def __init__(self, drill, host, container=CP, first_id=1, checker=False):
        self.drill = drill
        self.name = drill + ("-checker" if checker else "")
        self.out = "%s/%s.jsonl" % (RUN, self.name)
        self.stop_file = "%s/%s.stop" % (RUN, self.name)
        for f in (self.out, self.stop_file):
            if os.path.exists(f):
                os.unlink(f)
        # ids unique across runs on one cluster: start at the clock in microseconds
        # (a writer makes at most ~20 attempts a second)
        first_id = int(time.time() * 1e6)
        args = ["docker", "exec", "-d", "-e", "PGPASSWORD=" + app_password(), container,
                "python3", "/e2e/writer.py", "--host", host, "--drill", drill,
                "--out", "/state/%s.jsonl" % self.name, "--stop-file", "/state/%s.stop" % self.name,
                "--first-id", str(first_id)]
        if checker:
            args.append("--checker")
        sh(args)

    def lines(self):
        try:
            with open(self.out) as f:
                return [json.loads(x) for x in f if x.strip()]
        except (FileNotFoundError, ValueError):
            return []

    def acks(self):
        return [x for x in self.lines() if "id" in x and "err" not in x]

    def wait_acks(self, n, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.acks()) >= n:
                return True
            time.sleep(0.2)
        return False

    def stop(self, timeout=20):
        open(self.stop_file, "w").close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(x.get("done") for x in self.lines()):
                return
            time.sleep(0.2)


def max_gap(acks, since):
    ts = [since] + sorted(a["t"] for a in acks if a["t"] >= since)
    return max((b - a for a, b in zip(ts, ts[1:])), default=None)


def lost_writes(leader, drill, acks):
    present = set(int(x) for x in psql(leader, "SELECT id FROM e2e_writes WHERE drill = '%s'" % drill,
                                       timeout=60, db="app").split())
    return sorted(a["id"] for a in acks if a["id"] not in present)


def wait_takeover(old, timeout, t0):
    """Polls the Lease until another member holds it; returns (new, seconds since t0)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        h = lease()[0]
        if h and h != old:
            return h, time.time() - t0
        time.sleep(0.1)
    return None, None


class Result:
    def __init__(self, drill):
        self.drill, self.passed, self.takeover, self.gap = drill, False, None, None
        self.acked, self.lost, self.notes = 0, None, []

    def row(self):
        f = lambda v: "-" if v is None else "%.1f" % v
        return "%-22s %-6s %9s %9s %7s %5s  %s" % (
            self.drill, "yes" if self.passed else "NO", f(self.takeover), f(self.gap), self.acked,
            "-" if self.lost is None else len(self.lost), "; ".join(self.notes))


def finish(r, w, leader, t_fault, checks, allow_loss=False):
    w.stop()
    acks = w.acks()
    r.acked = len(acks)
    r.gap = max_gap(acks, t_fault)
    r.lost = lost_writes(leader, w.drill, acks)
    if r.lost:
        r.notes.append("lost ids %s" % r.lost[:10])
    r.passed = all(checks) and (allow_loss or r.lost == [])
    return r


def node_of(pod):
    return kjson("get", "pod", pod)["spec"]["nodeName"]


def drill_delete_primary():
    r = Result("1 delete primary Pod")
    old = wait_healthy()
    w = Writer("d1", service_ip("pg-primary"), first_id=1_000_000)
    w.wait_acks(20)
    t0 = time.time()
    kubectl("delete", "pod", old, "--wait=false")
    new, r.takeover = wait_takeover(old, 60, t0)
    r.notes.append("%s -> %s" % (old, new))
    leader = wait_healthy(timeout=300)
    role = kjson("get", "pod", old)["metadata"]["labels"].get("role")
    r.notes.append("%s back as %s after %.0f s" % (old, role, time.time() - t0))
    w.wait_acks(len(w.acks()) + 20, 30)
    return finish(r, w, leader, t0, [new is not None, r.takeover is not None and r.takeover < 5,
                                     role == "replica"])


def drill_node_loss(how):
    r = Result("3 node loss: " + how)
    old = wait_healthy()
    node = node_of(old)
    old_ip = kjson("get", "pod", old)["status"]["podIP"]
    tag = "d3" + how[0]
    w = Writer(tag, service_ip("pg-primary"), first_id={"s": 3_000_000, "p": 3_300_000, "d": 3_600_000}[how[0]])
    w.wait_acks(20)
    t0 = time.time()
    if how == "stop":
        sh(["docker", "stop", "-t", "5", node])
    elif how == "pause":
        sh(["docker", "pause", node])
    else:
        sh(["docker", "network", "disconnect", NET, node])
    checker = None
    if how == "disconnect":
        # the old primary's own node can still reach it: does it accept writes?
        checker = Writer(tag, old_ip, container=node, first_id=3_900_000, checker=True)
    new, r.takeover = wait_takeover(old, TTL * 3, t0)
    t_new = time.time()
    r.notes.append("%s on %s -> %s" % (old, node, new))
    ok = [new is not None, r.takeover is not None and r.takeover <= TTL + 10]
    if new:
        # the Service must follow: its only ready endpoint the new leader
        end = time.monotonic() + 60
        new_ip = kjson("get", "pod", new)["status"]["podIP"]
        while time.monotonic() < end and endpoints("pg-primary") != [new_ip]:
            time.sleep(0.5)
        ok.append(endpoints("pg-primary") == [new_ip])
    w.wait_acks(len(w.acks()) + 20, 60)
    time.sleep(5)
    if how == "stop":
        sh(["docker", "start", node])
    elif how == "pause":
        sh(["docker", "unpause", node])
        checker = Writer(tag, old_ip, container=node, first_id=3_950_000, checker=True)
    else:
        sh(["docker", "network", "connect", "--ip", node_ip(node), NET, node])
    t_back = time.time()
    if checker:
        time.sleep(10)
        checker.stop()
        cacks = checker.acks()
        late = [a for a in cacks if new and a["t"] >= t_new]
        early = [a for a in cacks if a["t"] < t_new]
        r.notes.append("old primary accepted %d checker writes after the takeover (%d before%s)" % (
            len(late), len(early),
            ", the last %.1f s before it" % (t_new - max(a["t"] for a in early)) if early else ""))
        ok.append(not late)
    leader = wait_healthy(timeout=400)
    r.notes.append("%s rejoined as %s %.0f s after the node returned" % (
        old, kjson("get", "pod", old)["metadata"]["labels"].get("role"), time.time() - t_back))
    # asynchronous replication: a write acknowledged by the old primary just
    # before its node vanished may not have reached the replicas.
    res = finish(r, w, leader, t0, ok, allow_loss=True)
    if res.lost:
        res.notes.append("asynchronous replication: lost writes acknowledged by the lost node")
    return res


def node_ip(node):
    n = int(node.rsplit("-w", 1)[1])
    return "172.30.99.%d" % (10 + n)


def drill_switchover():
    r = Result("4 switchover from SQL")
    old = wait_healthy()
    target = sorted(k for k in pods() if k != old)[-1]
    w = Writer("d4", service_ip("pg-primary"), first_id=4_000_000)
    w.wait_acks(20)
    t0 = time.time()
    out = kubectl("exec", target, "--", "psql", "-XAtc", "SELECT hapg_switchover('%s')" % target, timeout=90)
    new, r.takeover = wait_takeover(old, 60, t0)
    r.notes.append("%s -> %s (returned %s)" % (old, new, out.strip()))
    leader = wait_healthy(timeout=300)
    new_ip = kjson("get", "pod", target)["status"]["podIP"]
    # the labels are right once wait_healthy returns; the EndpointSlice
    # controller follows them on its own schedule (it listed both for a moment
    # in CI), so the Service gets a bounded time to follow, as in drill 3
    t_lab = time.monotonic()
    eps = endpoints("pg-primary")
    while time.monotonic() < t_lab + 30 and eps != [new_ip]:
        time.sleep(0.25)
        eps = endpoints("pg-primary")
    r.notes.append("pg-primary -> %s %.1f s after the labels" % (eps, time.monotonic() - t_lab))
    w.wait_acks(len(w.acks()) + 20, 30)
    return finish(r, w, leader, t0, [new == target, eps == [new_ip]])


def restarts(pod):
    st = kjson("get", "pod", pod).get("status", {}).get("containerStatuses") or [{}]
    return st[0].get("restartCount", 0)


def drill_rm_data():
    r = Result("2 rm -rf primary PGDATA")
    old = wait_healthy()
    r0 = restarts(old)
    w = Writer("d2", service_ip("pg-primary"), first_id=2_000_000)
    w.wait_acks(20)
    t0 = time.time()
    kubectl("exec", old, "--", "rm", "-rf", "/var/lib/postgresql/data/pgdata", check=False, timeout=60)
    new, r.takeover = wait_takeover(old, 90, t0)
    r.notes.append("%s -> %s" % (old, new))
    leader = wait_healthy(timeout=400)
    r1 = restarts(old)
    r.notes.append("%s restarted %d time(s) by the liveness probe, streams again %.0f s after the rm" % (
        old, r1 - r0, time.time() - t0))
    w.wait_acks(len(w.acks()) + 20, 30)
    res = finish(r, w, leader, t0, [new is not None, r.takeover is not None and r.takeover < 10, r1 > r0],
                 allow_loss=True)
    if res.lost:
        res.notes.append("asynchronous replication: lost writes acknowledged just before the rm")
    return res


def drill_pause():
    r = Result("5 pause, node lost")
    old = wait_healthy()
    node = node_of(old)
    psql(old, "SELECT hapg_pause()")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if all(psql(p, "SELECT paused FROM hapg_status()") == "t" for p in pods()):
            break
        time.sleep(1)
    w = Writer("d5", service_ip("pg-primary"), first_id=5_000_000)
    w.wait_acks(20)
    sh(["docker", "stop", "-t", "5", node])
    t_stop = time.time()
    time.sleep(TTL * 2)
    others = [p for p in pods() if p != old]
    holder = lease()[0]
    promoted = [p for p in others if psql(p, "SELECT pg_is_in_recovery()") == "f"]
    r.notes.append("paused %.0f s after %s's node stopped: holder %s, promoted %s" % (
        time.time() - t_stop, old, holder, promoted or "none"))
    ok = [holder == old, not promoted]
    t0 = time.time()
    psql(others[0], "SELECT hapg_resume()")
    new, r.takeover = wait_takeover(old, TTL * 2, t0)
    r.notes.append("resumed: %s took over" % new)
    ok.append(new is not None)
    w.wait_acks(len(w.acks()) + 20, 60)
    sh(["docker", "start", node])
    leader = wait_healthy(timeout=400)
    return finish(r, w, leader, t0, ok, allow_loss=True)


def drill_rollout():
    r = Result("6 rollout restart+drain")
    old = wait_healthy()
    _, _, tr0 = lease()
    w = Writer("d6", service_ip("pg-primary"), first_id=6_000_000)
    w.wait_acks(20)
    t0 = time.time()
    rev0 = kjson("get", "statefulset", "pg")["status"].get("updateRevision")
    kubectl("rollout", "restart", "statefulset", "pg")
    worst = 0
    end = time.monotonic() + 600
    done = False
    while time.monotonic() < end:
        ps = pods()
        down = sum(1 for p in ps.values() if not ready(p)) + (3 - len(ps))
        if down > worst:
            worst = down
            r.notes.append("at +%.1f s down: %s" % (time.time() - t0, {
                k: ("ready" if ready(p) else p.get("status", {}).get("phase", "?"))
                + (" deleting" if p["metadata"].get("deletionTimestamp") else "")
                for k, p in sorted(ps.items())}))
        sts = kjson("get", "statefulset", "pg")
        st = sts["status"]
        if (st.get("observedGeneration", 0) >= sts["metadata"]["generation"]
                and st.get("updateRevision") != rev0 and st.get("updatedReplicas") == 3
                and st.get("readyReplicas") == 3 and st.get("currentRevision") == st.get("updateRevision")):
            done = True
            break
        time.sleep(0.5)
    leader = wait_healthy(timeout=300)
    _, _, tr1 = lease()
    r.notes.append("rollout %s in %.0f s, at most %d member(s) down, leader %s -> %s, %s Lease transitions" % (
        "done" if done else "NOT done", time.time() - t0, worst, old, leader, (tr1 or 0) - (tr0 or 0)))
    ok = [done, worst <= 1]
    # drain the leader's node: its Pod is evicted (its local volume keeps it
    # Pending until the node is uncordoned); a second drain meanwhile must be
    # refused by the PodDisruptionBudget.
    n1 = node_of(leader)
    t1 = time.time()
    kubectl("drain", n1, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=150s", timeout=200)
    new, tk = wait_takeover(leader, 60, t1)
    r.takeover = tk
    n2 = node_of(sorted(p for p in pods() if p != leader)[0])
    out = subprocess.run([KUBE_BIN + "/kubectl", "--kubeconfig", KUBECONFIG, "drain", n2, "--ignore-daemonsets",
                          "--delete-emptydir-data", "--timeout=20s"], capture_output=True, text=True, timeout=60)
    refused = out.returncode != 0 and "disruption budget" in (out.stdout + out.stderr)
    r.notes.append("drain %s: %s -> %s in %.1f s; second drain (%s) %s" % (
        n1, leader, new, tk or -1, n2, "refused by the PDB" if refused else "NOT refused: " + out.stderr[-200:]))
    kubectl("uncordon", n1)
    kubectl("uncordon", n2)
    ok += [new is not None, refused]
    leader = wait_healthy(timeout=400)
    w.wait_acks(len(w.acks()) + 20, 30)
    return finish(r, w, leader, t0, ok)


def drill_scale():
    r = Result("7 scale to 5")
    wait_healthy()
    t0 = time.time()
    kubectl("scale", "statefulset", "pg", "--replicas=5")
    leader = wait_healthy(n=5, timeout=400)
    members = psql(leader, "SELECT count(*) FROM hapg_members WHERE state IN ('running', 'streaming')")
    r.notes.append("5 members healthy after %.0f s; hapg_members shows %s" % (time.time() - t0, members))
    ok = [members == "5"]
    kubectl("scale", "statefulset", "pg", "--replicas=3")
    end = time.monotonic() + 180
    while time.monotonic() < end and len(pods()) > 3:
        time.sleep(1)
    for c in ("data-pg-3", "data-pg-4"):
        kubectl("delete", "pvc", c, "--wait=false", check=False)
    leader = wait_healthy(timeout=300)
    r.passed = all(ok)
    return r


def drill_probes():
    r = Result("8 readiness, liveness")
    leader = wait_healthy()
    rep = sorted(p for p in pods() if p != leader)[0]
    rep_ip = kjson("get", "pod", rep)["status"]["podIP"]
    lead_ip = kjson("get", "pod", leader)["status"]["podIP"]
    node = node_of(rep)
    rule = ["FORWARD", "-s", rep_ip, "-d", lead_ip, "-p", "tcp", "--dport", "5432", "-j", "REJECT"]
    sh(["docker", "exec", node, "iptables", "-I"] + rule)
    t0 = time.time()
    psql(leader, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = '%s'" % rep)
    left = None
    end = time.monotonic() + 90
    while time.monotonic() < end:
        if rep_ip not in endpoints("pg-replicas"):
            left = time.time() - t0
            break
        time.sleep(0.5)
    sh(["docker", "exec", node, "iptables", "-D"] + rule)
    back = None
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if rep_ip in endpoints("pg-replicas"):
            back = time.time() - t0
            break
        time.sleep(0.5)
    r.notes.append("%s not streaming: left pg-replicas after %s s, back after %s s" % (
        rep, "%.1f" % left if left else "NEVER", "%.1f" % back if back else "NEVER"))
    ok = [left is not None, back is not None]
    # a stalled worker: SIGSTOP hapg's background worker on a replica
    r0 = restarts(rep)
    pid = psql(rep, "SELECT worker_pid FROM hapg_status()")
    t1 = time.time()
    kubectl("exec", rep, "--", "bash", "-c", "kill -STOP " + pid)
    restarted = None
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if restarts(rep) > r0:
            restarted = time.time() - t1
            break
        time.sleep(2)
    r.notes.append("worker %s stopped: container restarted after %s s" % (
        pid, "%.0f" % restarted if restarted else "NEVER"))
    ok.append(restarted is not None)
    wait_healthy(timeout=300)
    r.passed = all(ok)
    return r


NET = NAME

DRILLS = {
    "delete-primary": drill_delete_primary,
    "rm-data": drill_rm_data,
    "node-stop": lambda: drill_node_loss("stop"),
    "node-pause": lambda: drill_node_loss("pause"),
    "node-disconnect": lambda: drill_node_loss("disconnect"),
    "switchover": drill_switchover,
    "pause": drill_pause,
    "rollout-drain": drill_rollout,
    "scale": drill_scale,
    "probes": drill_probes,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(DRILLS))
    a = ap.parse_args()
    os.makedirs(RUN, exist_ok=True)
    results = []
    for name in a.only.split(","):
        log("drill %s" % name)
        t0 = time.time()
        try:
            r = DRILLS[name]()
        except Exception as e:
            r = Result(name)
            r.notes.append("error: %s" % str(e)[:300])
        r.notes.append("%.0f s" % (time.time() - t0))
        log(r.row())
        results.append(r)
    print("\n%-22s %-6s %9s %9s %7s %5s  %s" % ("drill", "passed", "takeover", "writegap", "acked", "lost", "notes"))
    for r in results:
        print(r.row())
    with open(RUN + "/results.json", "w") as f:
        json.dump([r.__dict__ for r in results], f, indent=1)
    npass = sum(r.passed for r in results)
    print("%d passed, %d failed" % (npass, len(results) - npass))
    return 0 if npass == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
