#!/usr/bin/python3
"""Capture the fuzzers' seed corpus from real answers of the API double.

    /usr/bin/python3 tests/fuzz/capture_corpus.py [OUTDIR]

Starts apidouble/kubeapi.py on an ephemeral port, writes a Lease and member
Pods the way hapg does (annotations included), and saves what the server
answers: objects, lists, Status errors and watch streams, into
OUTDIR/<target>/ (default tests/fuzz/corpus).  Stops the double it started.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "corpus")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
PODS = "/api/v1/namespaces/default/pods"


def start_double():
    tmp = tempfile.mkdtemp(prefix="hapg-corpus-")
    portfile = os.path.join(tmp, "ports")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "apidouble", "kubeapi.py"),
                          "--listen", "127.0.0.1:0", "--port-file", portfile, "--quiet",
                          "--bookmark-interval", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(portfile) and open(portfile).read().strip():
            return p, "http://127.0.0.1:%s" % open(portfile).read().split()[0]
        time.sleep(0.1)
    p.kill()
    raise SystemExit("the double did not start")


def call(base, method, path, body=None, ctype="application/json", timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def save(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def status_json(role, state, tl, lsn, addr):
    return json.dumps({"role": role, "state": state, "timeline": tl, "lsn": lsn,
                       "connect_address": addr, "version": "1.0", "nofailover": False,
                       "priority": 1})


def main():
    p, base = start_double()
    try:
        lease = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "pg", "labels": {"hapg.io/cluster": "pg"}, "annotations": {
                "hapg.io/lsn": "0/3000148", "hapg.io/timeline": "2",
                "hapg.io/members": json.dumps([{"name": "pg-1", "lsn": "0/3000148", "state": "streaming"},
                                               {"name": "pg-2", "lsn": "0/3000060", "state": "streaming"}]),
                "hapg.io/history": json.dumps([{"old_timeline": 1, "new_timeline": 2, "lsn": "0/3000028",
                                                "reason": "leader's Lease expired; taking over; previous leader pg-1",
                                                "time": "2026-01-01T00:00:00.000000Z", "leader": "pg-0"}]),
                "hapg.io/config": json.dumps({"paused": False})}},
            "spec": {"holderIdentity": "pg-0", "leaseDurationSeconds": 30, "leaseTransitions": 1,
                     "acquireTime": "2026-01-01T00:00:00.000000Z",
                     "renewTime": "2026-01-01T00:00:10.000000Z"}}
        st, created = call(base, "POST", LEASES, lease)
        save("fuzz_lease", "lease-created.json", created)
        st, got = call(base, "GET", LEASES + "/pg")
        save("fuzz_lease", "lease-get.json", got)
        obj = json.loads(got)
        obj["metadata"]["annotations"]["hapg.io/switchover"] = json.dumps(
            {"from": "pg-0", "to": "pg-1", "scheduled_at_us": 0, "requested_at_us": 1767225611000000,
             "requested_by": "pg-2"})
        st, upd = call(base, "PUT", LEASES + "/pg", obj)
        save("fuzz_lease", "lease-switchover.json", upd)
        rel = json.loads(upd)
        rel["spec"]["holderIdentity"] = ""
        rel["metadata"]["annotations"]["hapg.io/handover"] = json.dumps(
            {"from": "pg-0", "to": "pg-1", "lsn": "0/30001C0", "reason": "switchover"})
        del rel["metadata"]["annotations"]["hapg.io/switchover"]
        st, released = call(base, "PUT", LEASES + "/pg", rel)
        save("fuzz_lease", "lease-released.json", released)
        st, conflict = call(base, "PUT", LEASES + "/pg", obj)   # stale resourceVersion
        save("fuzz_status", "status-409.json", conflict)
        st, missing = call(base, "GET", LEASES + "/nope")
        save("fuzz_status", "status-404.json", missing)
        bad = dict(obj)
        bad["metadata"] = dict(obj["metadata"])
        del bad["metadata"]["resourceVersion"]
        st, unproc = call(base, "PUT", LEASES + "/pg", bad)
        save("fuzz_status", "status-422.json", unproc)

        pods = []
        for i, (role, state) in enumerate([("leader", "running"), ("replica", "streaming"),
                                           ("replica", "recovering")]):
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "pg-%d" % i, "labels": {"hapg.io/cluster": "pg", "role": "primary" if i == 0 else "replica"},
                                "annotations": {"hapg.io/status": status_json(role, state, 2, "0/3000148", "10.0.0.%d:5432" % (10 + i))}},
                   "spec": {"containers": [{"name": "postgres", "image": "hapg:1.0"}]}}
            if i == 2:
                pod["metadata"]["annotations"]["hapg.io/candidacy"] = json.dumps(
                    {"term": "12", "eligible": True, "lsn": "0/3000060", "timeline": 2, "priority": 1})
            st, body = call(base, "POST", PODS, pod)
            pods.append(body)
            save("fuzz_pod", "pod-%d.json" % i, body)
        st, patched = call(base, "PATCH", PODS + "/pg-1",
                           {"metadata": {"annotations": {"hapg.io/candidacy": json.dumps(
                               {"term": "13", "eligible": False, "lsn": "0/2000000", "timeline": 1, "priority": 0})}}},
                           ctype="application/merge-patch+json")
        save("fuzz_pod", "pod-patched.json", patched)
        st, plist = call(base, "GET", PODS + "?labelSelector=hapg.io%2Fcluster%3Dpg")
        save("fuzz_pod", "podlist.json", plist)
        st, empty = call(base, "GET", PODS + "?labelSelector=hapg.io%2Fcluster%3Dnone")
        save("fuzz_pod", "podlist-empty.json", empty)

        # watch streams: every event since the start, then a bookmark
        for name, path in (("lease", LEASES + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion=1&fieldSelector=metadata.name%3Dpg"),
                           ("pods", PODS + "?labelSelector=hapg.io%2Fcluster%3Dpg&watch=1&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion=1")):
            st, stream = call(base, "GET", path, timeout=10)
            save("fuzz_watch", "watch-%s" % name, b"\x01\x02\x03\x04" + stream)
            save("fuzz_watch", "watch-%s-bytewise" % name, b"\x00\x00\x00\x00" + stream)
        st, gone = call(base, "GET", LEASES + "?watch=1&resourceVersion=1&timeoutSeconds=1", timeout=10)
        save("fuzz_watch", "watch-answer", b"\xff\xff\xff\xff" + gone)

        save("fuzz_rejoin", "lease-pod", got + b"\0" + pods[0])
        save("fuzz_rejoin", "released-pod", released + b"\0" + pods[1])

        for v in (b"pg-0", b"my-cluster.example", b"0/3000148", b"FFFFFFFF/FFFFFFFF",
                  b"\x1e\x00\x00\x00\x0a\x00\x00\x00\x0a\x00\x00\x00", b"\x05\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"):
            save("fuzz_settings", "v-%s" % v.hex()[:16], v)
    finally:
        p.terminate()
        p.wait(timeout=10)
    print("corpus written to %s" % OUT)


if __name__ == "__main__":
    main()
