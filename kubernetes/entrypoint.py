#!/usr/bin/env python3
"""hapg-entrypoint: the container entrypoint of a hapg member.

It turns whatever is on the member's volume into a data directory that
belongs to the cluster, writes the configuration, and then replaces itself
with bin/hapg-launcher (which runs PostgreSQL in the foreground for as long
as the container lives).  Python 3 standard library only; it runs as the
OS user that owns the data directory and refuses root, as postgres does.

Environment (every path can be overridden, so that it also runs outside a
container: the tests and the pod simulation use that)
---------------------------------------------------------------------------
POD_NAME            this member's name = its Pod's name (required)
POD_IP              the address other members reach it at (required)
POD_NAMESPACE       else the namespace file of the service account
HAPG_CLUSTER        the cluster's name, else hapg.cluster_name from the ConfigMap
HAPG_SA_DIR         service-account files token, ca.crt, namespace
                    (default /var/run/secrets/kubernetes.io/serviceaccount)
HAPG_CONFIG_DIR     the ConfigMap's mount: postgresql.conf (cluster-wide
                    settings, included by every member's postgresql.conf)
                    and optionally pg_hba.conf (default /etc/hapg/config)
HAPG_SECRETS_DIR    the Secret's mount: superuser-password (optional),
                    replication-password, app-username, app-password,
                    app-database (optional, default app-username)
                    (default /etc/hapg/secrets)
PGDATA              the data directory, a subdirectory of the volume (the
                    launcher's base-backup fallback renames it)
                    (default /var/lib/postgresql/data/pgdata)
PGBIN               PostgreSQL's programs (default /usr/lib/postgresql/15/bin)
HAPG_LAUNCHER       the launcher (default hapg-launcher on PATH, else the
                    repository's bin/hapg-launcher)
HAPG_RUN_DIR        Unix sockets, the replication passfile (replication.pgpass)
                    and, while bootstrapping, bootstrap.pid (for hapg-probe)
                    (default <volume>/run, next to PGDATA: per pod, even when
                    several "pods" share a file system, as in the simulation)
HAPG_PORT           the port PostgreSQL listens on (default 5432)
HAPG_LISTEN_ADDRESSES  listen_addresses (default '*')
HAPG_HTTP_PORT      hapg.http_port, the port of hapg's HTTP endpoint (health
                    checks, /metrics); unset: the ConfigMap's, else 8008
KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT  the API server (in-cluster),
                    or HAPG_KUBERNETES_URL (also written as hapg.kubernetes_url)
HAPG_INITDB_ARGS    extra initdb arguments (default "--encoding=UTF8 --locale=C.UTF-8")
HAPG_BOOTSTRAP_TIMEOUT  seconds to wait for a leader to clone from before
                    giving up with exit status 1 (default 300); Kubernetes then
                    restarts the container, which starts over
HAPG_POLL_MAX       longest pause between two looks at the API (default 10 s)
HAPG_API_TIMEOUT    deadline of one API request (default 10 s)
HAPG_BASEBACKUP_TIMEOUT  seconds pg_basebackup may take (default 43200)

What it does
------------
1. PGDATA holds a data directory (PG_VERSION), or the launcher has a rejoin
   under way (<PGDATA>.hapg-rejoin): write the configuration, exec the
   launcher.  No API call is needed for that (one best-effort read checks
   that the data directory's system identifier is the cluster's).
2. Otherwise the volume is empty (a new member, or one that lost its
   volume).  It reads the Lease <cluster>, the Pod of its holder and the
   ConfigMap <cluster>-bootstrap, and decides (`decide`, a pure function):
   * a leader holds a valid Lease and publishes its connect_address in its
     Pod's hapg.io/status annotation: clone it with pg_basebackup (into
     <PGDATA>.hapg-clone, renamed into place once complete), write the
     configuration and standby.signal, exec the launcher;
   * no leader, no Lease ever, no ConfigMap <cluster>-bootstrap: create the
     ConfigMap naming this member (a create: only one member can win; 409
     means another member is initialising).  The winner runs initdb
     --data-checksums into <PGDATA>.hapg-init, starts a temporary server
     listening on a private Unix socket only, sets the passwords, creates the
     replication role, the application role (LOGIN, NOT a superuser) and its
     database, and CREATE EXTENSION hapg; stops it; records the system
     identifier in the ConfigMap; renames the directory into place and execs
     the launcher, whose server's hapg worker then creates the Lease;
   * the ConfigMap exists (the cluster was initialised, or another member is
     initialising it), or a Lease exists without a leader: never initdb.
     Wait (backing off, saying why) until a leader appears, then clone.
   Every wait is bounded; unrecoverable errors end the process with status
   1 and a message saying what to do.

An initialisation that was interrupted is redone only by the member named
in the ConfigMap and only while no system identifier is recorded there: no
other member can have a copy of it yet.  To initialise a cluster again on
purpose (all volumes lost), delete the ConfigMap <cluster>-bootstrap and the
Lease <cluster>.

Every decision is one line on stderr: `hapg-entrypoint: <UTC time> <text>`.
"""

import datetime
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PREFIX = "hapg-entrypoint"
DEFAULTS = {
    "HAPG_SA_DIR": "/var/run/secrets/kubernetes.io/serviceaccount",
    "HAPG_CONFIG_DIR": "/etc/hapg/config",
    "HAPG_SECRETS_DIR": "/etc/hapg/secrets",
    "PGDATA": "/var/lib/postgresql/data/pgdata",
    "PGBIN": "/usr/lib/postgresql/15/bin",
    "HAPG_PORT": "5432",
    "HAPG_LISTEN_ADDRESSES": "*",
    "HAPG_INITDB_ARGS": "--encoding=UTF8 --locale=C.UTF-8",
    "HAPG_BOOTSTRAP_TIMEOUT": "300",
    "HAPG_POLL_MAX": "10",
    "HAPG_API_TIMEOUT": "10",
    "HAPG_BASEBACKUP_TIMEOUT": "43200",
}
REPLICATION_USER = "replicator"
SUPERUSER = "postgres"
STATUS_ANNOTATION = "hapg.io/status"
CLUSTER_LABEL = "hapg.io/cluster"
INIT_SUFFIX = ".hapg-init"
CLONE_SUFFIX = ".hapg-clone"
INVALID_SUFFIX = ".hapg-invalid-"
REJOIN_STASH_SUFFIX = ".hapg-rejoin"      # bin/hapg-launcher's rejoin state
BOOTSTRAP_MARKER = "bootstrap.pid"        # in HAPG_RUN_DIR while bootstrapping (hapg-probe)
SERVER_START_TIMEOUT = 120.0
SERVER_STOP_TIMEOUT = 120.0
TOOL_TIMEOUT = 300.0

# Every Kubernetes API call this program makes: (verb, API group, resource,
# name).  The client refuses any other call, and tests/test_manifests.py
# checks that kubernetes/rbac.yaml grants exactly these (plus hapg's own).
# "{cluster}" is the cluster's name; "*" any name (the Lease holder's Pod).
API_CALLS = (
    ("get", "coordination.k8s.io", "leases", "{cluster}"),
    ("get", "", "pods", "*"),
    ("get", "", "configmaps", "{cluster}-bootstrap"),
    ("create", "", "configmaps", None),
    ("update", "", "configmaps", "{cluster}-bootstrap"),
)


class Fatal(Exception):
    """An error no retry will fix: logged, exit status 1."""


# One line per event on stderr, greppable by its prefix, with a UTC timestamp.
def log(msg):
    now = datetime.datetime.now(datetime.timezone.utc)
    line = "%s: %s.%03d UTC %s\n" % (PREFIX, now.strftime("%Y-%m-%d %H:%M:%S"),
                                     now.microsecond // 1000, msg)
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except OSError:
        pass


# --------------------------------------------------------------------------
# postgresql.conf syntax

_CONF_LINE = re.compile(
    r"""^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*=?\s*('(?:[^'\\]|\\.|'')*'|[^\s#']+)?\s*(#.*)?$""")


# name -> value of a postgresql.conf text (later lines win, names lower-cased,
# include directives returned under their own name).
def parse_conf(text):
    out = {}
    for item in parse_conf_lines(text):
        out[item[0]] = item[1]
    return out


# [(name, value, line number)] in file order; raises ValueError on a bad line.
def parse_conf_lines(text):
    items = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _CONF_LINE.match(raw)
        if not m:
            raise ValueError("line %d: cannot parse %r" % (n, raw))
        name, value = m.group(1).lower(), m.group(2) or ""
        if value.startswith("'"):
            value = value[1:-1]
            value = re.sub(r"\\(.)", r"\1", value.replace("''", "'"))
        items.append((name, value, n))
    return items


# Quoted for postgresql.conf: '' and \\ escaped.
def conf_quote(value):
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


# shared_preload_libraries with hapg in it (first), keeping the others.
def preload_with_hapg(value):
    libs = [x.strip().strip('"') for x in (value or "").split(",") if x.strip()]
    return ", ".join(["hapg"] + [x for x in libs if x != "hapg"])


# libpq's passfile format: * for host, port, database; : and \ escaped.
def passfile_line(user, password):
    esc = lambda s: s.replace("\\", "\\\\").replace(":", "\\:")
    return "*:*:*:%s:%s\n" % (esc(user), esc(password))


# A conninfo value: quoted when it has spaces, quotes or backslashes.
def conninfo_value(v):
    v = str(v)
    if v and not re.search(r"[\s'\\]", v):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


# host:port with brackets around an IPv6 address, as hapg.connect_address wants.
def host_port(host, port):
    return ("[%s]:%s" if ":" in host else "%s:%s") % (host, port)


# "10.0.0.1:5432" / "[fd00::1]:5432" -> (host, port); None if malformed.
def split_host_port(addr):
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", addr or "") or re.match(r"^([^:\s]+):(\d+)$", addr or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        return None
    return m.group(1), int(m.group(2))


_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def valid_name(name):
    return bool(name) and len(name) <= 63 and bool(_DNS1123.match(name))


# --------------------------------------------------------------------------
# the decision: pure, no I/O (tests/test_manifests.py tests it on its own)

def parse_k8s_time(s):
    """RFC 3339 (micro)time -> aware datetime, None if absent/unparsable."""
    if not s:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        return None
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = float(m.group(2)) if m.group(2) else 0.0
    tz = m.group(3)
    if tz == "Z":
        off = datetime.timezone.utc
    else:
        sign = 1 if tz[0] == "+" else -1
        off = datetime.timezone(sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return (base + datetime.timedelta(seconds=frac)).replace(tzinfo=off)


def lease_holder(lease):
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or ""


def lease_valid(lease, now, renewed_seen):
    """Does someone hold this Lease now?  Held = a holder is named and either
    we saw it renewed while we watched (immune to clock skew), or its
    renewTime + leaseDurationSeconds is still ahead of our wall clock."""
    if not lease_holder(lease):
        return False
    if renewed_seen:
        return True
    spec = lease.get("spec") or {}
    renew = parse_k8s_time(spec.get("renewTime") or spec.get("acquireTime"))
    try:
        duration = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    if renew is None or duration <= 0:
        return False
    return renew + datetime.timedelta(seconds=duration) > now


def pod_status(pod):
    """The hapg.io/status annotation of a Pod as a dict ({} if absent/garbage)."""
    ann = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    try:
        st = json.loads(ann.get(STATUS_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return st if isinstance(st, dict) else {}


def decide(obs):
    """What to do with this member's volume, given what was observed.

    obs keys:
      member        this member's name
      cluster       the cluster's name
      has_data      PGDATA holds a data directory (PG_VERSION), or the
                    launcher has a rejoin under way
      api_error     why the API could not be read (None when it could)
      lease         the Lease object, None if there is none
      lease_valid   lease_valid(...) of it
      holder_pod    the holder's Pod object (None: not read / not found)
      bootstrap     the data of ConfigMap <cluster>-bootstrap, None if absent
      init_sysid    system identifier of a complete <PGDATA>.hapg-init left
                    by an interrupted initialisation (None otherwise)

    Returns (action, reason, detail): action is one of
      "start"        exec the launcher on the data directory
      "clone"        pg_basebackup from detail = {"member", "host", "port"}
      "finish-init"  rename the completed <PGDATA>.hapg-init into place, start
      "claim"        create the ConfigMap <cluster>-bootstrap naming us
      "initialize"   initdb and the rest (the ConfigMap names us)
      "wait"         look again later
    """
    me = obs["member"]
    if obs.get("has_data"):
        return "start", "the volume holds a data directory", None
    if obs.get("api_error"):
        return "wait", "cannot read the cluster's state from the API: %s" % obs["api_error"], None
    lease = obs.get("lease")
    boot = obs.get("bootstrap")
    holder = lease_holder(lease)
    if lease is not None and obs.get("lease_valid"):
        if holder == me:
            return ("wait", "the Lease names this member, whose volume is empty: waiting for "
                    "another member to take over (after the Lease's ttl) to clone it", None)
        pod = obs.get("holder_pod")
        if pod is None:
            return "wait", "the leader %s has no Pod yet" % holder, None
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(CLUSTER_LABEL) != obs["cluster"]:
            return ("wait", "the leader's Pod %s is not labelled %s=%s"
                    % (holder, CLUSTER_LABEL, obs["cluster"]), None)
        st = pod_status(pod)
        addr = split_host_port(st.get("connect_address") or "")
        if st.get("role") != "leader" or st.get("state") != "running" or addr is None:
            return ("wait", "the leader %s does not publish itself as a running leader with a "
                    "connect_address yet (hapg.io/status: %s)" % (holder, json.dumps(st)), None)
        return ("clone", "%s leads the cluster at %s" % (holder, host_port(*addr)),
                {"member": holder, "host": addr[0], "port": addr[1]})
    boot_sysid = (boot or {}).get("system_identifier") or ""
    if (obs.get("init_sysid") and boot and boot.get("initializer") == me
            and boot_sysid == obs["init_sysid"]):
        return ("finish-init", "this member's initialisation (system identifier %s) was recorded "
                "but not put in place" % boot_sysid, None)
    if lease is not None:
        why = "released" if not holder else "expired (last holder %s)" % holder
        return ("wait", "the cluster has a Lease, %s, so it was initialised: waiting for a "
                "leader to clone from" % why, None)
    if boot is None:
        return "claim", "the cluster was never initialised (no Lease, no ConfigMap %s-bootstrap)" \
            % obs["cluster"], None
    if boot_sysid:
        return ("wait", "the cluster was initialised (system identifier %s, by %s) and has no "
                "leader yet: waiting for one to clone from (never initialising twice)"
                % (boot_sysid, boot.get("initializer") or "?"), None)
    if boot.get("initializer") == me:
        return ("initialize", "this member claimed the initialisation in ConfigMap %s-bootstrap "
                "and no system identifier is recorded yet" % obs["cluster"], None)
    return ("wait", "%s is initialising the cluster (ConfigMap %s-bootstrap, claimed %s): "
            "waiting for it to lead, to clone it" % (boot.get("initializer") or "another member",
                                                      obs["cluster"], boot.get("claimed_at") or "?"),
            None)


# --------------------------------------------------------------------------
# settings

class Settings:
    """Everything taken from the environment and the mounted files."""

    def __init__(self, environ):
        env = dict(DEFAULTS)
        env.update({k: v for k, v in environ.items() if v != ""})
        self.env = env
        self.sa_dir = env["HAPG_SA_DIR"]
        self.config_dir = env["HAPG_CONFIG_DIR"]
        self.secrets_dir = env["HAPG_SECRETS_DIR"]
        self.pgdata = os.path.abspath(env["PGDATA"])
        self.volume = os.path.dirname(self.pgdata)
        self.pgbin = env["PGBIN"]
        self.run_dir = os.path.abspath(env.get("HAPG_RUN_DIR") or os.path.join(self.volume, "run"))
        self.passfile = os.path.join(self.run_dir, "replication.pgpass")
        self.marker = os.path.join(self.run_dir, BOOTSTRAP_MARKER)
        self.port = int(number(env, "HAPG_PORT"))
        self.listen = env["HAPG_LISTEN_ADDRESSES"]
        try:
            self.initdb_args = shlex.split(env["HAPG_INITDB_ARGS"])
        except ValueError as e:
            raise Fatal("HAPG_INITDB_ARGS: %s" % e)
        self.bootstrap_timeout = number(env, "HAPG_BOOTSTRAP_TIMEOUT")
        self.poll_max = max(0.2, number(env, "HAPG_POLL_MAX"))
        self.api_timeout = number(env, "HAPG_API_TIMEOUT")
        self.basebackup_timeout = number(env, "HAPG_BASEBACKUP_TIMEOUT")
        self.member = env.get("POD_NAME", "")
        self.pod_ip = env.get("POD_IP", "")
        self.conf_path = os.path.join(self.config_dir, "postgresql.conf")
        self.hba_path = os.path.join(self.config_dir, "pg_hba.conf")
        self.cm_conf = {}
        if os.path.exists(self.conf_path):
            try:
                with open(self.conf_path, encoding="utf-8") as f:
                    self.cm_conf = parse_conf(f.read())
            except (OSError, ValueError) as e:
                raise Fatal("cannot read the ConfigMap's %s: %s" % (self.conf_path, e))
        self.cluster = env.get("HAPG_CLUSTER") or self.cm_conf.get("hapg.cluster_name", "")
        self.namespace = env.get("POD_NAMESPACE") or read_text(os.path.join(self.sa_dir, "namespace"))
        self.kubernetes_url = env.get("HAPG_KUBERNETES_URL", "")
        if not self.kubernetes_url and env.get("KUBERNETES_SERVICE_HOST"):
            host = env["KUBERNETES_SERVICE_HOST"]
            self.kubernetes_url = "https://%s:%s" % ("[%s]" % host if ":" in host else host,
                                                     env.get("KUBERNETES_SERVICE_PORT") or "443")
        self.launcher = env.get("HAPG_LAUNCHER") or shutil.which("hapg-launcher") or \
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "bin", "hapg-launcher")

    def check(self):
        """The settings every path needs; Fatal with what to fix."""
        if not os.path.exists(self.conf_path):
            raise Fatal("%s is missing: mount the ConfigMap (key postgresql.conf) at %s or set "
                        "HAPG_CONFIG_DIR" % (self.conf_path, self.config_dir))
        if not valid_name(self.member):
            raise Fatal("POD_NAME %r is not a valid member name: set POD_NAME from the Pod's "
                        "metadata.name (env valueFrom fieldRef)" % self.member)
        if not self.pod_ip:
            raise Fatal("POD_IP is not set: set it from the Pod's status.podIP (env valueFrom "
                        "fieldRef); other members connect to this address")
        if not valid_name(self.cluster):
            raise Fatal("the cluster name %r is not valid: set hapg.cluster_name in the "
                        "ConfigMap's postgresql.conf (or HAPG_CLUSTER)" % self.cluster)
        if not valid_name(self.namespace):
            raise Fatal("no namespace: set POD_NAMESPACE or provide %s/namespace" % self.sa_dir)
        if os.path.realpath(self.pgdata) == os.path.realpath(self.volume) or self.volume == "/":
            raise Fatal("PGDATA %s must be a subdirectory of the volume" % self.pgdata)
        if not os.path.isdir(self.volume):
            raise Fatal("the volume %s (the parent of PGDATA) does not exist" % self.volume)

    def bin(self, name):
        return os.path.join(self.pgbin, name)

    def secret(self, key, required=True):
        path = os.path.join(self.secrets_dir, key)
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except FileNotFoundError:
            value = ""
        except OSError as e:
            raise Fatal("cannot read the Secret's %s: %s" % (path, e))
        if required and not value:
            raise Fatal("the Secret has no %s (%s is missing or empty): create the Secret from "
                        "kubernetes/secret-template.yaml" % (key, path))
        return value


def number(env, name):
    try:
        value = float(env[name])
    except ValueError:
        raise Fatal("%s=%r is not a number" % (name, env[name]))
    if value <= 0:
        raise Fatal("%s must be positive" % name)
    return value


def remove_marker(s):
    try:
        os.unlink(s.marker)
    except OSError:
        pass


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------
# files

def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, text, mode=0o600):
    tmp = path + ".hapg-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def has_data(s):
    return os.path.exists(os.path.join(s.pgdata, "PG_VERSION")) or \
        os.path.isdir(s.pgdata + REJOIN_STASH_SUFFIX)


def system_identifier(s, datadir):
    """The data directory's system identifier (pg_controldata), None if unreadable."""
    if not os.path.exists(os.path.join(datadir, "global", "pg_control")):
        return None
    m = re.search(r"^Database system identifier:\s*(\d+)", controldata(s, datadir), re.M)
    return m.group(1) if m else None


def data_checksums(s, datadir):
    m = re.search(r"^Data page checksum version:\s*(\d+)", controldata(s, datadir), re.M)
    return bool(m and int(m.group(1)))


def controldata(s, datadir):
    """pg_controldata's output for datadir ("" if it cannot run)."""
    try:
        return subprocess.run([s.bin("pg_controldata"), datadir], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, LC_ALL="C"),
                              stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# An unusable PGDATA (no PG_VERSION, not empty) is moved aside, never deleted.
def clear_pgdata(s):
    if not os.path.lexists(s.pgdata):
        return
    if os.path.isdir(s.pgdata) and not os.path.islink(s.pgdata) and not os.listdir(s.pgdata):
        os.rmdir(s.pgdata)
        return
    aside = s.pgdata + INVALID_SUFFIX + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log("WARNING: %s is not empty but holds no data directory (no PG_VERSION): moving it "
        "aside to %s (delete it once you have looked at it)" % (s.pgdata, aside))
    os.rename(s.pgdata, aside)
    fsync_dir(s.volume)


def remove_tree(path, why):
    if os.path.lexists(path):
        log("removing %s (%s)" % (path, why))
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            raise Fatal("could not remove %s" % path)


# --------------------------------------------------------------------------
# configuration

DEFAULT_HBA = """\
# pg_hba.conf written by hapg's entrypoint (no pg_hba.conf in the ConfigMap).
# TYPE  DATABASE     USER        ADDRESS  METHOD
# the probes and kubectl exec ... psql, as the OS user postgres:
local   all          postgres             peer
local   all          all                  scram-sha-256
# streaming replication, pg_basebackup, pg_rewind and its CHECKPOINT:
host    replication  replicator  all      scram-sha-256
host    postgres     replicator  all      scram-sha-256
# applications and operators, always with a password:
host    all          all         all      scram-sha-256
"""

# Needed by every member; the ConfigMap may override them (it comes after).
BASE_SETTINGS = (
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("wal_log_hints", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("password_encryption", "scram-sha-256"),
)


def replication_conninfo(s):
    return "user=%s passfile=%s" % (REPLICATION_USER, conninfo_value(s.passfile))


def config_text(s):
    """The member's postgresql.conf: base settings, the ConfigMap (included,
    so that a reload picks up an edited ConfigMap once the kubelet has updated
    the mount), then this pod's identity, which the ConfigMap cannot override."""
    lines = [
        "# postgresql.conf of member %s of the hapg cluster %s, written by hapg's entrypoint"
        % (s.member, s.cluster),
        "# at every container start: edit the ConfigMap (mounted at %s) instead." % s.config_dir,
        "",
        "# what every member needs (the ConfigMap may change these):",
    ]
    lines += ["%s = %s" % (k, conf_quote(v)) for k, v in BASE_SETTINGS]
    lines += ["", "# cluster-wide settings: the ConfigMap",
              "include %s" % conf_quote(s.conf_path), "",
              "# this pod (always wins):"]
    pod = [
        ("listen_addresses", s.listen),
        ("port", str(s.port)),
        ("unix_socket_directories", s.run_dir),
        ("shared_preload_libraries", preload_with_hapg(s.cm_conf.get("shared_preload_libraries"))),
        ("hapg.cluster_name", s.cluster),
        ("hapg.member_name", s.member),
        ("hapg.namespace", s.namespace),
        ("hapg.connect_address", host_port(s.pod_ip, s.port)),
        ("hapg.token_file", os.path.join(s.sa_dir, "token")),
        ("hapg.ca_file", os.path.join(s.sa_dir, "ca.crt")),
        ("hapg.replication_conninfo", replication_conninfo(s)),
    ]
    if s.env.get("HAPG_KUBERNETES_URL"):
        pod.append(("hapg.kubernetes_url", s.kubernetes_url))
    if s.env.get("HAPG_HTTP_PORT"):
        pod.append(("hapg.http_port", str(int(number(s.env, "HAPG_HTTP_PORT")))))
    if os.path.exists(s.hba_path):
        pod.append(("hba_file", s.hba_path))
    lines += ["%s = %s" % (k, conf_quote(v)) for k, v in pod]
    return "\n".join(lines) + "\n"


def write_passfile(s):
    os.makedirs(s.run_dir, mode=0o700, exist_ok=True)
    os.chmod(s.run_dir, 0o700)
    write_atomic(s.passfile, passfile_line(REPLICATION_USER, s.secret("replication-password")))


def write_config(s, datadir):
    """postgresql.conf and (without one in the ConfigMap) pg_hba.conf in datadir;
    the replication passfile in the run directory."""
    write_passfile(s)
    write_atomic(os.path.join(datadir, "postgresql.conf"), config_text(s))
    if not os.path.exists(s.hba_path):
        write_atomic(os.path.join(datadir, "pg_hba.conf"), DEFAULT_HBA)
    log("wrote %s/postgresql.conf (member %s, connect_address %s, ConfigMap %s%s)"
        % (datadir, s.member, host_port(s.pod_ip, s.port), s.conf_path,
           ", hba_file from the ConfigMap" if os.path.exists(s.hba_path) else ""))


_SETS_FOLLOW = re.compile(r"^\s*(primary_conninfo|primary_slot_name)\s*(=|\s)", re.I)


# A clone is the leader's copy: make it this member's, a standby of the leader.
def make_standby(s, datadir, source):
    auto = os.path.join(datadir, "postgresql.auto.conf")
    try:
        with open(auto, encoding="utf-8", errors="surrogateescape") as f:
            kept = [l for l in f.read().splitlines() if not _SETS_FOLLOW.match(l)]
    except FileNotFoundError:
        kept = ["# Do not edit this file manually!",
                "# It will be overwritten by the ALTER SYSTEM command."]
    conninfo = "host=%s port=%d %s application_name=%s" % (
        source["host"], source["port"], replication_conninfo(s), s.member)
    kept.append("primary_conninfo = %s" % conf_quote(conninfo))
    write_atomic(auto, "\n".join(kept) + "\n")
    for name in ("hapg.rejoin", "recovery.signal", "postmaster.pid", "postmaster.opts"):
        try:
            os.unlink(os.path.join(datadir, name))
        except FileNotFoundError:
            pass
    write_atomic(os.path.join(datadir, "standby.signal"), "")


# --------------------------------------------------------------------------
# the Kubernetes API

class ApiError(Exception):
    def __init__(self, msg, status=0):
        Exception.__init__(self, msg)
        self.status = status


class Kube:
    """Just enough of a Kubernetes client: bearer token (re-read each time),
    the service account's CA, a deadline per request, only API_CALLS."""

    def __init__(self, s):
        self.s = s
        self.base = s.kubernetes_url.rstrip("/")
        self.token_file = os.path.join(s.sa_dir, "token")
        self.ca_file = os.path.join(s.sa_dir, "ca.crt")
        self.ctx = None

    def _context(self):
        if self.ctx is None and self.base.startswith("https://"):
            if not os.path.exists(self.ca_file):
                raise ApiError("the service account's CA %s is missing" % self.ca_file)
            self.ctx = ssl.create_default_context(cafile=self.ca_file)
        return self.ctx

    def _allowed(self, verb, group, resource, name):
        for v, g, r, n in API_CALLS:
            if (v, g, r) != (verb, group, resource):
                continue
            if n is None and name is None:
                return True
            if n is not None and name is not None and \
                    (n == "*" or n.format(cluster=self.s.cluster) == name):
                return True
        return False

    def call(self, verb, group, resource, name=None, body=None):
        """(status, object) of one request; ApiError when there is no answer.
        4xx/5xx answers are returned, not raised."""
        if not self._allowed(verb, group, resource, name):
            raise AssertionError("API call %s %s/%s %s is not declared in API_CALLS"
                                 % (verb, group, resource, name))
        if not self.base:
            raise ApiError("no API server: KUBERNETES_SERVICE_HOST (or HAPG_KUBERNETES_URL) is not set")
        prefix = "/apis/%s/v1" % group if group else "/api/v1"
        path = "%s/namespaces/%s/%s" % (prefix, self.s.namespace, resource)
        if name is not None:
            path += "/" + urllib.parse.quote(name, safe="")
        method = {"get": "GET", "create": "POST", "update": "PUT"}[verb]
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        token = read_text(self.token_file)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=self.s.api_timeout,
                                        context=self._context()) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError, ssl.SSLError, ValueError) as e:
            raise ApiError("%s %s: %s" % (method, path, getattr(e, "reason", e)))
        try:
            obj = json.loads(raw.decode("utf-8") or "null")
        except ValueError:
            raise ApiError("%s %s: answer %d is not JSON" % (method, path, status), status)
        return status, obj

    def get(self, group, resource, name):
        """The object, None on 404; ApiError on anything else."""
        status, obj = self.call("get", group, resource, name)
        if status == 404:
            return None
        if status != 200:
            raise ApiError("GET %s %s: %d %s" % (resource, name, status, message(obj)), status)
        return obj


def message(obj):
    if isinstance(obj, dict):
        return obj.get("message") or obj.get("reason") or ""
    return str(obj)[:200]


# --------------------------------------------------------------------------
# the steps

class Entrypoint:
    def __init__(self, s):
        self.s = s
        self.kube = Kube(s)
        self.bootstrap_name = "%s-bootstrap" % s.cluster
        self.seen_lease = None          # (holder, renewTime) first seen
        self.renewed_seen = False
        self.bootstrap_obj = None

    # -- observing
    def observe(self):
        s = self.s
        obs = {"member": s.member, "cluster": s.cluster, "has_data": has_data(s),
               "api_error": None, "lease": None, "lease_valid": False, "holder_pod": None,
               "bootstrap": None, "init_sysid": None}
        if obs["has_data"]:
            return obs
        init_dir = s.pgdata + INIT_SUFFIX
        if os.path.isdir(init_dir):
            obs["init_sysid"] = system_identifier(s, init_dir) \
                if os.path.exists(os.path.join(init_dir, "hapg.initialized")) else None
        try:
            lease = self.kube.get("coordination.k8s.io", "leases", s.cluster)
            obs["lease"] = lease
            if lease is not None:
                key = (lease_holder(lease), (lease.get("spec") or {}).get("renewTime"))
                if self.seen_lease is None or self.seen_lease[0] != key[0]:
                    self.seen_lease, self.renewed_seen = key, False
                elif self.seen_lease[1] != key[1]:
                    self.renewed_seen = True
                obs["lease_valid"] = lease_valid(lease, datetime.datetime.now(datetime.timezone.utc),
                                                 self.renewed_seen)
                holder = lease_holder(lease)
                if obs["lease_valid"] and holder and holder != s.member:
                    obs["holder_pod"] = self.kube.get("", "pods", holder)
            self.bootstrap_obj = self.kube.get("", "configmaps", self.bootstrap_name)
            if self.bootstrap_obj is not None:
                obs["bootstrap"] = self.bootstrap_obj.get("data") or {}
        except ApiError as e:
            obs["api_error"] = str(e)
        return obs

    # -- the loop
    def run(self):
        s = self.s
        s.check()
        os.umask(0o077)
        # Tells hapg-probe's liveness check that a bootstrap is under way (the
        # volume may be empty for a long time); removed before exec or exit.
        os.makedirs(s.run_dir, mode=0o700, exist_ok=True)
        write_atomic(s.marker, "%d\n" % os.getpid())
        try:
            return self.bootstrap()
        finally:
            remove_marker(s)

    def bootstrap(self):
        s = self.s
        if has_data(s):
            log("%s holds a data directory: starting it" % s.pgdata)
            self.check_identity()
            return self.start()
        log("%s has no data directory: member %s of cluster %s in namespace %s joins or "
            "initialises it" % (s.pgdata, s.member, s.cluster, s.namespace))
        started = time.monotonic()
        deadline = started + s.bootstrap_timeout
        delay, last, logged_at = 0.25, None, 0.0
        while True:
            obs = self.observe()
            action, reason, detail = decide(obs)
            now = time.monotonic()
            if (action, reason) != last or action != "wait" or now - logged_at >= 30:
                log("decision: %s: %s%s" % (action, reason, " (waiting for %.0f s of at most %.0f s)"
                                             % (now - started, s.bootstrap_timeout)
                                             if action == "wait" else ""))
                logged_at = now
            last = (action, reason)
            if action == "start":
                return self.start()
            if action == "finish-init":
                return self.finish_init(obs["init_sysid"])
            if action == "initialize":
                return self.initialize()
            if action == "claim":
                self.claim()
            elif action == "clone":
                if self.clone(detail, (obs.get("bootstrap") or {}).get("system_identifier")):
                    return self.start()
            if time.monotonic() >= deadline:
                raise Fatal("no leader to clone from after %.0f s (last: %s); exiting so that "
                            "Kubernetes restarts the container and it looks again"
                            % (time.monotonic() - started, reason))
            if action == "claim":
                continue        # look again at once: we won, or someone else did
            delay = min(s.poll_max, delay * 2)
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    # -- starting: exec the launcher
    def start(self):
        s = self.s
        for leftover, why in ((s.pgdata + INIT_SUFFIX, "an unused initialisation"),
                              (s.pgdata + CLONE_SUFFIX, "an unfinished clone")):
            if os.path.isdir(leftover) and os.path.exists(os.path.join(s.pgdata, "PG_VERSION")):
                remove_tree(leftover, why)
        if os.path.exists(os.path.join(s.pgdata, "PG_VERSION")):
            write_config(s, s.pgdata)
        else:
            write_passfile(s)
            log("the launcher has a rejoin under way (%s%s): it restores the configuration"
                % (s.pgdata, REJOIN_STASH_SUFFIX))
        launcher = s.launcher
        argv = [launcher, "--pgdata", s.pgdata, "--bindir", s.pgbin]
        if not os.path.exists(launcher):
            raise Fatal("the launcher %s does not exist (set HAPG_LAUNCHER)" % launcher)
        if not os.access(launcher, os.X_OK):
            argv = [sys.executable] + argv
        log("exec %s" % " ".join(shlex.quote(a) for a in argv))
        remove_marker(s)
        sys.stderr.flush()
        os.execv(argv[0], argv)

    # Best effort: a volume from another cluster must not start here.
    def check_identity(self):
        s = self.s
        if not os.path.exists(os.path.join(s.pgdata, "PG_VERSION")):
            return
        mine = system_identifier(s, s.pgdata)
        try:
            saved, s.api_timeout = s.api_timeout, min(s.api_timeout, 3.0)
            try:
                boot = self.kube.get("", "configmaps", self.bootstrap_name)
            finally:
                s.api_timeout = saved
        except ApiError as e:
            log("could not read ConfigMap %s to check the system identifier (%s): starting anyway"
                % (self.bootstrap_name, e))
            return
        theirs = ((boot or {}).get("data") or {}).get("system_identifier")
        if mine and theirs and mine != theirs:
            raise Fatal("%s has system identifier %s but cluster %s was initialised as %s "
                        "(ConfigMap %s): this volume belongs to another cluster; empty it to "
                        "clone the current leader" % (s.pgdata, mine, s.cluster, theirs,
                                                      self.bootstrap_name))

    # -- claiming the initialisation: one create wins
    def claim(self):
        s = self.s
        body = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.bootstrap_name,
                         "labels": {CLUSTER_LABEL: s.cluster, "app.kubernetes.io/name": "hapg"},
                         "annotations": {"hapg.io/description":
                                         "The identity of the hapg cluster %s: who initialised it and "
                                         "its system identifier. While it exists no member runs initdb."
                                         % s.cluster}},
            "data": {"initializer": s.member, "claimed_at": utc_now()},
        }
        try:
            status, obj = self.kube.call("create", "", "configmaps", None, body)
        except ApiError as e:
            log("could not create ConfigMap %s: %s" % (self.bootstrap_name, e))
            time.sleep(1)
            return
        if status in (200, 201):
            log("claimed the initialisation of cluster %s (created ConfigMap %s)"
                % (s.cluster, self.bootstrap_name))
        elif status == 409:
            log("ConfigMap %s already exists: another member is initialising the cluster or "
                "did so" % self.bootstrap_name)
        else:
            raise Fatal("creating ConfigMap %s failed: %d %s (does the Role allow it?)"
                        % (self.bootstrap_name, status, message(obj)))

    # -- initialising
    def initialize(self):
        s = self.s
        init_dir = s.pgdata + INIT_SUFFIX
        remove_tree(init_dir, "an earlier initialisation that did not finish")
        remove_tree(s.pgdata + CLONE_SUFFIX, "an unfinished clone")
        clear_pgdata(s)
        app_user = s.secret("app-username")
        app_password = s.secret("app-password")
        app_db = s.secret("app-database", required=False) or app_user
        repl_password = s.secret("replication-password")
        super_password = s.secret("superuser-password", required=False)
        if app_user in (SUPERUSER, REPLICATION_USER) or app_user.startswith("pg_"):
            raise Fatal("app-username %r is reserved: choose another application role name" % app_user)
        if "CHANGE-ME" in (app_password + repl_password + super_password).upper():
            log("WARNING: the Secret still holds the template's CHANGE-ME passwords: replace them")
        argv = [s.bin("initdb"), "-D", init_dir, "--data-checksums", "--username=" + SUPERUSER,
                "--auth-local=peer", "--auth-host=reject", "--no-instructions"] + s.initdb_args
        pwfile = os.path.join(s.secrets_dir, "superuser-password")
        if super_password:
            argv.append("--pwfile=" + pwfile)
        log("initialising: %s" % " ".join(shlex.quote(a) for a in argv))
        run_tool(argv, "initdb", TOOL_TIMEOUT)
        write_config(s, init_dir)
        tmp = tempfile.mkdtemp(prefix="hapg-bootstrap-")
        try:
            self.setup_roles(init_dir, tmp, app_user, app_password, app_db, repl_password,
                             super_password)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        sysid = system_identifier(s, init_dir)
        if not sysid:
            raise Fatal("pg_controldata gives no system identifier for %s" % init_dir)
        write_atomic(os.path.join(init_dir, "hapg.initialized"), sysid + "\n")
        log("initialised %s: system identifier %s, data checksums %s"
            % (init_dir, sysid, "on" if data_checksums(s, init_dir) else "OFF"))
        self.record(sysid)
        return self.finish_init(sysid)

    def setup_roles(self, init_dir, tmp, app_user, app_password, app_db, repl_password,
                    super_password):
        """A temporary server on a private Unix socket (no TCP, hapg idle): roles,
        the application's database, the extension."""
        s = self.s
        hba = os.path.join(tmp, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write("local all %s trust\n" % SUPERUSER)
        logfile = os.path.join(tmp, "server.log")
        argv = [s.bin("postgres"), "-D", init_dir, "-c", "listen_addresses=",
                "-c", "unix_socket_directories=" + tmp, "-c", "unix_socket_permissions=0700",
                "-c", "hba_file=" + hba, "-c", "hapg.cluster_name=",
                "-c", "log_min_error_statement=panic", "-c", "logging_collector=off",
                "-c", "archive_mode=off"]
        log("starting a temporary server on %s (no TCP) to create the roles" % tmp)
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        try:
            psql = [s.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", tmp,
                    "-p", str(s.port), "-U", SUPERUSER, "-d", "postgres"]
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise Fatal("the temporary server exited with status %s:\n%s"
                                % (proc.returncode, tail(logfile)))
                r = subprocess.run(psql + ["-c", "SELECT 1"], capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL, timeout=30)
                if r.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise Fatal("the temporary server did not accept connections within %.0f s:\n%s"
                                % (SERVER_START_TIMEOUT, tail(logfile)))
                time.sleep(0.2)
            env = dict(os.environ, HAPG_SQL_APP_USER=app_user, HAPG_SQL_APP_PASSWORD=app_password,
                       HAPG_SQL_APP_DB=app_db, HAPG_SQL_REPL_PASSWORD=repl_password,
                       HAPG_SQL_SUPER_PASSWORD=super_password)
            r = subprocess.run(psql, input=bootstrap_sql(bool(super_password)), capture_output=True,
                               text=True, timeout=TOOL_TIMEOUT, env=env)
            if r.returncode != 0:
                raise Fatal("creating the roles failed:\n%s%s" % (r.stdout, r.stderr))
            log("created role %s (replication), role %s (LOGIN, not a superuser) and its "
                "database %s; CREATE EXTENSION hapg; superuser password %s"
                % (REPLICATION_USER, app_user, app_db, "set" if super_password else
                   "not set (superuser-password is empty: local peer login only)"))
        finally:
            stop_server(proc, logfile)

    # -- recording the identity: compare-and-swap on the ConfigMap we created
    def record(self, sysid):
        s = self.s
        for attempt in range(5):
            try:
                cm = self.kube.get("", "configmaps", self.bootstrap_name)
            except ApiError as e:
                log("could not read ConfigMap %s (%s): retrying" % (self.bootstrap_name, e))
                time.sleep(min(10, 2 ** attempt))
                continue
            data = (cm or {}).get("data") or {}
            if cm is None or data.get("initializer") != s.member or data.get("system_identifier"):
                raise Fatal("ConfigMap %s changed while this member initialised the cluster "
                            "(now: %s): not using this initialisation"
                            % (self.bootstrap_name, json.dumps(data) if cm else "deleted"))
            data = dict(data, system_identifier=sysid, initialized_at=utc_now(),
                        data_checksums="on")
            cm["data"] = data
            try:
                status, obj = self.kube.call("update", "", "configmaps", self.bootstrap_name, cm)
            except ApiError as e:
                log("could not update ConfigMap %s (%s): retrying" % (self.bootstrap_name, e))
                time.sleep(min(10, 2 ** attempt))
                continue
            if status == 200:
                log("recorded system identifier %s in ConfigMap %s" % (sysid, self.bootstrap_name))
                return
            if status != 409:
                raise Fatal("updating ConfigMap %s failed: %d %s"
                            % (self.bootstrap_name, status, message(obj)))
        raise Fatal("could not record the system identifier in ConfigMap %s" % self.bootstrap_name)

    def finish_init(self, sysid):
        s = self.s
        init_dir = s.pgdata + INIT_SUFFIX
        clear_pgdata(s)
        try:
            os.unlink(os.path.join(init_dir, "hapg.initialized"))
        except FileNotFoundError:
            pass
        os.rename(init_dir, s.pgdata)
        fsync_dir(s.volume)
        log("%s is the new cluster's data directory (system identifier %s): the first leader"
            % (s.pgdata, sysid))
        return self.start()

    # -- cloning the leader
    def clone(self, source, expected_sysid):
        s = self.s
        tmp = s.pgdata + CLONE_SUFFIX
        remove_tree(tmp, "an unfinished clone")
        remove_tree(s.pgdata + INIT_SUFFIX, "an initialisation the cluster did not adopt")
        write_passfile(s)
        conninfo = "host=%s port=%d %s connect_timeout=10" % (
            source["host"], source["port"], replication_conninfo(s))
        argv = [s.bin("pg_basebackup"), "-D", tmp, "-d", conninfo, "-X", "stream",
                "-c", "fast", "--no-password"]
        log("cloning %s at %s: %s" % (source["member"], host_port(source["host"], source["port"]),
                                      " ".join(shlex.quote(a) for a in argv)))
        t0 = time.monotonic()
        try:
            run_tool(argv, "pg_basebackup", s.basebackup_timeout)
        except Fatal as e:
            log("clone failed: %s" % e)
            remove_tree(tmp, "a failed clone")
            return False
        sysid = system_identifier(s, tmp)
        if expected_sysid and sysid != expected_sysid:
            remove_tree(tmp, "a clone of another cluster")
            raise Fatal("the leader %s has system identifier %s, but cluster %s was initialised "
                        "as %s (ConfigMap %s)" % (source["member"], sysid, s.cluster,
                                                  expected_sysid, self.bootstrap_name))
        make_standby(s, tmp, source)
        write_config(s, tmp)
        os.chmod(tmp, 0o700)
        clear_pgdata(s)
        os.rename(tmp, s.pgdata)
        fsync_dir(s.volume)
        log("cloned %s in %.1f s (system identifier %s): starting as its standby"
            % (source["member"], time.monotonic() - t0, sysid))
        return True


def bootstrap_sql(with_super_password):
    """Run by psql on the temporary server; values come from the environment
    (\\getenv), never from the command line, and are quoted by psql."""
    sql = r"""
\getenv app_user HAPG_SQL_APP_USER
\getenv app_password HAPG_SQL_APP_PASSWORD
\getenv app_db HAPG_SQL_APP_DB
\getenv repl_password HAPG_SQL_REPL_PASSWORD
\getenv super_password HAPG_SQL_SUPER_PASSWORD
SET password_encryption = 'scram-sha-256';
"""
    if with_super_password:
        sql += "ALTER ROLE postgres PASSWORD :'super_password';\n"
    sql += r"""
-- streaming, pg_basebackup, and pg_rewind with the functions it needs
-- (as its documentation lists them for a non-superuser), and CHECKPOINT
CREATE ROLE replicator WITH LOGIN REPLICATION NOSUPERUSER PASSWORD :'repl_password';
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO replicator;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO replicator;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO replicator;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO replicator;
GRANT pg_checkpoint TO replicator;
-- the application's role: never a superuser (Patroni's advice)
CREATE ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE EXTENSION hapg;
"""
    return sql


def run_tool(argv, name, timeout):
    """Run a PostgreSQL program, its output logged; Fatal on failure."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL,
                           env=dict(os.environ, LC_ALL=os.environ.get("LC_ALL", "C.UTF-8")))
    except subprocess.TimeoutExpired:
        raise Fatal("%s did not finish within %.0f s" % (name, timeout))
    except OSError as e:
        raise Fatal("cannot run %s: %s" % (argv[0], e))
    for line in (r.stdout + r.stderr).splitlines():
        if line.strip():
            log("%s: %s" % (name, line))
    if r.returncode != 0:
        raise Fatal("%s failed with status %d" % (name, r.returncode))


def stop_server(proc, logfile):
    if proc.poll() is None:
        for sig, wait in ((signal.SIGINT, SERVER_STOP_TIMEOUT), (signal.SIGQUIT, 10.0),
                          (signal.SIGKILL, 10.0)):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                log("the temporary server did not stop after %s within %.0f s" % (sig.name, wait))
    if proc.returncode not in (0, None):
        raise Fatal("the temporary server ended with status %s:\n%s" % (proc.returncode, tail(logfile)))
    log("stopped the temporary server")


def tail(path, n=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    if os.geteuid() == 0:
        sys.stderr.write("%s: refusing to run as root: PostgreSQL cannot run as root; run the "
                         "container as the postgres user (securityContext runAsUser)\n" % PREFIX)
        return 1
    try:
        s = Settings(os.environ)
        Entrypoint(s).run()
    except Fatal as e:
        log("FATAL: %s" % e)
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 1
    return 0


# SIGTERM while bootstrapping (pod deleted): stop at once; the next start
# finds the leftovers and cleans them up.
def _on_term(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    sys.exit(main())
