"""kubernetes/ for hapg's HTTP endpoint, checked without a cluster:

* The StatefulSet's container exposes port "http" = 8008 (hapg.http_port's
  default, and no ConfigMap setting moves it); the readiness probe is an
  httpGet of /readiness on it; the liveness probe stays the exec probe
  (kubernetes/hapg-probe live), which asks /liveness.
* The headless Service names the port, for HAProxy and Prometheus.
* The monitoring component (kubernetes/monitoring/) is a kustomize
  Component, not in the default set; its PodMonitor selects the
  StatefulSet's Pods and scrapes /metrics on the port the Pods expose; the
  Grafana dashboard is valid JSON whose queries use only metrics the
  README documents.
* kubernetes/haproxy/haproxy.cfg is valid for Debian's haproxy (haproxy -c),
  checks writes with OPTIONS /primary and reads with /replica?lag=, and its
  servers are the StatefulSet's Pods through the headless Service.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
K8S = os.path.join(ROOT, 'kubernetes')
MON = os.path.join(K8S, 'monitoring')
HAPROXY_CFG = os.path.join(K8S, 'haproxy', 'haproxy.cfg')


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d['kind'] == kind and (name is None or d['metadata']['name'] == name)]
    assert len(found) == 1, (kind, name, found)
    return found[0]


@pytest.fixture(scope='module')
def sts():
    return one(load(os.path.join(K8S, 'statefulset.yaml')), 'StatefulSet')


def container(sts):
    return next(c for c in sts['spec']['template']['spec']['containers'] if c['name'] == 'postgres')


def default_http_port():
    """hapg.http_port's default as src/http.c defines it."""
    with open(os.path.join(ROOT, 'src', 'http.c')) as f:
        src = f.read()
    m = re.search(r'DefineCustomIntVariable\("hapg\.http_port",.*?&http_settings\.port, (\d+),', src, re.S)
    assert m, 'hapg.http_port is not defined in src/http.c'
    return int(m.group(1))


def test_pods_expose_the_endpoint_and_probe_it(sts):
    c = container(sts)
    ports = {p['name']: p['containerPort'] for p in c['ports']}
    assert ports.get('http') == default_http_port() == 8008
    cm = one(load(os.path.join(K8S, 'configmap.yaml')), 'ConfigMap', 'pg-config')
    assert 'hapg.http_port' not in cm['data']['postgresql.conf']
    rp = c['readinessProbe']
    assert rp['httpGet'] == {'path': '/readiness', 'port': 'http'}
    lp = c['livenessProbe']
    assert lp['exec']['command'] == ['/usr/local/bin/hapg-probe', 'live']
    # the probe script asks the endpoint, it has no rule of its own
    with open(os.path.join(K8S, 'hapg-probe')) as f:
        probe = f.read()
    assert '"/readiness"' in probe and '"/liveness' in probe
    assert 'hapg_status' not in probe


def test_headless_service_names_the_port():
    svc = one(load(os.path.join(K8S, 'services.yaml')), 'Service', 'pg-headless')
    assert {'name': 'http', 'port': 8008, 'targetPort': 'http'} in svc['spec']['ports']


def test_monitoring_is_an_optional_component(sts):
    kz = load(os.path.join(K8S, 'kustomization.yaml'))[0]
    assert 'monitoring' not in ' '.join(kz.get('resources', []) + kz.get('components', []))
    comp = load(os.path.join(MON, 'kustomization.yaml'))[0]
    assert comp['kind'] == 'Component'
    assert comp['apiVersion'] == 'kustomize.config.k8s.io/v1alpha1'
    for r in comp['resources']:
        assert os.path.exists(os.path.join(MON, r)), r
    for g in comp['configMapGenerator']:
        for f in g['files']:
            assert os.path.exists(os.path.join(MON, f)), f
    pm = one(load(os.path.join(MON, 'podmonitor.yaml')), 'PodMonitor')
    labels = sts['spec']['template']['metadata']['labels']
    for k, v in pm['spec']['selector']['matchLabels'].items():
        assert labels.get(k) == v, (k, v, labels)
    names = {p['name'] for p in container(sts)['ports']}
    for ep in pm['spec']['podMetricsEndpoints']:
        assert ep['port'] in names and ep['path'] == '/metrics'


def test_dashboard_uses_documented_metrics():
    with open(os.path.join(MON, 'hapg-dashboard.json')) as f:
        dash = json.load(f)
    with open(os.path.join(ROOT, 'README.md')) as f:
        documented = set(re.findall(r'^\| `(hapg_[a-z_]+)` \| (?:gauge|counter|histogram) \|',
                                    f.read(), re.M))
    assert documented
    exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]
    assert len(exprs) >= 10
    used = set()
    for e in exprs:
        for name in re.findall(r'\bhapg_[a-z_]+', e):
            base = re.sub(r'_(bucket|sum|count)$', '', name)
            assert name in documented or base in documented, name
            used.add(base if base in documented else name)
    for must in ('hapg_primary', 'hapg_replication_lag_bytes', 'hapg_lease_remaining_seconds',
                 'hapg_api_requests_total', 'hapg_loop_duration_seconds'):
        assert must in used, must
    ids = [p['id'] for p in dash['panels']]
    assert len(ids) == len(set(ids))


def test_haproxy_example(sts):
    with open(HAPROXY_CFG) as f:
        cfg = f.read()
    assert re.search(r'^backend primary\n(    .*\n)*?    option httpchk OPTIONS /primary\n', cfg, re.M)
    assert re.search(r'^backend replicas\n(    .*\n)*?    option httpchk OPTIONS /replica\?lag=\S+\n',
                     cfg, re.M)
    assert cfg.count('http-check expect status 200') == 2
    assert 'on-marked-down shutdown-sessions' in cfg
    n = sts['spec']['replicas']
    svc = sts['spec']['serviceName']
    name = sts['metadata']['name']
    for backend in ('primary', 'replicas'):
        block = re.split(r'^backend %s\n' % backend, cfg, flags=re.M)[1].split('\n\n')[0]
        servers = re.findall(r'^    server (\S+) (\S+):5432 check port (\d+)$', block, re.M)
        assert [s[0] for s in servers] == ['%s-%d' % (name, i) for i in range(n)]
        for nm, host, port in servers:
            assert host.startswith('%s.%s.' % (nm, svc)) and int(port) == default_http_port()
    haproxy = shutil.which('haproxy') or '/usr/sbin/haproxy'
    assert os.path.exists(haproxy), 'haproxy (Debian package haproxy) is not installed'
    r = subprocess.run([haproxy, '-c', '-f', HAPROXY_CFG], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
