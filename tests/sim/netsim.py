"""Network plumbing of the pod simulation (tests/sim): one Linux bridge in
the root network namespace and one network namespace per "pod", each joined
to the bridge by a veth pair.

    root namespace:  bridge hapgsim0, <net>.1/24 (the API double listens here)
    pod i:           netns hapgsim-<run>-<pod>, eth0 = <net>.1<i+1>/24, lo up

<net> is the first of the RFC 5737 documentation ranges (198.51.100.0/24,
203.0.113.0/24, 192.0.2.0/24) that no interface or route of the machine
uses (`pick_subnet`): they are never routed on the Internet, but a sandbox
may use one for its own link (this machine's eth0 is 192.0.2.2/24 with its
default gateway at 192.0.2.1, so putting 192.0.2.1 on a bridge would hijack
the gateway).  HAPG_SIM_SUBNET=a.b.c forces one.  Cutting a pod
off the network is `ip link set <host-side veth> down` (its peer loses the
carrier: every packet to and from the pod is dropped, connections hang as on
a real partition); healing is `... up`.

Everything created is named with a fixed prefix (bridge `hapgsim0`, host
veths `hsv*`, namespaces `hapgsim-*`), so leftovers of a crashed run can be
found and removed by name (`cleanup_leftovers`).  Where Docker runs, bridged
traffic goes through iptables' FORWARD chain (br_netfilter) whose policy
Docker sets to DROP: the run adds one ACCEPT rule for traffic within
`hapgsim0` (`allow_bridge_forwarding`) and removes it with the bridge.  Only one simulation runs at
a time on a machine: `RunLock` (flock on /run/lock/hapg-sim.lock) serialises
runs, and leftovers are only cleaned while holding it.
"""

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import time

BRIDGE = 'hapgsim0'
DOC_SUBNETS = ('198.51.100', '203.0.113', '192.0.2')
NETNS_PREFIX = 'hapgsim-'
VETH_PREFIX = 'hsv'
LOCK_FILE = '/run/lock/hapg-sim.lock'
STATE_FILE = '/run/lock/hapg-sim.state'     # what a run left behind (pids, dirs)


class NetError(Exception):
    pass


def ip(*args, check=True, ns=None, timeout=20):
    argv = ['ip'] + (['-n', ns] if ns else []) + [str(a) for a in args]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise NetError('%s failed (%d): %s' % (' '.join(argv), p.returncode, p.stdout.strip()))
    return p.stdout


def can_simulate():
    """(True, '') or (False, why) - whether this machine can run the simulation."""
    if os.geteuid() != 0:
        return False, 'the pod simulation needs root (network namespaces, a bridge, runuser)'
    if not shutil.which('ip'):
        return False, 'the `ip` command (iproute2) is not installed'
    probe = NETNS_PREFIX + 'probe-%d' % os.getpid()
    try:
        p = subprocess.run(['ip', 'netns', 'add', probe], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=20)
        if p.returncode != 0:
            return False, '`ip netns add` does not work here: %s' % p.stdout.strip()
        p = subprocess.run(['ip', 'netns', 'exec', probe, 'ip', 'link', 'set', 'lo', 'up'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=20)
        if p.returncode != 0:
            return False, '`ip netns exec` does not work here: %s' % p.stdout.strip()
    finally:
        subprocess.run(['ip', 'netns', 'del', probe], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)
    p = subprocess.run(['ip', 'link', 'add', BRIDGE + 'p', 'type', 'bridge'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    if p.returncode != 0:
        return False, 'cannot create a Linux bridge: %s' % p.stdout.strip()
    subprocess.run(['ip', 'link', 'del', BRIDGE + 'p'], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=20)
    if not shutil.which('runuser'):
        return False, 'runuser (util-linux) is not installed'
    return True, ''


def pick_subnet():
    """The first documentation /24 ('a.b.c') that no address or route of the
    root namespace overlaps (HAPG_SIM_SUBNET overrides)."""
    forced = os.environ.get('HAPG_SIM_SUBNET')
    if forced:
        return forced.rstrip('.')
    used = ip('-o', '-4', 'addr', 'show', check=False) + ip('-4', 'route', 'show', 'table', 'all',
                                                          check=False)
    for net in DOC_SUBNETS:
        if (net + '.') not in used:
            return net
    raise NetError('every documentation range (%s) is in use on this machine; set '
                   'HAPG_SIM_SUBNET' % ', '.join(DOC_SUBNETS))


# --------------------------------------------------------------------------
# one run at a time

class RunLock:
    """An exclusive flock held for the whole simulation run."""

    def __init__(self, path=LOCK_FILE):
        self.path = path
        self.fd = None

    def acquire(self, timeout=600):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                return False
            time.sleep(1)

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def _netns_list():
    out = ip('netns', 'list', check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links():
    out = ip('-o', 'link', 'show', check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(':')
        if len(parts) > 2:
            names.append(parts[1].strip().split('@')[0])
    return names


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def netns_pids(ns):
    out = subprocess.run(['ip', 'netns', 'pids', ns], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, timeout=20).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def kill_netns_processes(ns, timeout=10):
    """SIGKILL every process living in network namespace ns (a pod's whole
    process tree: that namespace holds nothing but the pod)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in netns_pids(ns) if p != os.getpid()]
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)


def cleanup_leftovers(log=print):
    """Remove what a previous (crashed) run left behind: processes recorded in
    STATE_FILE (checked by command line), processes inside hapgsim-*
    namespaces, the namespaces, hsv* veths, the bridge and recorded temp dirs.
    Call only while holding RunLock."""
    removed = []
    state = {}
    try:
        import json
        with open(STATE_FILE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    for ns in _netns_list():
        if ns.startswith(NETNS_PREFIX):
            kill_netns_processes(ns)
    for pid, marker in state.get('pids', []):
        if marker and marker in _cmdline(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            removed.append('process %d' % pid)
    for ns in _netns_list():
        if ns.startswith(NETNS_PREFIX):
            ip('netns', 'del', ns, check=False)
            removed.append('netns ' + ns)
    for link in _links():
        if link.startswith(VETH_PREFIX) or link == BRIDGE:
            ip('link', 'del', link, check=False)
            removed.append('link ' + link)
    remove_bridge_forwarding()
    for d in state.get('dirs', []):
        if os.path.basename(d).startswith('hapg-sim-') and os.path.isdir(d) and \
                not state.get('keep'):
            shutil.rmtree(d, ignore_errors=True)
            removed.append('dir ' + d)
    try:
        os.unlink(STATE_FILE)
    except OSError:
        pass
    if removed and log:
        log('removed leftovers of an earlier run: ' + ', '.join(removed))
    return removed


class RunState:
    """STATE_FILE: the pids and dirs of the current run, for cleanup_leftovers
    after a crash."""

    def __init__(self):
        self.state = {'pids': [], 'dirs': [], 'keep': False}

    def _save(self):
        import json
        tmp = STATE_FILE + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.state, f)
        os.replace(tmp, STATE_FILE)

    def add_pid(self, pid, marker):
        self.state['pids'].append([pid, marker])
        self._save()

    def add_dir(self, d):
        self.state['dirs'].append(d)
        self._save()

    def keep(self):
        self.state['keep'] = True
        self._save()

    def clear(self):
        try:
            os.unlink(STATE_FILE)
        except OSError:
            pass


# --------------------------------------------------------------------------
# the network

class PodNet:
    """The network of one pod: namespace, address, host-side veth."""

    def __init__(self, run, name, index, subnet):
        self.name = name
        self.index = index
        self.ip = '%s.%d' % (subnet, 11 + index)
        self.netns = '%s%s-%s' % (NETNS_PREFIX, run, name)
        self.host_if = '%s%sh%d' % (VETH_PREFIX, run, index)     # <= 15 characters
        self.peer_if = '%s%sp%d' % (VETH_PREFIX, run, index)

    @property
    def nspath(self):
        return '/run/netns/' + self.netns

    def __repr__(self):
        return '<PodNet %s %s %s>' % (self.name, self.ip, self.netns)


FORWARD_RULE = ('FORWARD', '-i', BRIDGE, '-o', BRIDGE, '-j', 'ACCEPT')


def _iptables_tools():
    """The iptables front ends present (nft-based and legacy tables can both
    hold a FORWARD chain that bridged packets traverse)."""
    return [t for t in ('iptables', 'iptables-legacy') if shutil.which(t)]


def allow_bridge_forwarding():
    """Let pods talk to each other through the bridge when br_netfilter sends
    bridged packets through a FORWARD chain with a DROP policy (Docker)."""
    for tool in _iptables_tools():
        if subprocess.run([tool, '-C'] + list(FORWARD_RULE), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=20).returncode != 0:
            subprocess.run([tool, '-I', FORWARD_RULE[0], '1'] + list(FORWARD_RULE[1:]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)


def remove_bridge_forwarding():
    """Remove every copy of the rule allow_bridge_forwarding added (bounded)."""
    for tool in _iptables_tools():
        for _ in range(10):
            if subprocess.run([tool, '-D'] + list(FORWARD_RULE), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode != 0:
                break


class SimNet:
    def __init__(self, run, names, subnet=None):
        assert len(run) <= 6, run
        self.run = run
        self.subnet = subnet or pick_subnet()
        self.gateway = self.subnet + '.1'
        self.pods = {nm: PodNet(run, nm, i, self.subnet) for i, nm in enumerate(names)}
        self.created = False

    def up(self):
        self.created = True
        ip('link', 'add', BRIDGE, 'type', 'bridge')
        ip('addr', 'add', self.gateway + '/24', 'dev', BRIDGE)
        ip('link', 'set', BRIDGE, 'up')
        allow_bridge_forwarding()
        for p in self.pods.values():
            ip('netns', 'add', p.netns)
            ip('link', 'set', 'lo', 'up', ns=p.netns)
            ip('link', 'add', p.host_if, 'type', 'veth', 'peer', 'name', p.peer_if)
            ip('link', 'set', p.peer_if, 'netns', p.netns)
            ip('link', 'set', p.peer_if, 'name', 'eth0', ns=p.netns)
            ip('addr', 'add', p.ip + '/24', 'dev', 'eth0', ns=p.netns)
            ip('link', 'set', 'eth0', 'up', ns=p.netns)
            ip('link', 'set', p.host_if, 'master', BRIDGE)
            ip('link', 'set', p.host_if, 'up')
        return self

    def cut(self, name):
        """Cut a pod off the network (host side of its veth down)."""
        ip('link', 'set', self.pods[name].host_if, 'down')

    def heal(self, name):
        ip('link', 'set', self.pods[name].host_if, 'up')

    def is_cut(self, name):
        """Whether the host side of the pod's veth is administratively down."""
        flags = ip('-o', 'link', 'show', self.pods[name].host_if).split('<', 1)[1].split('>')[0]
        return 'UP' not in flags.split(',')

    def down(self):
        errors = []
        for p in self.pods.values():
            try:
                if p.netns in _netns_list():
                    kill_netns_processes(p.netns)
                    ip('netns', 'del', p.netns)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
            if p.host_if in _links():
                ip('link', 'del', p.host_if, check=False)
        if BRIDGE in _links():
            try:
                ip('link', 'del', BRIDGE)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
        remove_bridge_forwarding()
        self.created = False
        if errors:
            raise NetError('; '.join(errors))
