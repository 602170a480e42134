"""Tests of bin/hapg-launcher on plain PostgreSQL 15 (no hapg loaded).

Run as root (everything PostgreSQL runs as the OS user postgres):

    /usr/bin/python3 -m pytest tests/launcher

Each test builds its own data directories under a fresh /tmp directory owned
by postgres, uses free ports on 127.0.0.1 and bounds every wait.  Set
PG_BINDIR to use other PostgreSQL binaries.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2
import pytest

BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                        "bin", "hapg-launcher")
PGUSER = pwd.getpwnam("postgres")
PGENV = dict(os.environ, HOME=PGUSER.pw_dir, LC_ALL="C")
for _var in ("PGHOST", "PGPORT", "PGDATA", "PGUSER", "PGDATABASE", "PGPASSWORD"):
    PGENV.pop(_var, None)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run as root (tests switch to postgres)")


def as_postgres():
    return dict(user=PGUSER.pw_uid, group=PGUSER.pw_gid, extra_groups=[], env=PGENV)


def run_pg(argv, timeout=60):
    """Run a PostgreSQL tool as postgres; fail the test with its output."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, **as_postgres())
    assert r.returncode == 0, "%s failed (%d):\n%s%s" % (argv, r.returncode, r.stdout, r.stderr)
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chown(path):
    os.chown(path, PGUSER.pw_uid, PGUSER.pw_gid)


def wait_until(what, fn, timeout):
    """Poll fn until it returns something true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last = e
        time.sleep(0.2)
    pytest.fail("timed out after %.0f s waiting for %s (last error: %r)" % (timeout, what, last))


def connect(port):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                            connect_timeout=3)
    conn.autocommit = True
    return conn


def query(port, sql, args=None):
    conn = connect(port)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class Node:
    """One data directory and its port; started by the launcher or by pg_ctl."""

    def __init__(self, base, name):
        self.base, self.name = base, name
        self.pgdata = os.path.join(base, name)
        self.port = free_port()
        self.pglog = os.path.join(base, name + ".postgres.log")
        self.launcher_log = os.path.join(base, name + ".launcher.log")
        self.launcher = None

    def settings(self):
        return ("\nlisten_addresses = '127.0.0.1'\nport = %d\n"
                "unix_socket_directories = '%s'\ncluster_name = 'node-%s'\n"
                "wal_keep_size = '256MB'\nlog_line_prefix = '%%m [%%p] '\n"
                % (self.port, self.base, self.name))

    def initdb(self, checksums=True):
        argv = [os.path.join(BINDIR, "initdb"), "-D", self.pgdata, "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        if checksums:
            argv.append("--data-checksums")
        run_pg(argv)
        self.append("postgresql.conf", self.settings())
        self.append("pg_hba.conf", "# hapg-test-marker-%s\n" % self.name)

    def append(self, name, text):
        with open(os.path.join(self.pgdata, name), "a") as f:
            f.write(text)

    def read(self, name):
        with open(os.path.join(self.pgdata, name)) as f:
            return f.read()

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.pgdata, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def start_launcher(self, extra_args=(), env=None):
        kwargs = as_postgres()
        kwargs["env"] = dict(kwargs["env"], **(env or {}))
        with open(self.launcher_log, "ab") as out:
            self.launcher = subprocess.Popen(
                [LAUNCHER, "--pgdata", self.pgdata, "--bindir", BINDIR, "--log", self.pglog]
                + list(extra_args), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                **kwargs)
        return self.launcher

    def log(self):
        with open(self.launcher_log) as f:
            return f.read()

    def wait_ready(self, timeout=30):
        wait_until("%s to accept connections" % self.name,
                   lambda: query(self.port, "SELECT 1") == [(1,)], timeout)

    def stop_launcher(self, timeout=10):
        """SIGTERM the launcher; return (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.launcher.send_signal(signal.SIGTERM)
        rc = self.launcher.wait(timeout)
        return rc, time.monotonic() - t0

    def pg_ctl(self, *args, timeout=60):
        return run_pg([os.path.join(BINDIR, "pg_ctl"), "-D", self.pgdata] + list(args),
                      timeout=timeout)

    def kill_everything(self):
        """Teardown: whatever state the test left, nothing keeps running."""
        if self.launcher and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGTERM)
            try:
                self.launcher.wait(15)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait(5)
        pid = self.postmaster_pid()
        if pid and alive(pid):
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster():
    """A factory of Nodes in one temporary directory owned by postgres."""
    base = tempfile.mkdtemp(prefix="hapg-launcher-")
    chown(base)
    nodes = []

    def make(name):
        node = Node(base, name)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.kill_everything()
    if os.environ.get("KEEP_TMP"):
        print("kept", base)
    else:
        shutil.rmtree(base, ignore_errors=True)


def test_start_and_sigterm(cluster):
    a = cluster("a")
    a.initdb()
    a.start_launcher()
    a.wait_ready()
    pm = a.postmaster_pid()
    with open("/proc/%d/stat" % pm) as f:
        stat = f.read()
    assert int(stat[stat.rindex(")") + 2:].split()[1]) == a.launcher.pid, \
        "postgres is the launcher's child"
    log = a.log()
    assert "started postgres pid %d" % pm in log
    assert "pg_rewind will not be possible" not in log

    rc, took = a.stop_launcher()
    assert rc == 0
    assert took < 5, "SIGTERM took %.1f s" % took
    assert not alive(pm)
    assert "received fast shutdown request" in open(a.pglog).read()
    assert re.search(r"^hapg-launcher: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC shutting down",
                     a.log(), re.M)


def test_restart_after_kill_9(cluster):
    a = cluster("a")
    a.initdb()
    a.start_launcher()
    a.wait_ready()
    query(a.port, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    pm = a.postmaster_pid()
    os.kill(pm, signal.SIGKILL)
    wait_until("a new postmaster", lambda: a.postmaster_pid() not in (None, pm), 30)
    a.wait_ready()
    assert query(a.port, "SELECT id FROM t") == [(1,)]
    log = a.log()
    assert re.search(r"postgres exited with status signal 9 \(SIGKILL\)", log), log
    assert log.count("started postgres pid") == 2
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def make_pair(cluster, checksums=True):
    """A primary run by the launcher and a streaming standby b run by pg_ctl."""
    a, b = cluster("a"), cluster("b")
    a.initdb(checksums=checksums)
    a.start_launcher()
    a.wait_ready()
    query(a.port, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                  "INSERT INTO t VALUES (1, 'before')")
    run_pg([os.path.join(BINDIR, "pg_basebackup"), "-D", b.pgdata, "-R", "-X", "stream",
            "-c", "fast", "-d",
            "host=127.0.0.1 port=%d user=postgres application_name=b" % a.port])
    b.append("postgresql.conf", b.settings())
    b.pg_ctl("-l", b.pglog, "-w", "-t", "30", "start")
    wait_until("b streaming from a", lambda: query(
        a.port, "SELECT 1 FROM pg_stat_replication "
                "WHERE application_name = 'b' AND state = 'streaming'"), 30)
    return a, b


def write_note(path, port, reason="test: b holds the Lease"):
    """The note hapg leaves; port None = leader unknown."""
    source = "" if port is None else \
        "host=127.0.0.1 port=%d user=postgres application_name=a" % port
    with open(path, "w") as f:
        f.write("source=%s\nreason=%s\n" % (source, reason))
    chown(path)


def diverge(a, b):
    """Promote b, then write on a, which is still a primary on the old timeline."""
    b.pg_ctl("-w", "-t", "30", "promote")
    query(b.port, "INSERT INTO t VALUES (2, 'on-b')")
    query(a.port, "INSERT INTO t VALUES (3, 'divergent')")


def diverge_and_rejoin(a, b, stop):
    """Promote b, write on a, leave the rejoin note, stop a behind the launcher's back."""
    diverge(a, b)
    write_note(os.path.join(a.pgdata, "hapg.rejoin"), b.port)
    pm = a.postmaster_pid()
    if stop == "fast":
        # -W: the launcher may move the directory away while pg_ctl would poll it
        a.pg_ctl("-m", "fast", "-W", "stop")
    else:
        os.kill(pm, signal.SIGKILL)
    wait_until("a's old postmaster to exit", lambda: not alive(pm), 30)
    # pg_basebackup's WAL stream shows up as application_name a too: wait for the end
    wait_until("the launcher's rejoin", lambda: "rejoin done" in a.log(), 40)
    wait_until("a back as a standby",
               lambda: query(a.port, "SELECT pg_is_in_recovery()") == [(True,)], 30)
    wait_until("a streaming from b", lambda: query(
        b.port, "SELECT 1 FROM pg_stat_replication "
                "WHERE application_name = 'a' AND state = 'streaming'"), 30)
    assert a.postmaster_pid() != pm


def check_rejoined(a, b):
    """a is b's standby with its own configuration and without its divergent row."""
    assert query(a.port, "SELECT pg_is_in_recovery()") == [(True,)]
    assert query(a.port, "SHOW port") == [(str(a.port),)]
    assert query(a.port, "SHOW cluster_name") == [("node-a",)]
    assert "# hapg-test-marker-a" in a.read("pg_hba.conf")
    assert "# hapg-test-marker-b" not in a.read("pg_hba.conf")
    conninfo = [l for l in a.read("postgresql.auto.conf").splitlines()
                if l.startswith("primary_conninfo")]
    assert len(conninfo) == 1 and "port=%d" % b.port in conninfo[0], conninfo
    assert "application_name=a" in conninfo[0]
    assert os.path.exists(os.path.join(a.pgdata, "standby.signal"))
    assert not os.path.exists(os.path.join(a.pgdata, "hapg.rejoin"))
    assert not os.path.exists(a.pgdata + ".hapg-rejoin")
    assert not [n for n in os.listdir(a.base) if ".rejoin-" in n]
    assert oct(os.stat(a.pgdata).st_mode & 0o777) == oct(0o700)
    query(b.port, "INSERT INTO t VALUES (4, 'after')")
    wait_until("a replaying b's writes",
               lambda: query(a.port, "SELECT count(*) FROM t WHERE id = 4") == [(1,)], 20)
    assert query(a.port, "SELECT id, v FROM t ORDER BY id") == \
        [(1, "before"), (2, "on-b"), (4, "after")]
    log = a.log()
    assert "rejoin requested (reason: test: b holds the Lease)" in log
    assert "rejoin done" in log


def test_rejoin_with_rewind_after_fast_stop(cluster):
    a, b = make_pair(cluster)
    diverge_and_rejoin(a, b, "fast")
    check_rejoined(a, b)
    log = a.log()
    assert "rewinding from host=127.0.0.1 port=%d" % b.port in log
    assert re.search(r"rewind done\n", log), log
    assert "base backup" not in log
    assert "postgres exited with status exit code 0" in log
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_rejoin_with_rewind_after_kill_9(cluster):
    a, b = make_pair(cluster)
    diverge_and_rejoin(a, b, "kill")
    check_rejoined(a, b)
    log = a.log()
    assert "postgres exited with status signal 9" in log
    assert "complete crash recovery" in log, "pg_rewind ran crash recovery itself"
    assert re.search(r"rewind done\n", log), log
    assert "base backup" not in log
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_rejoin_falls_back_to_base_backup(cluster):
    a, b = make_pair(cluster, checksums=False)
    assert "pg_rewind will not be possible: enable wal_log_hints or data checksums" in a.log()
    diverge_and_rejoin(a, b, "fast")
    check_rejoined(a, b)
    log = a.log()
    assert "rewind failed" in log and "wal_log_hints" in log
    assert "base backup: moved %s aside" % a.pgdata in log
    assert "base backup done" in log
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_rejoin_with_unknown_leader(cluster):
    a = cluster("a")
    a.initdb()
    a.start_launcher()
    a.wait_ready()
    write_note(os.path.join(a.pgdata, "hapg.rejoin"), None, reason="fenced, no leader")
    pm = a.postmaster_pid()
    a.pg_ctl("-m", "fast", "-W", "stop")
    wait_until("a back as a standby",
               lambda: query(a.port, "SELECT pg_is_in_recovery()") == [(True,)], 30)
    assert a.postmaster_pid() != pm
    assert os.path.exists(os.path.join(a.pgdata, "standby.signal"))
    assert not os.path.exists(os.path.join(a.pgdata, "hapg.rejoin"))
    log = a.log()
    assert "leader: unknown" in log and "rewinding" not in log
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_rejoin_gives_up_on_unreachable_leader(cluster):
    """Rewind and base backup fail without touching a: after 3 tries it starts as a standby."""
    a = cluster("a")
    a.initdb()
    a.start_launcher()
    a.wait_ready()
    query(a.port, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    write_note(os.path.join(a.pgdata, "hapg.rejoin"), free_port())   # nothing listens
    a.pg_ctl("-m", "fast", "-W", "stop")
    wait_until("the launcher to give up", lambda: "could not rejoin after 3 attempts" in a.log(),
               40)
    a.wait_ready()
    assert query(a.port, "SELECT pg_is_in_recovery()") == [(True,)]
    assert query(a.port, "SELECT id FROM t") == [(1,)]
    assert query(a.port, "SHOW port") == [(str(a.port),)]
    assert os.path.exists(os.path.join(a.pgdata, "hapg.rejoin")), "the note stays"
    assert not os.path.exists(a.pgdata + ".hapg-rejoin")
    assert not [n for n in os.listdir(a.base) if ".rejoin-" in n]
    log = a.log()
    assert log.count("rewinding from") == 3
    assert log.count("put the old data directory back") == 3
    assert "retrying in 5 s" in log and "retrying in 10 s" in log
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_interrupted_base_backup_resumes(cluster):
    """SIGTERM during pg_basebackup is prompt; the next launcher undoes it and rejoins."""
    a, b = make_pair(cluster, checksums=False)
    diverge(a, b)
    # a source that accepts TCP connections and never answers: the tools hang
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    try:
        write_note(os.path.join(a.pgdata, "hapg.rejoin"), blackhole.getsockname()[1])
        a.stop_launcher()
        a.start_launcher(env={"PGCONNECT_TIMEOUT": "6"})
        wait_until("the base backup to start",
                   lambda: "base backup: moved" in a.log(), 30)
        rc, took = a.stop_launcher()
        assert rc == 0 and took < 5, "SIGTERM during pg_basebackup took %.1f s" % took
    finally:
        blackhole.close()
    assert "pg_basebackup stopped: terminating it" in a.log()
    assert os.path.isdir(a.pgdata + ".hapg-rejoin")
    # point the unfinished rejoin at the real leader, as an operator would
    write_note(os.path.join(a.pgdata + ".hapg-rejoin", "note"), b.port)
    a.start_launcher()
    wait_until("the launcher's rejoin", lambda: "rejoin done" in a.log(), 40)
    wait_until("a streaming from b", lambda: query(
        b.port, "SELECT 1 FROM pg_stat_replication "
                "WHERE application_name = 'a' AND state = 'streaming'"), 30)
    log = a.log()
    assert "continuing an unfinished rejoin" in log
    assert "put the old data directory back" in log
    check_rejoined(a, b)
    rc, took = a.stop_launcher()
    assert rc == 0 and took < 5


def test_crash_loop_backoff(cluster):
    a = cluster("a")
    a.initdb()
    a.append("postgresql.conf", "work_mem = 'lots'\n")
    a.start_launcher()
    wait_until("a 4 s back-off", lambda: "waiting 4 s before starting" in a.log(), 20)
    log = a.log()
    waits = [int(w) for w in re.findall(r"within 5 s of starting: waiting (\d+) s", log)]
    assert waits[:3] == [1, 2, 4], log
    assert log.count("started postgres pid") >= 5
    assert "invalid value for parameter \"work_mem\"" in open(a.pglog).read()
    rc, took = a.stop_launcher()
    assert rc == 0
    assert took < 3, "SIGTERM during back-off took %.1f s" % took
    assert a.launcher.returncode == 0


def test_refuses_root():
    r = subprocess.run([LAUNCHER, "--pgdata", "/nonexistent"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "refusing to run as root" in r.stderr
