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
        late = [a for a in checker.acks() if new and a["t"] >= t_new]
        r.notes.append("old primary accepted %d checker writes after the takeover" % len(late))
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
    eps = endpoints("pg-primary")
    r.notes.append("pg-primary -> %s" % eps)
    w.wait_acks(len(w.acks()) + 20, 30)
    return finish(r, w, leader, t0, [new == target, eps == [new_ip]])


NET = NAME

DRILLS = {
    "delete-primary": drill_delete_primary,
    "node-stop": lambda: drill_node_loss("stop"),
    "node-pause": lambda: drill_node_loss("pause"),
    "node-disconnect": lambda: drill_node_loss("disconnect"),
    "switchover": drill_switchover,
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
