#!/usr/bin/python3
"""The drills' writer (and, with --checker, the dual-primary checker).

Runs inside an e2e node container (docker exec; tests/e2e/drills.py starts
it) and inserts one row per transaction into e2e_writes on HOST, each with
its own id, reconnecting after every error.  Every committed insert (the
COMMIT returned) is an acknowledged write: one JSON line
{"id": N, "t": wall-clock seconds} on --out.  Errors are lines {"err": text,
"t": ...}.  It stops when --stop-file exists, or after --max-seconds.

The writer connects through a Service's ClusterIP (pg-primary) with
target_session_attrs=read-write; the checker connects to one Pod's IP
directly (the old primary's), to see whether it ever accepts a write.
Client-side deadlines keep a frozen or unreachable server from stalling it:
connect_timeout, tcp_user_timeout and keepalives for a dead peer, and for a
frozen one (docker pause: its kernel still acknowledges every packet) a
watchdog that shuts the socket down when a transaction takes longer than
--deadline seconds.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

import psycopg2


def cut(conn):
    """Ends a transaction stuck on a frozen server: shut its socket down."""
    try:
        socket.socket(fileno=os.dup(conn.fileno())).shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--drill", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--first-id", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--checker", action="store_true")
    ap.add_argument("--deadline", type=float, default=3.0)
    a = ap.parse_args()
    dsn = ("host=%s port=5432 user=app dbname=app connect_timeout=2 "
           "tcp_user_timeout=2000 keepalives=1 keepalives_idle=1 keepalives_interval=1 "
           "keepalives_count=2 application_name=e2e-%s options='-c statement_timeout=3000'"
           % (a.host, "checker" if a.checker else "writer"))
    if not a.checker:
        dsn += " target_session_attrs=read-write"
    out = open(a.out, "a", buffering=1)
    deadline = time.monotonic() + a.max_seconds
    n = a.first_id
    conn = None
    while time.monotonic() < deadline and not os.path.exists(a.stop_file):
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                watchdog = threading.Timer(a.deadline, cut, (conn,))
                watchdog.start()
                try:
                    with conn.cursor() as c:
                        c.execute("CREATE TABLE IF NOT EXISTS e2e_writes (id bigint PRIMARY KEY, "
                                  "drill text NOT NULL, at timestamptz NOT NULL DEFAULT now(), "
                                  "server inet DEFAULT inet_server_addr())")
                    conn.commit()
                finally:
                    watchdog.cancel()
            watchdog = threading.Timer(a.deadline, cut, (conn,))
            watchdog.start()
            try:
                with conn.cursor() as c:
                    c.execute("INSERT INTO e2e_writes (id, drill) VALUES (%s, %s)", (n, a.drill))
                conn.commit()
            finally:
                watchdog.cancel()
            out.write(json.dumps({"id": n, "t": time.time()}) + "\n")
            n += 1
        except Exception as e:  # every failure: note it, reconnect, go on
            out.write(json.dumps({"err": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                                  "t": time.time(), "id": n}) + "\n")
            n += 1  # an id whose fate is unknown is never reused
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.2)
        time.sleep(a.interval)
    out.write(json.dumps({"done": True, "t": time.time()}) + "\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
