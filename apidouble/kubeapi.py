#!/usr/bin/env python3
"""kubeapi.py - a Kubernetes API server double (Python 3 standard library only).

It behaves like kube-apiserver for what hapg, kubectl and Patroni use, keeps
everything in memory, and adds an admin API to inject faults per client.

Run
    python3 apidouble/kubeapi.py --listen 127.0.0.1:6443 [--listen 127.0.0.1:0 ...]
        [--listen-plain 127.0.0.1:0 ...] [--tls-cert server.crt --tls-key server.key]
        [--token TOKEN=USER ...] [--token-file FILE ...] [--admin-token T]
        [--port-file F] [--history 1000] [--bookmark-interval 5]
        [--watch-max-seconds 1800] [--rbac USER[=AS] ...]
        [--namespace-termination-seconds 1] [--quiet]

    Prints one line "kubeapi listening on URL [URL ...]" on stdout when ready.
    --listen-plain HOST:PORT (repeatable) serves plain HTTP even with TLS on
    (handy for the admin API).  --port-file F receives the bound ports, one
    per line: --listen ones in order, then --listen-plain ones (port 0 =
    ephemeral).  SIGTERM / SIGINT exit cleanly (status 0).
    apidouble/mkcerts.sh DIR makes ca.crt/ca.key and server.crt/server.key
    (SAN IP:127.0.0.1, DNS:localhost) for --tls-cert/--tls-key.

Resources (all in version v1)
    core: pods (+ pods/status), configmaps, endpoints, services, namespaces,
    serviceaccounts, secrets; coordination.k8s.io: leases; apps: statefulsets
    (+ /status); policy: poddisruptionbudgets (+ /status); rbac.authorization.k8s.io:
    roles, rolebindings, clusterroles, clusterrolebindings (the last two
    cluster-scoped); authorization.k8s.io: selfsubjectaccessreviews,
    selfsubjectrulesreviews; authentication.k8s.io: selfsubjectreviews (the
    reviews are create-only, answered and never stored; see Authorization).
    /api/v1/namespaces/{ns}/{resource}[/{name}[/status]]
    /apis/{group}/v1/namespaces/{ns}/{resource}[/{name}[/status]]
    /api/v1/{resource}[/{name}], /apis/{group}/v1/{resource}[/{name}] (cluster-
    scoped kinds; for namespaced kinds only the all-namespace collection)
    /api/v1/watch/... and /apis/.../watch/... (legacy watch paths)
    Objects are kept as they are: no controllers (a StatefulSet makes no Pods,
    a PodDisruptionBudget's status stays zero, ClusterRole aggregation is not
    done), no admission beyond what is listed here.  That is what
    "kubectl apply -k" of hapg's manifests needs.
    Namespaces are implicit: writing an object into namespace N creates N.
    Deleting a namespace answers it with status.phase Terminating and a
    deletionTimestamp; creating in it is then a 403 ("unable to create new
    content in namespace N because it is being terminated"), deleting it again
    a 409, and --namespace-termination-seconds (default 1; 0 = at once) later
    it and everything in it is gone (like the namespace controller; "kubectl
    delete -k" deletes the Namespace first and the rest after).
    At start-up: namespace default and service default/kubernetes.

Verbs and semantics (as kube-apiserver)
    get, list (labelSelector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b),
    comma = AND; fieldSelector: metadata.name, metadata.namespace and a few
    pod fields, with = == !=), create (POST, 201, 409 AlreadyExists,
    generateName), update (PUT: 409 Conflict if metadata.resourceVersion differs
    from the stored one; leases require it (422 otherwise); leases, endpoints and
    services may be created by PUT), patch (merge-patch+json,
    strategic-merge-patch+json (merge patch + list merge by key for containers,
    env, ports, volumes..., $patch: delete/replace, $deleteFromPrimitiveList),
    json-patch+json (RFC 6902 add/remove/replace/test/move/copy)); a PATCH whose
    result carries a resourceVersion other than the stored one is a 409
    Conflict), delete (DeleteOptions.preconditions uid/resourceVersion honoured;
    pods return the object, others a Status), deletecollection, watch.
    A write that changes nothing does not bump resourceVersion (like etcd3).
    One global resourceVersion counter; objects get uid, creationTimestamp,
    resourceVersion, namespace, generation (pods, services; bumped on spec change).
    Lists carry kind XList, apiVersion, metadata.resourceVersion; list items have
    no kind/apiVersion (like the real server); get/create/watch objects have them.
    Leases are type-checked like the Go decoder: acquireTime/renewTime must be
    RFC 3339 with exactly 6 fractional digits (MicroTime), integers must be
    integers; otherwise 400.  Kinds with a status subresource (pods,
    statefulsets, poddisruptionbudgets): the main resource never changes
    status, .../status changes only status; a new Pod's status is phase
    Pending with its qosClass whatever the request said (as the real Pod
    strategy), the others start with their zero status.  Lease: unknown
    fields are dropped (fieldValidation=Strict: 400), MicroTimes stored in UTC.
    Secrets: data values must be base64 (400 otherwise), stringData is merged
    into data on every write and not stored, type defaults to Opaque.
    RBAC objects: names are path segments (colons allowed); rules need verbs,
    apiGroups and resources (or nonResourceURLs, ClusterRoles only); roleRef
    must name a Role or ClusterRole (ClusterRoleBinding: ClusterRole) of
    rbac.authorization.k8s.io and cannot change (422); subjects are User,
    Group (apiGroup defaulted) or ServiceAccount (namespace required in
    ClusterRoleBindings).  Deletion is immediate except for namespaces (no
    finalizers, no grace period).
    list ignores limit/continue (returns everything) and resourceVersion.
    Request bodies are JSON; protobuf bodies (kubectl's typed generators such
    as "kubectl create configmap/namespace", "kubectl auth can-i") are decoded
    for ConfigMap, Namespace, Lease and the three reviews only, other kinds
    get 415 (e.g. "kubectl create secret": use "kubectl apply -f" instead).
    Server-side apply (PATCH application/apply-patch+yaml, "kubectl apply
    --server-side") is not implemented: 415 UnsupportedMediaType saying so;
    client-side "kubectl apply" (GET, POST, strategic merge PATCH carrying the
    last-applied-configuration annotation) and "kubectl delete -k" work.
    Answers are always JSON.

Watch
    ?watch=true|1|True on list URLs; resourceVersion, timeoutSeconds,
    allowWatchBookmarks, labelSelector, fieldSelector.  Newline-delimited JSON
    events {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}} in
    HTTP/1.1 chunks.  No resourceVersion (or "0"): ADDED for every matching
    object first.  resourceVersion R: replays the events after R from the last
    --history events; older -> one ERROR event with a 410 Expired Status
    ("too old resource version"), then the stream ends.  Selector changes are
    seen as ADDED/DELETED like the real server.  Streams end after
    timeoutSeconds (default and cap --watch-max-seconds), on a matching fault,
    when the port is closed, or when the client goes away.

Errors
    Status objects {"kind":"Status","apiVersion":"v1","metadata":{},
    "status":"Failure","message":..,"reason":..,"details":{..},"code":N}:
    404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid (names that are not
    DNS-1123, bad labels, lease durations <= 0, missing resourceVersion on a
    lease PUT), 400 BadRequest (unparsable JSON, wrong types, body name or
    namespace different from the URL: the real server answers 400 there, not
    422), 401 Unauthorized, 405 MethodNotAllowed, 413, 415.

Authentication
    --token TOKEN=USER (repeatable), --token-file FILE (lines "TOKEN USER",
    re-read when it changes), POST /_double/tokens.  Once any token is
    configured every API request needs "Authorization: Bearer TOKEN" (401
    otherwise; /version, /healthz, /livez, /readyz stay open without a header).
    Without tokens everyone is "system:anonymous".  The token's user is what
    faults, statistics and the request log go by, always.

Authorization (RBAC, opt-in per user)
    By default nobody is restricted (the admin and every token user may do
    everything).  RBAC applies to a token user once it is mapped:
    --rbac USER[=AS] (repeatable) or POST /_double/rbac {"user": USER, "as":
    AS, "groups": [..]}; AS (default: USER itself) is the identity RBAC sees,
    e.g. pg-0=system:serviceaccount:default:hapg, so that several members
    with their own tokens and user names (for faults and stats) all act as
    the ServiceAccount a RoleBinding names.  Groups default to
    system:serviceaccounts, system:serviceaccounts:NS and system:authenticated
    for a ServiceAccount identity, system:authenticated otherwise.
    Requests that impersonate (Impersonate-User / Impersonate-Group headers,
    "kubectl --as=...") are always subject to RBAC as the impersonated user;
    a mapped user needs the "impersonate" verb on users / serviceaccounts /
    groups for that (the others may impersonate freely).
    Evaluation is kube-apiserver's RBAC authorizer over the stored Roles,
    ClusterRoles, RoleBindings and ClusterRoleBindings, read at every request
    (changes apply to the next request; an open watch is not cut): a
    ClusterRoleBinding grants its ClusterRole everywhere, a RoleBinding its
    Role or ClusterRole in the binding's namespace only; subjects match by
    User name, Group, or ServiceAccount (name + namespace, which defaults to
    the RoleBinding's own).  A rule matches on verbs (get, list, watch,
    create, update = PUT, patch, delete, deletecollection, or "*"), apiGroups
    ("" = core, "*"), resources ("pods", "pods/status", "*", "*/status") and
    resourceNames (never matching create, nor list/watch unless a
    fieldSelector metadata.name=NAME names the object, as in kube-apiserver).
    A namespace object is authorized in its own namespace.  Denied: 403
        {"kind":"Status",...,"reason":"Forbidden","code":403,
         "message":"leases.coordination.k8s.io \"c1\" is forbidden: User
           \"system:serviceaccount:default:hapg\" cannot update resource
           \"leases\" in API group \"coordination.k8s.io\" in the namespace
           \"default\"", "details":{"name":"c1","group":"coordination.k8s.io",
         "kind":"leases"}}
    ("pods is forbidden: ..." without a name; "... at the cluster scope" for
    cluster-wide requests; ": RBAC: role.rbac.authorization.k8s.io \"x\" not
    found" appended when a binding of the user names a missing role), before
    anything is executed; watches are refused before they stream.  Faults
    are applied before authorization.  Not enforced: discovery, /version,
    /openapi and other non-resource paths (open to everyone), the reviews,
    and RBAC's escalation checks (a mapped user allowed to write Roles may
    grant anything).  No bootstrap roles exist (no "view", "edit",
    "system:..." ClusterRoles unless created).
    SelfSubjectAccessReview ("kubectl auth can-i"), SelfSubjectRulesReview
    ("kubectl auth can-i --list") and SelfSubjectReview ("kubectl auth
    whoami") answer for the request's identity; unrestricted users are
    allowed everything.

Discovery (enough for kubectl)
    /version, /api, /api/v1, /apis, /apis/{group}[/v1] for every group above
    (kinds, namespaced flags, verbs, short names, categories, status
    subresources); aggregated
    discovery (Accept ...as=APIGroupDiscoveryList) is answered with the plain
    form and Content-Type application/json, which kubectl accepts.
    /openapi/v3 serves only PATCH operations declaring the fieldValidation
    parameter, for every stored kind: that makes kubectl (--validate=strict,
    its default) leave validation to the server; without it "kubectl create
    -f" / "kubectl apply" fail with "failed to download openapi".  The
    operations declare no request body, so "kubectl apply" finds no strategic
    merge patch schema there and computes its patches from its own compiled-in
    types (all kinds above are built in).  /openapi/v2 answers 404 (kubectl
    copes: "kubectl explain" is not available).
    Accept "...;as=Table" gets a
    meta.k8s.io/v1 Table (pods: Name Ready Status Restarts Age [IP Node];
    leases: Name Holder Age; statefulsets: Name Ready Age; rolebindings: Name
    Role Age [Users Groups ServiceAccounts]; ...; rows carry PartialObjectMetadata so
    "kubectl get -L label" works; includeObject=None|Metadata|Object).

Admin API (/_double/..., no bearer token unless --admin-token is given)
    GET  /_double/healthz                    -> ok
    GET  /_double/faults                     -> {"faults":[...]}
    POST /_double/faults {"user":"pg-0"|"*",
         "mode":"error|hang|drop|garbage|huge|truncate|slow",
         "status":503, "retry_after":N, "bytes":N (huge, default 64 MiB),
         "delay":S (slow, default 2 s),
         "verbs":["get","list","watch","create","update","patch","delete"],
         "resources":["leases"], "count":N}   -> 201 {"id":..}
         error: answer with that status as a Status object; hang: hold the
         request until the fault is cleared, the port closes, the client goes
         away or 600 s pass, then close the connection without an answer (the
         request is never executed); drop: close without an answer; garbage:
         200 with a non-JSON body; huge: 200 with a ~64 MiB streamed JSON list;
         truncate: the request is executed, then the answer is cut off half-way
         (the full Content-Length is announced, the connection closed; a watch
         gets half an event); slow: the request waits `delay` seconds (less if
         the fault is cleared or the client goes away), then is served as usual.
         verbs/resources narrow the fault, count limits it to the next N
         requests.  Open watches of that user are ended when a fault matches.
    DELETE /_double/faults[?user=pg-0]       -> {"removed":N}
    GET  /_double/ports                      -> {"ports":[{"port":..,"open":..}]}
    POST /_double/ports/{port}/close|open    refuse new connections on one
         --listen port (existing ones are dropped) / listen again.
    POST /_double/tokens {"token":..,"user":..}; DELETE /_double/tokens?token=..
    GET  /_double/stats -> {"by_user":{user:{verb:n}},"total":{verb:n},
         "by_user_resource":{user:{resource:{verb:n}}},
         "forbidden":{user:{resource:{verb:n}}},"since":unix_time}
         verbs: get list watch create update patch delete deletecollection
         (resource requests only; discovery is not counted); forbidden:
         requests RBAC refused (also counted in the others); users are token
         users, not RBAC identities.
    POST /_double/stats/reset
    GET  /_double/whoami     the user of the request's bearer token (401 if none):
         {"user":..} (+ "identity", "groups", "rbac": true when RBAC applies)
    GET  /_double/rbac       -> {"subjects": {user: identity}} (the RBAC mapping)
    POST /_double/rbac {"user":"pg-0","as":"system:serviceaccount:default:hapg",
         "groups":[..] (optional)}  -> 201: RBAC applies to user pg-0 from its
         next request on, as that identity
    DELETE /_double/rbac[?user=pg-0]         -> {"removed":N}: unrestricted again
    POST /_double/reset      delete every object except the start-up ones
         (tokens, faults and the RBAC mapping stay).

Memory is bounded: --history events, request bodies <= 3 MiB, at most
--max-connections connections per port, idle keep-alive connections closed
after 300 s.  One log line per request on stderr unless --quiet.
"""

import argparse
import base64
import collections
import copy
import datetime
import json
import os
import random
import re
import select
import signal
import socket
import socketserver
import ssl
import string
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER_VERSION = {
    'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0-hapg-double',
    'gitCommit': '0000000000000000000000000000000000000000', 'gitTreeState': 'clean',
    'buildDate': '2024-12-11T00:00:00Z', 'goVersion': 'go1.23.3', 'compiler': 'gc',
    'platform': 'linux/amd64'}
MAX_BODY = 3 * 1024 * 1024
IDLE_TIMEOUT = 300
HANG_MAX_SECONDS = 600
OPTIMISTIC_LOCK = ('the object has been modified; please apply your changes to the '
                   'latest version and try again')

REASONS = {400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound',
           405: 'MethodNotAllowed', 406: 'NotAcceptable', 409: 'Conflict', 410: 'Expired',
           413: 'RequestEntityTooLarge', 415: 'UnsupportedMediaType', 422: 'Invalid',
           429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable',
           504: 'Timeout'}

DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
DNS1035_LABEL = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
QUALIFIED_NAME = re.compile(r'^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$')
LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')
CONFIGMAP_KEY = re.compile(r'^[-._a-zA-Z0-9]+$')
MICROTIME = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$')

MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
MSG_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
             "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
             "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character "
               "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
               "'[a-z]([-a-z0-9]*[a-z0-9])?')")
MSG_QNAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
             "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
             "or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, "
                   "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                   "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                   "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


# ---------------------------------------------------------------------------
# Resource types
# ---------------------------------------------------------------------------

class Res:
    """One resource type: names, scope and the per-type rules of its strategy."""

    def __init__(self, plural, kind, group='', namespaced=True, short=(), create_on_update=False,
                 unconditional=True, generation=False, delete_returns_object=False, fields=(),
                 names='subdomain', status=False, categories=(), review=False):
        self.plural, self.kind, self.group, self.namespaced = plural, kind, group, namespaced
        self.short = list(short)
        self.singular = kind.lower()
        self.create_on_update = create_on_update
        self.unconditional = unconditional
        self.generation = generation
        self.delete_returns_object = delete_returns_object
        self.fields = set(fields) | {'metadata.name', 'metadata.namespace'}
        self.names = names              # name rule: subdomain, label, dns1035, path
        self.status = status            # has a status subresource (main resource keeps status)
        self.categories = list(categories)
        self.review = review            # create-only, answered and never stored (access reviews)
        self.api_version = group + '/v1' if group else 'v1'
        self.qualified = plural + '.' + group if group else plural
        self.qualified_kind = kind + '.' + group if group else kind

    def details(self, name, kind=None, **extra):
        # Status.details as the real server fills them (group omitted for core)
        d = {'name': name}
        if self.group:
            d['group'] = self.group
        d['kind'] = kind or self.plural
        d.update(extra)
        return d


RBAC = 'rbac.authorization.k8s.io'
POD_FIELDS = ('spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName',
              'spec.serviceAccountName', 'status.phase', 'status.podIP', 'status.nominatedNodeName')
RESOURCES = [
    Res('pods', 'Pod', short=['po'], generation=True, delete_returns_object=True, fields=POD_FIELDS,
        status=True, categories=['all']),
    Res('configmaps', 'ConfigMap', short=['cm']),
    Res('endpoints', 'Endpoints', short=['ep'], create_on_update=True),
    Res('services', 'Service', short=['svc'], create_on_update=True, generation=True, names='dns1035',
        categories=['all']),
    Res('namespaces', 'Namespace', namespaced=False, short=['ns'], fields=('status.phase',), names='label'),
    Res('serviceaccounts', 'ServiceAccount', short=['sa']),
    Res('secrets', 'Secret', fields=('type',)),
    Res('leases', 'Lease', group='coordination.k8s.io', create_on_update=True, unconditional=False),
    Res('statefulsets', 'StatefulSet', group='apps', short=['sts'], generation=True, status=True,
        categories=['all']),
    Res('poddisruptionbudgets', 'PodDisruptionBudget', group='policy', short=['pdb'], generation=True,
        status=True),
    Res('roles', 'Role', group=RBAC, names='path'),
    Res('rolebindings', 'RoleBinding', group=RBAC, names='path'),
    Res('clusterroles', 'ClusterRole', group=RBAC, namespaced=False, names='path'),
    Res('clusterrolebindings', 'ClusterRoleBinding', group=RBAC, namespaced=False, names='path'),
    Res('selfsubjectaccessreviews', 'SelfSubjectAccessReview', group='authorization.k8s.io',
        namespaced=False, review=True),
    Res('selfsubjectrulesreviews', 'SelfSubjectRulesReview', group='authorization.k8s.io',
        namespaced=False, review=True),
    Res('selfsubjectreviews', 'SelfSubjectReview', group='authentication.k8s.io', namespaced=False,
        review=True),
]
NEW_STATUS = {'statefulsets': {'replicas': 0, 'availableReplicas': 0},
              'poddisruptionbudgets': {'disruptionsAllowed': 0, 'currentHealthy': 0,
                                       'desiredHealthy': 0, 'expectedPods': 0}}
BY_GROUP = {}
for _r in RESOURCES:
    BY_GROUP.setdefault(_r.group, {})[_r.plural] = _r
BY_PLURAL = {r.plural: r for r in RESOURCES}
GROUPS = [g for g in BY_GROUP if g]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def status_body(code, reason, message, details=None):
    # the Status object every Kubernetes client parses on failure
    body = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': message, 'reason': reason}
    if details:
        body['details'] = details
    body['code'] = code
    return body


class ApiError(Exception):
    """An API failure that is answered as a Status object."""

    def __init__(self, code, message, reason=None, details=None, headers=None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, 'Unknown')
        self.details, self.headers = details, headers or {}

    def body(self):
        # the Status object for this error
        return status_body(self.code, self.reason, self.message, self.details)


def not_found(res, name):
    # the NotFound Status real clients match on (message and details)
    return ApiError(404, '%s "%s" not found' % (res.qualified, name), 'NotFound', res.details(name))


def conflict(res, name, why=OPTIMISTIC_LOCK):
    # the Conflict Status; CAS clients re-read on it
    return ApiError(409, 'Operation cannot be fulfilled on %s "%s": %s' % (res.qualified, name, why),
                    'Conflict', res.details(name))


def bad_request(message):
    # decode-level failures are 400 in kube-apiserver
    return ApiError(400, message, 'BadRequest')


def no_route():
    # what kube-apiserver answers for unknown paths
    return ApiError(404, 'the server could not find the requested resource', 'NotFound', {})


def go_value(v):
    # how Go's %v/%q print a rejected value inside field errors
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    return str(v)


def fe_invalid(field, value, detail):
    # one field.Invalid error: (reason, field, message)
    return ('FieldValueInvalid', field, 'Invalid value: %s: %s' % (go_value(value), detail))


def fe_required(field, detail=''):
    # one field.Required error
    return ('FieldValueRequired', field, 'Required value' + (': ' + detail if detail else ''))


def fe_unsupported(field, value, supported):
    # one field.NotSupported error
    return ('FieldValueNotSupported', field, 'Unsupported value: %s: supported values: %s'
            % (go_value(value), ', '.join(json.dumps(x) for x in supported)))


def name_errors(rule, name):
    # metadata.name rules: DNS subdomain (most kinds), DNS label (namespaces), DNS-1035
    # label (services), path segment (RBAC objects)
    if rule == 'path':
        if name in ('.', '..'):
            return ["may not be '%s'" % name]
        return ["may not contain '%s'" % c for c in ('/', '%') if c in name]
    limit, rx, msg = {'label': (63, DNS1123_LABEL, MSG_LABEL), 'dns1035': (63, DNS1035_LABEL, MSG_DNS1035),
                      'subdomain': (253, DNS1123_SUBDOMAIN, MSG_SUBDOMAIN)}[rule]
    if len(name) > limit:
        return ['must be no more than %d characters' % limit]
    return [] if rx.match(name) else [msg]


def invalid(res, name, errs):
    # 422 with the message and causes shaped like apierrors.NewInvalid
    texts = ['%s: %s' % (f, m) for _, f, m in errs]
    msg = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
    causes = [{'reason': r, 'message': m, 'field': f} for r, f, m in errs]
    return ApiError(422, '%s "%s" is invalid: %s' % (res.qualified_kind, name, msg), 'Invalid',
                    res.details(name, kind=res.kind, causes=causes))


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

LEASE_SPEC_FIELDS = ('holderIdentity', 'leaseDurationSeconds', 'acquireTime', 'renewTime',
                     'leaseTransitions', 'strategy', 'preferredHolder')


def strict_lease_fields(body):
    """fieldValidation=Strict on a Lease: an unknown field is a 400, as the
    real server's strict decoder says it."""
    if not isinstance(body, dict):
        return
    unknown = ['%s' % k for k in body if k not in ('apiVersion', 'kind', 'metadata', 'spec')]
    spec = body.get('spec')
    if isinstance(spec, dict):
        unknown += ['spec.%s' % k for k in spec if k not in LEASE_SPEC_FIELDS]
    if unknown:
        raise bad_request('Lease in version "v1" cannot be handled as a Lease: strict decoding error: %s'
                          % ', '.join('unknown field "%s"' % u for u in unknown))


def microtime_utc(v):
    """A valid MicroTime as the real server stores it: in UTC (Z)."""
    if v.endswith('Z'):
        return v
    t = datetime.datetime.strptime(v[:26] + v[26:].replace(':', ''), '%Y-%m-%dT%H:%M:%S.%f%z')
    return t.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def pod_qos_class(spec):
    """The QoS class the real server gives a new Pod (requests and limits of its containers)."""
    cs = [c for c in ((spec or {}).get('containers') or []) if isinstance(c, dict)]
    res = [c.get('resources') or {} for c in cs]
    if not any((r.get('requests') or r.get('limits')) for r in res):
        return 'BestEffort'
    for r in res:
        lim, req = r.get('limits') or {}, r.get('requests') or lim
        if not (lim.get('cpu') and lim.get('memory') and req.get('cpu') == lim.get('cpu')
                and req.get('memory') == lim.get('memory')):
            return 'Burstable'
    return 'Guaranteed'


def now_rfc3339():
    # metav1.Time precision: whole seconds, UTC
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def typed(res, obj):
    # the object with kind and apiVersion first, as the real server prints them
    out = {'kind': res.kind, 'apiVersion': res.api_version}
    out.update((k, v) for k, v in obj.items() if k not in ('kind', 'apiVersion'))
    return out


def jdump(obj):
    # compact JSON like the Go encoder
    return json.dumps(obj, separators=(',', ':'))


def strict_equal(a, b):
    # JSON equality without Python's True == 1 and 1 == 1.0 coincidences
    if type(a) is not type(b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool) and not isinstance(b, bool):
            return a == b
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def human_age(ts):
    # kubectl's duration.HumanDuration for the Age column
    try:
        t = datetime.datetime.strptime(ts, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return '<unknown>'
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 0:
        return '0s'
    if s < 120:
        return '%ds' % s
    m = s // 60
    if m < 10:
        return '%dm%ds' % (m, s % 60) if s % 60 else '%dm' % m
    if m < 180:
        return '%dm' % m
    h = s // 3600
    if h < 8:
        return '%dh%dm' % (h, m % 60) if m % 60 else '%dh' % h
    if h < 48:
        return '%dh' % h
    if h < 192:
        return '%dd%dh' % (h // 24, h % 24) if h % 24 else '%dd' % (h // 24)
    if h < 24 * 365 * 2:
        return '%dd' % (h // 24)
    return '%dy' % (h // (24 * 365))


def parse_bool(v):
    # strconv.ParseBool, which the real server uses for query flags
    return str(v) in ('1', 't', 'T', 'true', 'TRUE', 'True')


# ---------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------

def qualified_name_errors(v):
    # validation.IsQualifiedName: optional DNS-subdomain prefix, then a name part
    errs = []
    parts = v.split('/')
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append('prefix part must be non-empty')
        elif len(prefix) > 253:
            errs.append('prefix part must be no more than 253 characters')
        elif not DNS1123_SUBDOMAIN.match(prefix):
            errs.append('prefix part ' + MSG_SUBDOMAIN)
    else:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',"
                "  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?"
                "[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. "
                "'example.com/MyName')"]
    if not name:
        errs.append('name part must be non-empty')
    elif len(name) > 63:
        errs.append('name part must be no more than 63 characters')
    elif not QUALIFIED_NAME.match(name):
        errs.append(MSG_QNAME)
    return errs


def label_value_errors(v):
    # validation.IsValidLabelValue
    if len(v) > 63:
        return ['must be no more than 63 characters']
    if not LABEL_VALUE.match(v):
        return [MSG_LABEL_VALUE]
    return []


def split_top(s):
    # split a selector on commas outside parentheses
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
        else:
            cur += ch
    out.append(cur)
    return out


def parse_label_selector(s):
    """Parse a labelSelector into (op, key, values) requirements; 400 if malformed."""
    reqs = []
    if not s or not s.strip():
        return reqs
    for term in split_top(s):
        term = term.strip()
        if not term:
            raise bad_request('unable to parse requirement: found \'\', expected: !, identifier, or \'end of string\'')
        m = re.match(r'^([^\s!=(),]+)\s+(in|notin)\s*\((.*)\)$', term)
        if m:
            key, op = m.group(1), m.group(2)
            values = [v.strip() for v in m.group(3).split(',')]
            if values == ['']:
                raise bad_request('unable to parse requirement: for \'in\', \'notin\' operators, values set can\'t be empty')
        elif term.startswith('!'):
            key, op, values = term[1:].strip(), '!', []
        elif '!=' in term:
            key, v = term.split('!=', 1)
            key, op, values = key.strip(), '!=', [v.strip()]
        elif '==' in term:
            key, v = term.split('==', 1)
            key, op, values = key.strip(), '=', [v.strip()]
        elif '=' in term:
            key, v = term.split('=', 1)
            key, op, values = key.strip(), '=', [v.strip()]
        elif re.search(r'[\s()<>]', term):
            raise bad_request('unable to parse requirement: found \'%s\', expected: in, notin, =, ==, !=, gt, lt' % term)
        else:
            key, op, values = term, 'exists', []
        kerr = qualified_name_errors(key)
        if kerr:
            raise bad_request('unable to parse requirement: values[0][%s]: Invalid value: %s: %s'
                              % (key, json.dumps(key), kerr[0]))
        for v in values:
            verr = label_value_errors(v)
            if verr:
                raise bad_request('unable to parse requirement: values[0][%s]: Invalid value: %s: %s'
                                  % (key, json.dumps(v), verr[0]))
        reqs.append((op, key, values))
    return reqs


def labels_match(reqs, labels):
    # all requirements must hold (comma = AND)
    labels = labels or {}
    for op, key, values in reqs:
        has = key in labels
        if op == '=' and not (has and labels[key] == values[0]):
            return False
        if op == '!=' and has and labels[key] == values[0]:
            return False
        if op == 'in' and not (has and labels[key] in values):
            return False
        if op == 'notin' and has and labels[key] in values:
            return False
        if op == 'exists' and not has:
            return False
        if op == '!' and has:
            return False
    return True


def parse_field_selector(res, s):
    """Parse a fieldSelector into (field, op, value); 400 for unsupported fields."""
    reqs = []
    if not s or not s.strip():
        return reqs
    for term in s.split(','):
        term = term.strip()
        if not term:
            continue
        m = re.match(r'^([^=!]+)(==|!=|=)(.*)$', term)
        if not m:
            raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\'' % (s, term))
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in res.fields:
            raise bad_request('field label not supported: ' + field)
        reqs.append((field, '!=' if op == '!=' else '=', value))
    return reqs


def field_value(obj, field):
    # dotted field path as fieldSelector sees it ("" when absent)
    cur = obj
    for part in field.split('.'):
        if not isinstance(cur, dict):
            return ''
        cur = cur.get(part)
    return '' if cur is None else str(cur)


def fields_match(reqs, obj):
    # all field requirements must hold
    for field, op, value in reqs:
        if (field_value(obj, field) == value) != (op == '='):
            return False
    return True


# ---------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


SMP_KEYS = {'containers': 'name', 'initContainers': 'name', 'ephemeralContainers': 'name',
            'volumes': 'name', 'env': 'name', 'imagePullSecrets': 'name',
            'volumeMounts': 'mountPath', 'volumeDevices': 'devicePath', 'conditions': 'type',
            'ownerReferences': 'uid', 'hostAliases': 'ip', 'containerStatuses': 'name',
            'initContainerStatuses': 'name', 'resourceClaims': 'name', 'ports': None}
SMP_PRIMITIVE_MERGE = {'finalizers'}
_DELETE = object()


def _smp_strip(v):
    # drop $-directives from a value inserted verbatim
    if isinstance(v, dict):
        return {k: _smp_strip(x) for k, x in v.items() if not k.startswith('$')}
    if isinstance(v, list):
        return [_smp_strip(x) for x in v]
    return v


def _smp_list(orig, patch, key):
    # merge two lists of maps by their merge key, as strategic merge patch does
    if key is None:  # ports: containerPort in containers, port in services
        key = 'containerPort' if any(isinstance(i, dict) and 'containerPort' in i
                                     for i in list(orig) + list(patch)) else 'port'
    if any(isinstance(i, dict) and i.get('$patch') == 'replace' for i in patch):
        return [_smp_strip(i) for i in patch if not (isinstance(i, dict) and i.get('$patch') == 'replace')]
    out = [copy.deepcopy(i) for i in orig]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(_smp_strip(item))
            continue
        idx = next((n for n, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get('$patch') == 'delete':
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_smp_strip(item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def strategic_merge_patch(orig, patch):
    """Approximate strategic merge patch: merge patch plus keyed list merges and directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return _smp_strip(patch)
    if patch.get('$patch') == 'delete':
        return _DELETE
    result = dict(orig) if isinstance(orig, dict) else {}
    for k, v in patch.items():
        if k.startswith('$setElementOrder/') or k in ('$retainKeys', '$patch'):
            continue
        if k.startswith('$deleteFromPrimitiveList/'):
            f = k.split('/', 1)[1]
            if isinstance(result.get(f), list) and isinstance(v, list):
                result[f] = [x for x in result[f] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, list) and k in SMP_KEYS and all(isinstance(i, dict) for i in v):
            result[k] = _smp_list(result.get(k) or [], v, SMP_KEYS[k])
        elif isinstance(v, list) and k in SMP_PRIMITIVE_MERGE:
            cur = list(result.get(k) or [])
            result[k] = cur + [x for x in v if x not in cur]
        elif isinstance(v, dict):
            sub = strategic_merge_patch(result.get(k), v)
            if sub is _DELETE:
                result.pop(k, None)
            else:
                result[k] = sub
        else:
            result[k] = _smp_strip(v)
    return result


class PatchError(Exception):
    pass


def _ptr(path):
    # RFC 6901 JSON pointer -> list of tokens
    if path == '':
        return []
    if not isinstance(path, str) or not path.startswith('/'):
        raise PatchError('JSON pointer %r does not start with "/"' % (path,))
    return [t.replace('~1', '/').replace('~0', '~') for t in path[1:].split('/')]


def _parent(doc, tokens, path):
    # container holding the pointer's last token
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise PatchError('doc is missing path: "%s": missing value' % path)
    return cur


def _get(doc, path):
    # value at a JSON pointer (PatchError if missing)
    tokens = _ptr(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError('doc is missing path: "%s": missing value' % path)


def _add(doc, path, value):
    # RFC 6902 add; "-" appends to arrays
    tokens = _ptr(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == '-':
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError('add operation does not apply: doc is missing path: "%s"' % path)
    else:
        raise PatchError('add operation does not apply: doc is missing path: "%s"' % path)
    return doc


def _remove(doc, path):
    # RFC 6902 remove; the path must exist
    tokens = _ptr(path)
    if not tokens:
        raise PatchError('unable to remove the whole document')
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError('remove operation does not apply: doc is missing path: "%s"' % path)


def json_patch(doc, ops):
    """RFC 6902 JSON patch: add, remove, replace, test, move, copy."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or 'op' not in op:
            raise PatchError('unexpected kind: %r' % (op,))
        kind, path = op.get('op'), op.get('path')
        if path is None:
            raise PatchError('operation missing path')
        if kind in ('add', 'replace', 'test') and 'value' not in op:
            raise PatchError('operation missing value')
        if kind == 'add':
            doc = _add(doc, path, copy.deepcopy(op['value']))
        elif kind == 'remove':
            _remove(doc, path)
        elif kind == 'replace':
            tokens = _ptr(path)
            if not tokens:
                doc = copy.deepcopy(op['value'])
            else:
                _get(doc, path)
                parent = _parent(doc, tokens, path)
                if isinstance(parent, list):
                    parent[int(tokens[-1])] = copy.deepcopy(op['value'])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op['value'])
        elif kind == 'test':
            try:
                cur = _get(doc, path)
            except PatchError:
                cur = _DELETE
            if cur is _DELETE or not strict_equal(cur, op['value']):
                raise PatchError('testing value %s failed: test failed' % path)
        elif kind in ('move', 'copy'):
            src = op.get('from')
            if src is None:
                raise PatchError('operation missing from')
            value = copy.deepcopy(_get(doc, src))
            if kind == 'move':
                _remove(doc, src)
            doc = _add(doc, path, value)
        else:
            raise PatchError('Unexpected kind: %s' % kind)
    return doc


# ---------------------------------------------------------------------------
# Protobuf request bodies (kubectl's typed "create configmap/namespace" send them)
# ---------------------------------------------------------------------------

def _pb_varint(buf, i):
    # protobuf base-128 varint at buf[i:]
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError('truncated varint')
        b = buf[i]
        i += 1
        result |= (b & 0x7f) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _pb_fields(buf):
    # (field number, value) pairs of one protobuf message; wire types 0, 1, 2, 5
    i, out = 0, []
    while i < len(buf):
        key, i = _pb_varint(buf, i)
        fn, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _pb_varint(buf, i)
        elif wt == 2:
            n, i = _pb_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError('unsupported wire type %d' % wt)
        out.append((fn, v))
    return out


PB_META = {1: ('name', 'str'), 2: ('generateName', 'str'), 3: ('namespace', 'str'), 5: ('uid', 'str'),
           6: ('resourceVersion', 'str'), 11: ('labels', 'map'), 12: ('annotations', 'map'),
           14: ('finalizers', 'rstr')}
PB_MICROTIME = 'microtime'
PB_SCHEMAS = {
    'ConfigMap': {1: ('metadata', PB_META), 2: ('data', 'map'), 3: ('binaryData', 'mapb64'),
                  4: ('immutable', 'bool')},
    'Namespace': {1: ('metadata', PB_META), 2: ('spec', {1: ('finalizers', 'rstr')})},
    'SelfSubjectAccessReview': {1: ('metadata', PB_META), 2: ('spec', {
        1: ('resourceAttributes', {1: ('namespace', 'str'), 2: ('verb', 'str'), 3: ('group', 'str'),
                                   4: ('version', 'str'), 5: ('resource', 'str'), 6: ('subresource', 'str'),
                                   7: ('name', 'str')}),
        2: ('nonResourceAttributes', {1: ('path', 'str'), 2: ('verb', 'str')})})},
    'SelfSubjectRulesReview': {1: ('metadata', PB_META), 2: ('spec', {1: ('namespace', 'str')})},
    'SelfSubjectReview': {1: ('metadata', PB_META)},
    'Lease': {1: ('metadata', PB_META),
              2: ('spec', {1: ('holderIdentity', 'str'), 2: ('leaseDurationSeconds', 'int'),
                           3: ('acquireTime', PB_MICROTIME), 4: ('renewTime', PB_MICROTIME),
                           5: ('leaseTransitions', 'int')})},
}


def _pb_decode(buf, schema):
    # decode one message with a {field: (json name, type)} schema; unknown fields are skipped
    out = {}
    for fn, v in _pb_fields(buf):
        if fn not in schema:
            continue
        name, typ = schema[fn]
        if isinstance(typ, dict):
            out[name] = _pb_decode(v, typ)
        elif typ == 'str':
            if v:  # Go: "" is the zero value, i.e. unset
                out[name] = v.decode('utf-8')
        elif typ == 'rstr':
            out.setdefault(name, []).append(v.decode('utf-8'))
        elif typ in ('map', 'mapb64'):
            kv = dict(_pb_fields(v))
            val = kv.get(2, b'')
            out.setdefault(name, {})[kv.get(1, b'').decode('utf-8')] = (
                val.decode('utf-8') if typ == 'map' else base64.b64encode(val).decode())
        elif typ == 'int':
            out[name] = v - (1 << 64) if v >= 1 << 63 else v
        elif typ == 'bool':
            out[name] = bool(v)
        elif typ == PB_MICROTIME:
            t = dict(_pb_fields(v))
            ts = datetime.datetime.fromtimestamp(t.get(1, 0), datetime.timezone.utc)
            out[name] = ts.strftime('%Y-%m-%dT%H:%M:%S') + '.%06dZ' % (t.get(2, 0) // 1000)
    return out


def decode_protobuf(res, body):
    """A k8s protobuf envelope ("k8s\\0" + runtime.Unknown) -> JSON object, for a few kinds."""
    if not body.startswith(b'k8s\x00'):
        raise bad_request('protobuf body without the k8s envelope')
    unknown = dict(_pb_fields(body[4:]))
    tm = dict(_pb_fields(unknown.get(1, b'')))
    kind = tm.get(2, b'').decode()
    if kind != res.kind or kind not in PB_SCHEMAS:
        raise ApiError(415, 'the API double decodes protobuf bodies only for %s (got %s); use '
                            '"kubectl create -f" with YAML or JSON instead'
                       % ('/'.join(sorted(PB_SCHEMAS)), kind or 'nothing'), 'UnsupportedMediaType')
    obj = {'apiVersion': tm.get(1, b'').decode() or res.api_version, 'kind': kind}
    obj.update(_pb_decode(unknown.get(2, b''), PB_SCHEMAS[kind]))
    return obj


# ---------------------------------------------------------------------------
# The object store
# ---------------------------------------------------------------------------

Event = collections.namedtuple('Event', 'rv type res ns obj prev')


class Cluster:
    """All objects, the resourceVersion counter and the event history, behind one lock."""

    def __init__(self, history=1000, namespace_grace=1.0):
        self.namespace_grace = namespace_grace
        self.cond = threading.Condition(threading.RLock())
        self.rv = 0
        self.objects = {}          # (plural, ns, name) -> object (never mutated once stored)
        self.events = collections.deque(maxlen=max(1, history))
        self.floor = 0             # events with rv <= floor may have been dropped
        self.builtin = set()
        self.stopping = False
        self.cond.acquire()
        self._store(BY_GROUP['']['namespaces'], self._ns_object('default'), None)
        svc = {'metadata': {'name': 'kubernetes', 'namespace': 'default',
                            'labels': {'component': 'apiserver', 'provider': 'kubernetes'}},
               'spec': {'clusterIP': '10.96.0.1', 'type': 'ClusterIP',
                        'ports': [{'name': 'https', 'port': 443, 'protocol': 'TCP',
                                   'targetPort': 6443}]}}
        self._store(BY_GROUP['']['services'], self._prepare_new(BY_GROUP['']['services'], svc), None)
        self.builtin = set(self.objects)
        self.cond.release()

    # -- internals -------------------------------------------------------
    def _ns_object(self, name):
        # a Namespace as an implicit namespace gets it
        res = BY_GROUP['']['namespaces']
        return self._prepare_new(res, {'metadata': {'name': name}})

    def _next_rv(self):
        # the one global counter, bumped on every write
        self.rv += 1
        return str(self.rv)

    def _store(self, res, obj, prev, etype=None):
        # commit a new object version: bump rv, record the event, wake watchers
        obj['metadata']['resourceVersion'] = self._next_rv()
        ns = obj['metadata'].get('namespace', '')
        key = (res.plural, ns, obj['metadata']['name'])
        self.objects[key] = obj
        self._event(etype or ('MODIFIED' if prev else 'ADDED'), res, ns, obj, prev)
        return obj

    def _event(self, etype, res, ns, obj, prev):
        # append to the bounded history; remember what fell off for 410s
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0].rv
        self.events.append(Event(int(obj['metadata']['resourceVersion']), etype, res.plural, ns, obj, prev))
        self.cond.notify_all()

    def _remove(self, res, ns, name):
        # delete one stored object, recording a DELETED event
        key = (res.plural, ns, name)
        old = self.objects.pop(key)
        gone = copy.deepcopy(old)
        gone['metadata']['resourceVersion'] = self._next_rv()
        self._event('DELETED', res, ns, gone, old)
        return gone

    def _ensure_namespace(self, ns):
        # namespaces are implicit: first write into one creates it
        if ns and ('namespaces', '', ns) not in self.objects:
            self._store(BY_GROUP['']['namespaces'], self._ns_object(ns), None)

    def _prepare_new(self, res, obj):
        # server-set fields of a new object
        obj = typed(res, obj)
        md = obj['metadata']
        md['uid'] = str(uuid.uuid4())
        md['creationTimestamp'] = now_rfc3339()
        for f in ('deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink', 'managedFields',
                  'resourceVersion', 'generation'):
            md.pop(f, None)
        if res.generation:
            md['generation'] = 1
        if res.plural == 'pods':
            # as the real Pod strategy: a new Pod's status is Pending whatever
            # the request said; a kubelet (or the tests) writes it via /status
            obj['status'] = {'phase': 'Pending', 'qosClass': pod_qos_class(obj.get('spec'))}
        elif res.plural == 'namespaces':
            md.setdefault('labels', {})['kubernetes.io/metadata.name'] = md['name']
            obj['spec'] = {'finalizers': ['kubernetes']}
            obj['status'] = {'phase': 'Active'}
        elif res.plural == 'services':
            spec = obj.setdefault('spec', {})
            if isinstance(spec, dict):
                spec.setdefault('type', 'ClusterIP')
                if 'clusterIP' not in spec:
                    n = random.randint(2, 65000)
                    spec['clusterIP'] = '10.96.%d.%d' % (n // 256, n % 256)
                if spec['clusterIP'] not in ('', None):
                    spec.setdefault('clusterIPs', [spec['clusterIP']])
                spec.setdefault('sessionAffinity', 'None')
                for p in spec.get('ports') or []:
                    if isinstance(p, dict):
                        p.setdefault('protocol', 'TCP')
                        p.setdefault('targetPort', p.get('port'))
            obj.setdefault('status', {'loadBalancer': {}})
        elif res.plural in NEW_STATUS:   # PrepareForCreate resets status to its zero value
            obj['status'] = copy.deepcopy(NEW_STATUS[res.plural])
        elif res.plural == 'secrets':
            obj.setdefault('type', 'Opaque')
        return obj

    def _check_body(self, res, body, ns, url_name=None):
        """Decode-level checks (400) and defaults shared by create and update."""
        if not isinstance(body, dict):
            raise bad_request('%s in version "v1" cannot be handled as a %s: json: cannot unmarshal '
                              '%s into Go value of type struct' % (res.kind, res.kind, type(body).__name__))
        kind, api = body.get('kind'), body.get('apiVersion')
        if kind not in (None, '') and kind != res.kind:
            raise bad_request('the API version in the data (%s) does not match the expected API version (%s)'
                              % (api, res.api_version) if api not in (None, '', res.api_version) else
                              '%s in version "v1" cannot be handled as a %s: no kind "%s" is registered'
                              % (res.kind, res.kind, kind))
        if api not in (None, '') and api != res.api_version:
            raise bad_request('the API version in the data (%s) does not match the expected API version (%s)'
                              % (api, res.api_version))
        md = body.get('metadata')
        if md is None:
            md = body['metadata'] = {}
        if not isinstance(md, dict):
            raise self._type_error(res, 'metadata', 'v1.ObjectMeta', md)
        for f in ('name', 'namespace', 'generateName', 'resourceVersion', 'uid'):
            if f in md and md[f] is None:
                del md[f]
            elif f in md and not isinstance(md[f], str):
                raise self._type_error(res, 'metadata.' + f, 'string', md[f])
        for f in ('labels', 'annotations'):
            v = md.get(f)
            if v is None:
                md.pop(f, None)
                continue
            if not isinstance(v, dict):
                raise self._type_error(res, 'metadata.' + f, 'map[string]string', v)
            for k, x in list(v.items()):
                if x is None:
                    v[k] = ''
                elif not isinstance(x, str):
                    raise self._type_error(res, 'metadata.' + f, 'string', x)
        if res.plural == 'leases':
            self._check_lease_types(res, body)
        elif res.plural == 'configmaps':
            self._check_string_maps(res, body, ('data', 'binaryData'))
        elif res.plural == 'secrets':
            self._check_secret(res, body)
        elif res.group == RBAC:
            self._check_rbac_types(res, body)
        if res.namespaced:
            if (md.get('namespace') or ns) != ns:
                raise bad_request('the namespace of the provided object does not match the namespace '
                                  'sent on the request')
            md['namespace'] = ns
        else:
            md.pop('namespace', None)
        if url_name is not None and md.get('name', '') != url_name:
            raise bad_request('the name of the object (%s) does not match the name on the URL (%s)'
                              % (md.get('name', ''), url_name))
        return body

    @staticmethod
    def _type_error(res, field, gotype, value):
        # the Go decoder's message for a JSON value of the wrong type
        jtype = {dict: 'object', list: 'array', str: 'string', bool: 'bool', int: 'number',
                 float: 'number'}.get(type(value), 'null')
        return bad_request('%s in version "v1" cannot be handled as a %s: json: cannot unmarshal %s '
                           'into Go struct field %s of type %s' % (res.kind, res.kind, jtype, field, gotype))

    def _check_string_maps(self, res, body, fields):
        # map[string]string fields (null = absent)
        for f in fields:
            v = body.get(f)
            if v is None:
                body.pop(f, None)
            elif not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
                raise self._type_error(res, f, 'map[string]string', v)

    def _check_secret(self, res, body):
        # data is map[string][]byte (base64 in JSON); stringData is merged into data on write
        self._check_string_maps(res, body, ('data', 'stringData'))
        if body.get('type') is not None and not isinstance(body['type'], str):
            raise self._type_error(res, 'type', 'v1.SecretType', body['type'])
        for v in (body.get('data') or {}).values():
            try:
                base64.b64decode(v.encode('ascii'), validate=True)
            except (ValueError, UnicodeEncodeError):
                bad = next((i for i, ch in enumerate(v) if ch not in string.ascii_letters + string.digits
                            + '+/='), len(v) - len(v) % 4)
                raise bad_request('Secret in version "v1" cannot be handled as a Secret: illegal base64 '
                                  'data at input byte %d' % bad)
        extra = body.pop('stringData', None)
        if extra:
            data = body.setdefault('data', {})
            for k, v in extra.items():
                data[k] = base64.b64encode(v.encode('utf-8')).decode('ascii')

    def _check_rbac_types(self, res, body):
        # rules []PolicyRule, subjects []Subject, roleRef RoleRef as the Go decoder sees them
        def strings(where, obj, fields, typ):
            for f in fields:
                v = obj.get(f)
                if v is None:
                    obj.pop(f, None)
                elif (not isinstance(v, str) if typ == 'string' else
                      not (isinstance(v, list) and all(isinstance(x, str) for x in v))):
                    raise self._type_error(res, '%s.%s' % (where, f), typ, v)

        for field, gotype in (('rules', 'PolicyRule'), ('subjects', 'Subject')):
            v = body.get(field)
            if v is None:
                body.pop(field, None)
                continue
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                raise self._type_error(res, field, '[]v1.' + gotype, v)
            for item in v:
                if field == 'rules':
                    strings('PolicyRule.rules', item, ('verbs', 'apiGroups', 'resources', 'resourceNames',
                                                       'nonResourceURLs'), '[]string')
                else:
                    strings('Subject.subjects', item, ('kind', 'apiGroup', 'name', 'namespace'), 'string')
        ref = body.get('roleRef')
        if ref is not None:
            if not isinstance(ref, dict):
                raise self._type_error(res, 'roleRef', 'v1.RoleRef', ref)
            strings('RoleRef.roleRef', ref, ('apiGroup', 'kind', 'name'), 'string')
        for sub in body.get('subjects') or []:  # SetDefaults_Subject
            if sub.get('kind') in ('User', 'Group') and not sub.get('apiGroup'):
                sub['apiGroup'] = RBAC

    def _check_lease_types(self, res, body):
        # LeaseSpec as the Go decoder sees it (MicroTime: exactly 6 fractional
        # digits, stored in UTC); unknown fields are dropped (fieldValidation
        # Warn, the default; Strict is refused earlier, see strict_lease_fields)
        for k in [k for k in body if k not in ('apiVersion', 'kind', 'metadata', 'spec')]:
            del body[k]
        spec = body.get('spec')
        if spec is None:
            body.pop('spec', None)
            return
        if not isinstance(spec, dict):
            raise self._type_error(res, 'spec', 'v1.LeaseSpec', spec)
        for k in [k for k in spec if k not in LEASE_SPEC_FIELDS]:
            del spec[k]
        for f in ('holderIdentity', 'strategy', 'preferredHolder'):
            if spec.get(f) is not None and not isinstance(spec[f], str):
                raise self._type_error(res, 'LeaseSpec.spec.' + f, 'string', spec[f])
        for f in ('leaseDurationSeconds', 'leaseTransitions'):
            v = spec.get(f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not -2**31 <= v < 2**31):
                raise self._type_error(res, 'LeaseSpec.spec.' + f, 'int32', v)
        for f in ('acquireTime', 'renewTime'):
            v = spec.get(f)
            if v is None:
                continue
            if not isinstance(v, str):
                raise self._type_error(res, 'LeaseSpec.spec.' + f, 'v1.MicroTime', v)
            if not MICROTIME.match(v):
                raise bad_request('Lease in version "v1" cannot be handled as a Lease: parsing time %s '
                                  'as "2006-01-02T15:04:05.000000Z07:00": cannot parse %s as %s'
                                  % (json.dumps(v), json.dumps(v[19:] if len(v) > 19 and v[:19].count(':') == 2 else v),
                                     json.dumps('.000000' if len(v) > 19 else '2006-01-02T15:04:05.000000Z07:00')))
            spec[f] = microtime_utc(v)

    def _validate(self, res, obj):
        """Field validation (422), a subset of the real strategies' Validate."""
        errs = []
        md = obj['metadata']
        name = md.get('name', '')
        if not name:
            errs.append(fe_required('metadata.name', 'name or generateName is required'))
        else:
            errs += [fe_invalid('metadata.name', name, e) for e in name_errors(res.names, name)]
        for k, v in (md.get('labels') or {}).items():
            for e in qualified_name_errors(k):
                errs.append(fe_invalid('metadata.labels', k, e))
            for e in label_value_errors(v):
                errs.append(fe_invalid('metadata.labels', v, e))
        size = 0
        for k, v in (md.get('annotations') or {}).items():
            for e in qualified_name_errors(k.lower()):
                errs.append(fe_invalid('metadata.annotations', k, e))
            size += len(k) + len(v)
        if size > 262144:
            errs.append(('FieldValueTooLong', 'metadata.annotations',
                         'Too long: must have at most 262144 bytes'))
        if res.plural == 'leases':
            spec = obj.get('spec') or {}
            if spec.get('leaseDurationSeconds') is not None and spec['leaseDurationSeconds'] <= 0:
                errs.append(fe_invalid('spec.leaseDurationSeconds', spec['leaseDurationSeconds'],
                                       'must be greater than 0'))
            if spec.get('leaseTransitions') is not None and spec['leaseTransitions'] < 0:
                errs.append(fe_invalid('spec.leaseTransitions', spec['leaseTransitions'],
                                       'must be greater than or equal to 0'))
        elif res.plural == 'configmaps':
            for f in ('data', 'binaryData'):
                for k in obj.get(f) or {}:
                    if len(k) > 253 or not CONFIGMAP_KEY.match(k):
                        errs.append(fe_invalid(f, k, "a valid config key must consist of alphanumeric "
                                               "characters, '-', '_' or '.' (e.g. 'key.name',  or "
                                               "'KEY_NAME',  or 'key-name', regex used for validation "
                                               "is '[-._a-zA-Z0-9]+')"))
        elif res.group == RBAC:
            errs += rbac_errors(res, obj)
        if errs:
            raise invalid(res, name, errs)

    def _finish_update(self, res, old, new, status_only=False):
        """Carry server fields over, CAS is done by the caller; commit unless a no-op."""
        new = typed(res, new)
        md, omd = new['metadata'], old['metadata']
        for f in ('uid', 'creationTimestamp', 'generation', 'deletionTimestamp'):
            if f in omd:
                md[f] = omd[f]
            else:
                md.pop(f, None)
        md.pop('selfLink', None)
        md.pop('managedFields', None)
        if res.status:
            if status_only:
                keep = copy.deepcopy(old)
                keep['status'] = new.get('status', {})
                new = keep
                md = new['metadata']
            else:
                if 'status' in old:
                    new['status'] = copy.deepcopy(old['status'])
                else:
                    new.pop('status', None)
        if res.plural == 'namespaces':
            new['spec'], new['status'] = old.get('spec'), old.get('status')
        if res.generation and not strict_equal(old.get('spec'), new.get('spec')):
            md['generation'] = omd.get('generation', 0) + 1
        md['resourceVersion'] = omd['resourceVersion']
        if res.plural.endswith('rolebindings') and new.get('roleRef') != old.get('roleRef'):
            raise invalid(res, md.get('name', ''), [fe_invalid('roleRef', GoRoleRef(new.get('roleRef')),
                                                               'cannot change roleRef')])
        self._validate(res, new)
        if strict_equal(new, old):
            return old
        return self._store(res, new, old)

    def _key(self, res, ns, name):
        # store key; cluster-scoped objects have namespace ""
        return (res.plural, ns if res.namespaced else '', name)

    # -- verbs -----------------------------------------------------------
    def get(self, res, ns, name):
        # GET one object
        with self.cond:
            obj = self.objects.get(self._key(res, ns, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(self, res, ns, labels, fields):
        # a consistent snapshot, sorted like etcd keys (namespace/name)
        with self.cond:
            rv = str(self.rv)
            items = [o for (p, ons, _), o in self.objects.items()
                     if p == res.plural and (ns is None or not res.namespaced or ons == ns)]
        items = [o for o in items if labels_match(labels, o['metadata'].get('labels'))
                 and fields_match(fields, o)]
        items.sort(key=lambda o: (o['metadata'].get('namespace', ''), o['metadata']['name']))
        view = []
        for o in items:
            o = dict(o)
            o.pop('kind', None)
            o.pop('apiVersion', None)
            view.append(o)
        return {'kind': res.kind + 'List', 'apiVersion': res.api_version,
                'metadata': {'resourceVersion': rv}, 'items': view}

    def create(self, res, ns, body, url_name=None):
        # POST: 409 AlreadyExists if the name is taken
        body = self._check_body(res, body, ns)
        md = body['metadata']
        if not md.get('name') and md.get('generateName'):
            md['name'] = md['generateName'] + ''.join(random.choice(string.ascii_lowercase + string.digits)
                                                      for _ in range(5))
        if md.get('resourceVersion'):
            raise bad_request('resourceVersion should not be set on objects to be created')
        obj = self._prepare_new(res, body)
        self._validate(res, obj)
        with self.cond:
            key = self._key(res, ns, md['name'])
            if key in self.objects:
                raise ApiError(409, '%s "%s" already exists' % (res.qualified, md['name']),
                               'AlreadyExists', res.details(md['name']))
            if res.namespaced:
                nso = self.objects.get(('namespaces', '', ns))
                if nso is not None and nso['metadata'].get('deletionTimestamp'):
                    raise ApiError(403, '%s "%s" is forbidden: unable to create new content in namespace %s '
                                        'because it is being terminated' % (res.qualified, md['name'], ns),
                                   'Forbidden', res.details(md['name'], causes=[
                                       {'reason': 'NamespaceTerminating', 'field': 'metadata.namespace',
                                        'message': 'namespace %s is being terminated' % ns}]))
                self._ensure_namespace(ns)
            return self._store(res, obj, None)

    def update(self, res, ns, name, body, sub=None):
        # PUT: compare-and-swap on metadata.resourceVersion (and uid)
        body = self._check_body(res, body, ns, url_name=name)
        with self.cond:
            old = self.objects.get(self._key(res, ns, name))
            uid = body['metadata'].get('uid')
            if old is None:
                if not res.create_on_update or sub:
                    raise not_found(res, name)
                if uid:
                    raise conflict(res, name, 'Precondition failed: UID in precondition: %s, UID in '
                                              'object meta: ' % uid)
                body['metadata'].pop('resourceVersion', None)
                return 201, self.create(res, ns, body)
            if uid and uid != old['metadata']['uid']:
                raise conflict(res, name, 'Precondition failed: UID in precondition: %s, UID in object '
                                          'meta: %s' % (uid, old['metadata']['uid']))
            rv = body['metadata'].get('resourceVersion')
            if not rv and not res.unconditional:
                raise ApiError(422, '%s "%s" is invalid: metadata.resourceVersion: Invalid value: 0: '
                                    'must be specified for an update' % (res.qualified, name), 'Invalid',
                               res.details(name, causes=[{'reason': 'FieldValueInvalid',
                                                          'message': 'Invalid value: 0: must be '
                                                                     'specified for an update',
                                                          'field': 'metadata.resourceVersion'}]))
            if rv and rv != old['metadata']['resourceVersion']:
                raise conflict(res, name)
            return 200, self._finish_update(res, old, body, status_only=(sub == 'status'))

    def patch(self, res, ns, name, ctype, raw, sub=None):
        # PATCH: apply to the stored object, then the same CAS as PUT
        ctype = (ctype or '').split(';')[0].strip().lower()
        if ctype == 'application/apply-patch+yaml':
            raise ApiError(415, 'the API double does not implement server-side apply (%s): use '
                                'client-side "kubectl apply" (without --server-side), or a merge, '
                                'strategic merge or JSON patch' % ctype, 'UnsupportedMediaType')
        if ctype not in ('application/merge-patch+json', 'application/strategic-merge-patch+json',
                         'application/json-patch+json'):
            raise ApiError(415, '415: Unsupported Media Type', 'UnsupportedMediaType')
        try:
            doc = json.loads(raw.decode('utf-8') if raw else 'null')
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request('error decoding patch: %s' % e)
        if ctype == 'application/json-patch+json':
            if not isinstance(doc, list):
                raise bad_request('json: cannot unmarshal %s into Go value of type jsonpatch.Patch'
                                  % type(doc).__name__)
        elif not isinstance(doc, dict):
            raise bad_request('json: cannot unmarshal %s into Go value of type map[string]interface {}'
                              % type(doc).__name__)
        with self.cond:
            old = self.objects.get(self._key(res, ns, name))
            if old is None:
                raise not_found(res, name)
            base = copy.deepcopy(old)
            try:
                if ctype == 'application/json-patch+json':
                    new = json_patch(base, doc)
                elif ctype == 'application/merge-patch+json':
                    new = merge_patch(base, doc)
                else:
                    new = strategic_merge_patch(base, doc)
                    if new is _DELETE:
                        new = {}
                    spec = doc.get('spec')
                    sel = spec.get('selector') if isinstance(spec, dict) else None
                    if res.plural == 'poddisruptionbudgets' and isinstance(sel, dict):
                        new['spec']['selector'] = _smp_strip(sel)   # patchStrategy=replace
            except PatchError as e:
                raise ApiError(422, str(e), 'Invalid', res.details(name, kind=res.kind))
            if not isinstance(new, dict):
                raise bad_request('%s in version "v1" cannot be handled as a %s: patched object is not '
                                  'an object' % (res.kind, res.kind))
            new = self._check_body(res, new, ns, url_name=name)
            uid = new['metadata'].get('uid')
            if uid and uid != old['metadata']['uid']:
                raise conflict(res, name, 'Precondition failed: UID in precondition: %s, UID in object '
                                          'meta: %s' % (uid, old['metadata']['uid']))
            rv = new['metadata'].get('resourceVersion')
            if rv and rv != old['metadata']['resourceVersion']:
                raise conflict(res, name)
            return self._finish_update(res, old, new, status_only=(sub == 'status'))

    def delete(self, res, ns, name, opts):
        # DELETE with optional preconditions; pods answer with the object, others with a Status
        pre = (opts or {}).get('preconditions') or {} if isinstance(opts, dict) else {}
        with self.cond:
            old = self.objects.get(self._key(res, ns, name))
            if old is None:
                raise not_found(res, name)
            if pre.get('uid') and pre['uid'] != old['metadata']['uid']:
                raise conflict(res, name, 'Precondition failed: UID in precondition: %s, UID in object '
                                          'meta: %s' % (pre['uid'], old['metadata']['uid']))
            if pre.get('resourceVersion') and pre['resourceVersion'] != old['metadata']['resourceVersion']:
                raise conflict(res, name, 'Precondition failed: ResourceVersion in precondition: %s, '
                                          'ResourceVersion in object meta: %s'
                               % (pre['resourceVersion'], old['metadata']['resourceVersion']))
            if res.plural == 'namespaces':
                return self._terminate_namespace(old)
            gone = self._remove(res, ns if res.namespaced else '', name)
        if res.delete_returns_object:
            out = copy.deepcopy(gone)
            out['metadata']['deletionTimestamp'] = now_rfc3339()
            out['metadata']['deletionGracePeriodSeconds'] = 0
            return out
        return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
                'details': res.details(name, uid=gone['metadata']['uid'])}

    def _terminate_namespace(self, old):
        # like the namespace controller: Terminating at once, content and namespace gone after
        # --namespace-termination-seconds (0: at once); deleting it again is a 409
        res, name = BY_PLURAL['namespaces'], old['metadata']['name']
        if old['metadata'].get('deletionTimestamp'):
            raise conflict(res, name, 'The system is ensuring all content is removed from this namespace.  '
                                      'Upon completion, this namespace will automatically be purged by the '
                                      'system.')
        if self.namespace_grace <= 0:
            self._purge_namespace(name, old['metadata']['uid'])
            out = copy.deepcopy(old)
        else:
            out = copy.deepcopy(old)
            out['metadata']['deletionTimestamp'] = now_rfc3339()
            out['status'] = {'phase': 'Terminating'}
            out = self._store(res, out, old)
            t = threading.Timer(self.namespace_grace, self._purge_namespace, (name, old['metadata']['uid']))
            t.daemon = True
            t.start()
        return out

    def _purge_namespace(self, name, uid):
        # delete every object of a namespace, then the namespace (if it is still that one)
        with self.cond:
            nso = self.objects.get(('namespaces', '', name))
            if nso is None or nso['metadata']['uid'] != uid or self.stopping:
                return
            for key in [k for k in self.objects if k[1] == name]:
                self._remove(BY_PLURAL[key[0]], name, key[2])
            self._remove(BY_PLURAL['namespaces'], '', name)

    def deletecollection(self, res, ns, labels, fields):
        # DELETE on a collection with selectors
        with self.cond:
            victims = [o for (p, ons, _), o in list(self.objects.items())
                       if p == res.plural and (ns is None or not res.namespaced or ons == ns)
                       and labels_match(labels, o['metadata'].get('labels')) and fields_match(fields, o)]
            gone = [self._remove(res, o['metadata'].get('namespace', ''), o['metadata']['name'])
                    for o in victims]
            rv = str(self.rv)
        return {'kind': res.kind + 'List', 'apiVersion': res.api_version,
                'metadata': {'resourceVersion': rv}, 'items': gone}

    def reset(self):
        # admin: delete everything but the start-up objects
        with self.cond:
            n = 0
            for key in [k for k in self.objects if k not in self.builtin]:
                self._remove(BY_PLURAL[key[0]], key[1], key[2])
                n += 1
            return n


# ---------------------------------------------------------------------------
# Tables (server-side printing for kubectl)
# ---------------------------------------------------------------------------

def _col(name, typ='string', fmt='', prio=0, desc=''):
    # one Table column definition
    return {'name': name, 'type': typ, 'format': fmt, 'description': desc or name, 'priority': prio}


def table_columns(res):
    # the columns kube-apiserver prints for each type
    name = _col('Name', fmt='name', desc='Name must be unique within a namespace.')
    age = _col('Age', desc='CreationTimestamp is a timestamp representing the server time when '
                           'this object was created.')
    if res.plural == 'pods':
        return [name, _col('Ready', desc='The aggregate readiness state of this pod for accepting traffic.'),
                _col('Status', desc='The aggregate status of the containers in this pod.'),
                _col('Restarts', desc='The number of times the containers in this pod have been restarted.'),
                age, _col('IP', prio=1, desc='IP address allocated to the pod.'),
                _col('Node', prio=1, desc='Name of the Node this pod is assigned to.')]
    if res.plural == 'leases':
        return [name, _col('Holder', desc='The holder of the lease.'), age]
    if res.plural == 'configmaps':
        return [name, _col('Data', 'integer'), age]
    if res.plural == 'endpoints':
        return [name, _col('Endpoints'), age]
    if res.plural == 'services':
        return [name, _col('Type'), _col('Cluster-IP'), _col('External-IP'), _col('Port(s)'), age]
    if res.plural == 'namespaces':
        return [name, _col('Status'), age]
    if res.plural == 'serviceaccounts':
        return [name, _col('Secrets', 'integer'), age]
    if res.plural == 'secrets':
        return [name, _col('Type'), _col('Data', 'integer'), age]
    if res.plural == 'statefulsets':
        return [name, _col('Ready'), age, _col('Containers', prio=1), _col('Images', prio=1)]
    if res.plural == 'poddisruptionbudgets':
        return [name, _col('Min Available'), _col('Max Unavailable'), _col('Allowed Disruptions', 'integer'),
                age]
    if res.plural in ('roles', 'clusterroles'):
        return [name, _col('Created At', fmt='date')]
    if res.plural in ('rolebindings', 'clusterrolebindings'):
        return [name, _col('Role'), age, _col('Users', prio=1), _col('Groups', prio=1),
                _col('ServiceAccounts', prio=1)]
    return [name, age]


def table_cells(res, o):
    # one row's cells, in table_columns order
    md, spec, st = o.get('metadata', {}), o.get('spec') or {}, o.get('status') or {}
    name, age = md.get('name', ''), human_age(md.get('creationTimestamp'))
    if res.plural == 'pods':
        cs = st.get('containerStatuses') or []
        total = len(spec.get('containers') or []) or len(cs)
        ready = sum(1 for c in cs if isinstance(c, dict) and c.get('ready'))
        restarts = sum(int(c.get('restartCount') or 0) for c in cs if isinstance(c, dict))
        phase = 'Terminating' if md.get('deletionTimestamp') else (st.get('reason') or st.get('phase') or '')
        return [name, '%d/%d' % (ready, total), phase, restarts, age, st.get('podIP') or '<none>',
                spec.get('nodeName') or '<none>']
    if res.plural == 'leases':
        return [name, spec.get('holderIdentity') or '', age]
    if res.plural == 'configmaps':
        return [name, len(o.get('data') or {}) + len(o.get('binaryData') or {}), age]
    if res.plural == 'endpoints':
        eps = []
        for s in o.get('subsets') or []:
            for a in s.get('addresses') or []:
                for p in s.get('ports') or [{}]:
                    eps.append('%s:%s' % (a.get('ip'), p.get('port')) if p.get('port') else str(a.get('ip')))
        return [name, ','.join(eps) or '<none>', age]
    if res.plural == 'services':
        ports = ','.join('%s/%s' % (p.get('port'), p.get('protocol', 'TCP')) for p in spec.get('ports') or [])
        return [name, spec.get('type', 'ClusterIP'), spec.get('clusterIP') or '<none>', '<none>',
                ports or '<none>', age]
    if res.plural == 'namespaces':
        return [name, st.get('phase', 'Active'), age]
    if res.plural == 'serviceaccounts':
        return [name, len(o.get('secrets') or []), age]
    if res.plural == 'secrets':
        return [name, o.get('type', ''), len(o.get('data') or {}), age]
    if res.plural == 'statefulsets':
        tmpl = ((spec.get('template') or {}).get('spec') or {}).get('containers') or []
        return [name, '%d/%d' % (st.get('readyReplicas') or 0, spec.get('replicas', 1)), age,
                ','.join(str(c.get('name')) for c in tmpl), ','.join(str(c.get('image')) for c in tmpl)]
    if res.plural == 'poddisruptionbudgets':
        return [name, str(spec.get('minAvailable', 'N/A')), str(spec.get('maxUnavailable', 'N/A')),
                st.get('disruptionsAllowed', 0), age]
    if res.plural in ('roles', 'clusterroles'):
        return [name, md.get('creationTimestamp', '')]
    if res.plural in ('rolebindings', 'clusterrolebindings'):
        ref, subs = o.get('roleRef') or {}, o.get('subjects') or []

        def who(kind):
            # the subjects of one kind, as kubectl's wide columns print them
            return ', '.join((s.get('namespace', '') + '/' + s.get('name', '')) if kind == 'ServiceAccount'
                             else s.get('name', '') for s in subs if s.get('kind') == kind)
        return [name, '%s/%s' % (ref.get('kind', ''), ref.get('name', '')), age, who('User'), who('Group'),
                who('ServiceAccount')]
    return [name, age]


def table_row(res, o, include):
    # a row with the object as includeObject asks (PartialObjectMetadata by default)
    row = {'cells': table_cells(res, o)}
    if include == 'Object':
        full = dict(o)
        full.setdefault('kind', res.kind)
        full.setdefault('apiVersion', res.api_version)
        row['object'] = full
    elif include != 'None':
        row['object'] = {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
                         'metadata': o.get('metadata', {})}
    return row


def to_table(res, obj, include, rv):
    # a meta.k8s.io/v1 Table for a list or a single object
    items = obj['items'] if obj.get('kind', '').endswith('List') and 'items' in obj else [obj]
    return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
            'columnDefinitions': table_columns(res),
            'rows': [table_row(res, o, include) for o in items]}


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------

def resource_list(group):
    # APIResourceList for /api/v1 or /apis/<group>/v1
    out = []
    for r in BY_GROUP[group].values():
        verbs = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch']
        if r.plural != 'namespaces':
            verbs.insert(2, 'deletecollection')
        entry = {'name': r.plural, 'singularName': r.singular, 'namespaced': r.namespaced,
                 'kind': r.kind, 'verbs': ['create'] if r.review else verbs}
        if r.short:
            entry['shortNames'] = r.short
        if r.categories:
            entry['categories'] = r.categories
        out.append(entry)
        if r.status:
            out.append({'name': r.plural + '/status', 'singularName': '', 'namespaced': r.namespaced,
                        'kind': r.kind, 'verbs': ['get', 'patch', 'update']})
    return {'kind': 'APIResourceList', 'apiVersion': 'v1',
            'groupVersion': group + '/v1' if group else 'v1', 'resources': out}


def openapi_v3(rest):
    """Just enough OpenAPI v3 for kubectl to see that PATCH takes fieldValidation.

    With it kubectl --validate=strict (the default) leaves validation to the
    server instead of downloading the full schema (which we do not have)."""
    if not rest:
        return {'paths': {('apis/%s/v1' % g if g else 'api/v1'):
                          {'serverRelativeURL': '/openapi/v3/%s?hash=0' % ('apis/%s/v1' % g if g else 'api/v1')}
                          for g in BY_GROUP}}
    if rest == ['api', 'v1']:
        group = ''
    elif len(rest) == 3 and rest[0] == 'apis' and rest[1] in GROUPS and rest[2] == 'v1':
        group = rest[1]
    else:
        raise no_route()
    paths = {}
    for r in BY_GROUP[group].values():
        if r.review:
            continue
        prefix = '/apis/%s/v1' % group if group else '/api/v1'
        path = prefix + ('/namespaces/{namespace}/' if r.namespaced else '/') + r.plural + '/{name}'
        params = [{'name': n, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                  for n in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
        paths[path] = {'patch': {'operationId': 'patch' + r.kind, 'parameters': params,
                                 'responses': {'200': {'description': 'OK'}},
                                 'x-kubernetes-action': 'patch',
                                 'x-kubernetes-group-version-kind': {'group': group, 'version': 'v1',
                                                                     'kind': r.kind}}}
    return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': SERVER_VERSION['gitVersion']},
            'paths': paths, 'components': {'schemas': {}}}


def api_group(group):
    # one APIGroup entry (only v1 served)
    gv = {'groupVersion': group + '/v1', 'version': 'v1'}
    return {'name': group, 'versions': [gv], 'preferredVersion': gv}


# ---------------------------------------------------------------------------
# RBAC: validation of the rbac.authorization.k8s.io objects and the authorizer
# ---------------------------------------------------------------------------

SA_PREFIX = 'system:serviceaccount:'


class GoRoleRef:
    """A RoleRef printed the way Go's %#v prints it inside field errors."""

    def __init__(self, ref):
        self.ref = ref if isinstance(ref, dict) else {}

    def __str__(self):
        return 'rbac.RoleRef{APIGroup:%s, Kind:%s, Name:%s}' % tuple(
            json.dumps(self.ref.get(k, '')) for k in ('apiGroup', 'kind', 'name'))


def rbac_errors(res, obj):
    """ValidateRole/ClusterRole/RoleBinding/ClusterRoleBinding (a subset), as field errors."""
    errs = []
    if res.plural in ('roles', 'clusterroles'):
        for i, rule in enumerate(obj.get('rules') or []):
            at = 'rules[%d]' % i
            if not rule.get('verbs'):
                errs.append(fe_required(at + '.verbs', 'verbs must contain at least one value'))
            if rule.get('nonResourceURLs'):
                if res.namespaced:
                    errs.append(fe_invalid(at + '.nonResourceURLs', rule['nonResourceURLs'],
                                           'namespaced rules cannot apply to non-resource URLs'))
                if rule.get('apiGroups') or rule.get('resources') or rule.get('resourceNames'):
                    errs.append(fe_invalid(at + '.nonResourceURLs', rule['nonResourceURLs'], 'rules cannot '
                                           'apply to both regular resources and non-resource URLs'))
                continue
            for f, what in (('apiGroups', 'api group'), ('resources', 'resource')):
                if not rule.get(f):
                    errs.append(fe_required('%s.%s' % (at, f),
                                            'resource rules must supply at least one ' + what))
        return errs
    ref = obj.get('roleRef') or {}
    if ref.get('apiGroup', '') != RBAC:
        errs.append(fe_unsupported('roleRef.apiGroup', ref.get('apiGroup', ''), [RBAC]))
    kinds = ['Role', 'ClusterRole'] if res.namespaced else ['ClusterRole']
    if ref.get('kind', '') not in kinds:
        errs.append(fe_unsupported('roleRef.kind', ref.get('kind', ''), kinds))
    if not ref.get('name'):
        errs.append(fe_required('roleRef.name'))
    else:
        errs += [fe_invalid('roleRef.name', ref['name'], e) for e in name_errors('path', ref['name'])]
    for i, sub in enumerate(obj.get('subjects') or []):
        at, kind = 'subjects[%d]' % i, sub.get('kind', '')
        if not sub.get('name'):
            errs.append(fe_required(at + '.name'))
        if kind == 'ServiceAccount':
            if sub.get('apiGroup'):
                errs.append(fe_unsupported(at + '.apiGroup', sub['apiGroup'], ['']))
            if not res.namespaced and not sub.get('namespace'):
                errs.append(fe_required(at + '.namespace'))
        elif kind in ('User', 'Group'):
            if sub.get('apiGroup') != RBAC:
                errs.append(fe_unsupported(at + '.apiGroup', sub.get('apiGroup', ''), [RBAC]))
        else:
            errs.append(fe_unsupported(at + '.kind', kind, ['ServiceAccount', 'User', 'Group']))
    return errs


class Identity:
    """Who a request acts as: the name and groups RBAC sees, and whether RBAC applies at all."""

    def __init__(self, name, groups=None, restricted=False):
        self.name, self.restricted = name, restricted
        self.groups = list(groups) if groups is not None else default_groups(name)

    def info(self):
        # for /_double/whoami, SelfSubjectReview
        return {'username': self.name, 'groups': self.groups}


def default_groups(name, extra=()):
    # the groups kube-apiserver's authenticators give a user
    if name == 'system:anonymous':
        return ['system:unauthenticated']
    groups = list(extra)
    if name.startswith(SA_PREFIX) and not extra:
        groups += ['system:serviceaccounts', 'system:serviceaccounts:' + name[len(SA_PREFIX):].split(':')[0]]
    if 'system:authenticated' not in groups:
        groups.append('system:authenticated')
    return groups


Attrs = collections.namedtuple('Attrs', 'verb group resource sub name ns')


def request_attrs(rt, query):
    """authorizer.Attributes of a resource request, as the RequestInfoFactory fills them."""
    res = rt.res
    ns = (rt.ns or '') if res.namespaced else ''
    name = rt.name or ''
    if res.plural == 'namespaces' and name:
        ns = name                    # a namespace is authorized in itself
    if rt.verb in ('list', 'watch') and not name:
        for term in (query.get('fieldSelector') or '').split(','):
            m = re.match(r'^\s*metadata\.name\s*(==|=)\s*(.*?)\s*$', term)
            if m and m.group(2) and not name_errors('path', m.group(2)):
                name = m.group(2)
    return Attrs(rt.verb, res.group, res.plural, rt.sub or '', name, ns)


def forbidden(user, a, reason=''):
    """The 403 kube-apiserver answers when no authorizer allows a resource request."""
    resource = a.resource + ('/' + a.sub if a.sub else '')
    msg = 'User "%s" cannot %s resource "%s" in API group "%s" ' % (user, a.verb, resource, a.group)
    msg += 'in the namespace "%s"' % a.ns if a.ns else 'at the cluster scope'
    if reason:
        msg += ': ' + reason
    qualified = a.resource + '.' + a.group if a.group else a.resource
    head = '%s "%s" is forbidden' % (qualified, a.name) if a.name else '%s is forbidden' % qualified
    details = {'name': a.name} if a.name else {}
    if a.group:
        details['group'] = a.group
    details['kind'] = a.resource
    return ApiError(403, '%s: %s' % (head, msg), 'Forbidden', details)


def rule_allows(rule, a):
    # rbac/v1 RuleAllows for resource requests: verb, API group, resource[/sub], resourceNames
    verbs, groups = rule.get('verbs') or [], rule.get('apiGroups') or []
    if '*' not in verbs and a.verb not in verbs:
        return False
    if '*' not in groups and a.group not in groups:
        return False
    combined = a.resource + ('/' + a.sub if a.sub else '')
    resources = rule.get('resources') or []
    if not any(r == '*' or r == combined or (a.sub and r == '*/' + a.sub) for r in resources):
        return False
    names = rule.get('resourceNames') or []
    return not names or a.name in names


def describe_subject(sub, ns):
    # how RBAC names a binding's subject in its "allowed by" reasons
    if sub.get('kind') == 'ServiceAccount':
        return 'ServiceAccount "%s/%s"' % (sub.get('name', ''), sub.get('namespace') or ns)
    return '%s "%s"' % (sub.get('kind', ''), sub.get('name', ''))


def subject_matches(ident, sub, ns):
    # appliesToUser: User by name, Group by membership, ServiceAccount by its user name
    kind, name = sub.get('kind'), sub.get('name', '')
    if kind == 'User':
        return ident.name == name
    if kind == 'Group':
        return name in ident.groups
    if kind == 'ServiceAccount':
        sans = sub.get('namespace') or ns
        return bool(sans) and ident.name == '%s%s:%s' % (SA_PREFIX, sans, name)
    return False


def visit_rules(cluster, ident, ns):
    """The roles that apply to ident in namespace ns (\"\" = cluster scope only), like VisitRulesFor.

    Yields (source, role, error): ClusterRoleBindings apply everywhere,
    RoleBindings only in their own namespace, with a Role of that namespace
    or a ClusterRole; a binding whose role does not exist yields an error."""
    with cluster.cond:
        objs = cluster.objects
        bindings = [('ClusterRoleBinding', o) for (p, _, _), o in objs.items() if p == 'clusterrolebindings']
        if ns:
            bindings += [('RoleBinding', o) for (p, ons, _), o in objs.items()
                         if p == 'rolebindings' and ons == ns]
        found = []
        for kind, b in sorted(bindings, key=lambda kb: (kb[0] == 'RoleBinding', kb[1]['metadata']['name'])):
            bns = b['metadata'].get('namespace', '') if kind == 'RoleBinding' else ''
            sub = next((x for x in b.get('subjects') or [] if subject_matches(ident, x, bns)), None)
            if sub is None:
                continue
            ref = b.get('roleRef') or {}
            role = objs.get(('roles', bns, ref.get('name', '')) if ref.get('kind') == 'Role'
                            else ('clusterroles', '', ref.get('name', '')))
            source = '%s "%s" of %s "%s" to %s' % (
                kind, b['metadata']['name'] + ('/' + bns if bns else ''), ref.get('kind'), ref.get('name'),
                describe_subject(sub, bns))
            err = None if role is not None else '%s.%s "%s" not found' % (ref.get('kind', '').lower(), RBAC,
                                                                          ref.get('name', ''))
            found.append((source, role, err))
    return found


def authorize(cluster, ident, a):
    """RBAC as kube-apiserver evaluates a resource request: (allowed, reason)."""
    errors = []
    for source, role, err in visit_rules(cluster, ident, a.ns):
        if err:
            errors.append(err)
        elif any(rule_allows(r, a) for r in role.get('rules') or []):
            return True, 'RBAC: allowed by ' + source
    if not errors:
        return False, ''
    return False, 'RBAC: ' + (errors[0] if len(errors) == 1 else '[' + ', '.join(errors) + ']')


def rules_review(cluster, ident, ns):
    """SelfSubjectRulesReview status: every rule that applies to ident in ns."""
    if not ident.restricted:
        return {'resourceRules': [{'verbs': ['*'], 'apiGroups': ['*'], 'resources': ['*']}],
                'nonResourceRules': [{'verbs': ['*'], 'nonResourceURLs': ['*']}], 'incomplete': False}
    out = {'resourceRules': [], 'nonResourceRules': [], 'incomplete': False}
    errors = []
    for _, role, err in visit_rules(cluster, ident, ns):
        if err:
            errors.append(err)
            continue
        for r in role.get('rules') or []:
            if r.get('nonResourceURLs'):
                out['nonResourceRules'].append({k: r[k] for k in ('verbs', 'nonResourceURLs') if k in r})
            else:
                keys = ('verbs', 'apiGroups', 'resources', 'resourceNames')
                out['resourceRules'].append({k: r[k] for k in keys if k in r})
    if errors:
        out['incomplete'] = True
        out['evaluationError'] = '[' + ', '.join(errors) + ']'
    return out


# ---------------------------------------------------------------------------
# Authentication, faults, statistics
# ---------------------------------------------------------------------------

class Auth:
    """Bearer tokens from the command line, token files (re-read on change) and the admin API."""

    def __init__(self, tokens, files):
        self.lock = threading.Lock()
        self.static = dict(tokens)
        self.dynamic = {}
        self.revoked = set()
        self.files = {f: (None, {}) for f in files}
        self.enabled = bool(tokens or files)

    def _file_tokens(self):
        # re-read token files whose mtime changed (token rotation)
        out = {}
        for f, (mtime, toks) in list(self.files.items()):
            try:
                st = os.stat(f).st_mtime_ns
            except OSError:
                st = None
            if st != mtime:
                toks = {}
                try:
                    with open(f) as fh:
                        for line in fh:
                            parts = line.split()
                            if len(parts) >= 2 and not parts[0].startswith('#'):
                                toks[parts[0]] = parts[1]
                except OSError:
                    pass
                self.files[f] = (st, toks)
            out.update(toks)
        return out

    def user_for(self, token):
        # the user of a bearer token, None if unknown or revoked
        with self.lock:
            if token in self.revoked:
                return None
            return self.dynamic.get(token) or self.static.get(token) or self._file_tokens().get(token)

    def add(self, token, user):
        with self.lock:
            self.dynamic[token] = user
            self.revoked.discard(token)
            self.enabled = True

    def revoke(self, token):
        # revoked tokens stay revoked even if a token file lists them
        with self.lock:
            known = token in self.dynamic or token in self.static or token in self._file_tokens()
            self.dynamic.pop(token, None)
            self.revoked.add(token)
            return known

    def users(self):
        # the known users (not the tokens)
        with self.lock:
            return sorted(set(self.static.values()) | set(self.dynamic.values())
                          | set(self._file_tokens().values()))


class Faults:
    """Injected faults per user; a Condition wakes hung requests when faults change."""

    MODES = ('error', 'hang', 'drop', 'garbage', 'huge', 'truncate', 'slow')

    def __init__(self):
        self.cond = threading.Condition()
        self.items = []
        self.next_id = 1

    def add(self, spec):
        if not isinstance(spec, dict):
            raise bad_request('fault must be a JSON object')
        mode = spec.get('mode')
        if mode not in self.MODES:
            raise bad_request('mode must be one of %s' % ', '.join(self.MODES))
        f = {'id': None, 'user': str(spec.get('user', '*')), 'mode': mode,
             'status': int(spec.get('status', 503)), 'verbs': spec.get('verbs'),
             'resources': spec.get('resources'), 'count': spec.get('count'),
             'retry_after': spec.get('retry_after'), 'bytes': int(spec.get('bytes', 64 << 20)),
             'delay': float(spec.get('delay', 2.0))}
        if f['count'] is not None:
            f['count'] = int(f['count'])
        with self.cond:
            f['id'] = self.next_id
            self.next_id += 1
            self.items.append(f)
            self.cond.notify_all()
        return f

    def clear(self, user=None):
        # remove all faults or one user's; wakes hung requests
        with self.cond:
            before = len(self.items)
            self.items = [f for f in self.items if user is not None and f['user'] != user]
            self.cond.notify_all()
            return before - len(self.items)

    @staticmethod
    def _matches(f, user, verb, resource):
        # user, verb and resource filters of one fault
        return ((f['user'] == '*' or f['user'] == user)
                and (not f['verbs'] or verb in f['verbs'])
                and (not f['resources'] or resource in f['resources']))

    def match(self, user, verb, resource, consume=True):
        # first matching fault; counted faults are used up by matching requests
        with self.cond:
            for f in self.items:
                if self._matches(f, user, verb, resource):
                    if consume and f['count'] is not None:
                        f['count'] -= 1
                        if f['count'] <= 0:
                            self.items.remove(f)
                            self.cond.notify_all()
                    return dict(f)
        return None

    def active(self, fid):
        # is fault fid still in force (hung requests poll this)
        with self.cond:
            return any(f['id'] == fid for f in self.items)

    def snapshot(self):
        with self.cond:
            return [dict(f) for f in self.items]


class Stats:
    """Request counts by user, verb and resource."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.by = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
            self.denied = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
            self.since = time.time()

    def count(self, user, verb, resource):
        # one resource request of user/verb/resource
        with self.lock:
            self.by[user][resource][verb] += 1

    def count_forbidden(self, user, verb, resource):
        # one request of user/verb/resource that RBAC refused
        with self.lock:
            self.denied[user][resource][verb] += 1

    def snapshot(self):
        with self.lock:
            by_user, total, by_res = {}, collections.Counter(), {}
            for user, per_res in self.by.items():
                c = collections.Counter()
                by_res[user] = {}
                for r, verbs in per_res.items():
                    c.update(verbs)
                    by_res[user][r] = dict(verbs)
                by_user[user] = dict(c)
                total.update(c)
            denied = {u: {r: dict(v) for r, v in per.items()} for u, per in self.denied.items()}
            return {'by_user': by_user, 'total': dict(total), 'by_user_resource': by_res,
                    'forbidden': denied, 'since': self.since}


# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------

class Route:
    """What a request addresses: discovery, or a resource with verb, namespace, name, subresource."""

    def __init__(self, verb, res=None, ns=None, name=None, sub=None, payload=None):
        self.verb, self.res, self.ns, self.name, self.sub, self.payload = verb, res, ns, name, sub, payload


OPEN_PATHS = ('/version', '/healthz', '/livez', '/readyz')


def route(method, path, query):
    """Map method + path to a Route; raises 404/405 ApiError."""
    parts = [urllib.parse.unquote(p) for p in path.split('/') if p]
    if path in OPEN_PATHS or parts in (['version'], ['healthz'], ['livez'], ['readyz']):
        if method != 'GET':
            raise ApiError(405, 'the server does not allow this method on the requested resource')
        return Route('get', payload=SERVER_VERSION if parts == ['version'] else 'ok')
    if parts[:2] == ['openapi', 'v3'] and method == 'GET':
        return Route('get', payload=openapi_v3(parts[2:]))
    if not parts or parts[0] not in ('api', 'apis'):
        if parts == [] and method == 'GET':
            return Route('get', payload={'paths': ['/api', '/api/v1', '/apis'] + [
                '/apis/' + g + v for g in GROUPS for v in ('', '/v1')] + [
                '/healthz', '/livez', '/openapi/v3', '/readyz', '/version']})
        raise no_route()
    if parts[0] == 'api':
        if len(parts) == 1:
            return _discovery(method, {'kind': 'APIVersions', 'versions': ['v1'],
                                       'serverAddressByClientCIDRs': [{'clientCIDR': '0.0.0.0/0',
                                                                       'serverAddress': '127.0.0.1:6443'}]})
        if parts[1] != 'v1':
            raise no_route()
        group, rest = '', parts[2:]
    else:
        if len(parts) == 1:
            return _discovery(method, {'kind': 'APIGroupList', 'apiVersion': 'v1',
                                       'groups': [api_group(g) for g in GROUPS]})
        group = parts[1]
        if group not in BY_GROUP or not group:
            raise no_route()
        if len(parts) == 2:
            return _discovery(method, dict(api_group(group), kind='APIGroup', apiVersion='v1'))
        if parts[2] != 'v1':
            raise no_route()
        rest = parts[3:]
    if not rest:
        return _discovery(method, resource_list(group))
    watch = False
    if rest[0] == 'watch':
        watch, rest = True, rest[1:]
    if parse_bool(query.get('watch', '')):
        watch = True
    resources = BY_GROUP[group]
    ns = name = sub = None
    if rest[0] == 'namespaces' and (len(rest) >= 3 or 'namespaces' not in resources):
        if len(rest) < 3:
            raise no_route()
        ns, rest = rest[1], rest[2:]
        if rest[0] not in resources or not resources[rest[0]].namespaced:
            raise no_route()
    elif rest[0] in resources and not resources[rest[0]].namespaced:
        pass
    elif not (rest[0] in resources and len(rest) == 1):  # namespaced kinds: all-namespace collections
        raise no_route()
    res = resources[rest[0]]
    if len(rest) > 3 or (res.review and len(rest) > 1):
        raise no_route()
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and not (res.status and sub == 'status'):
        raise no_route()
    collection = name is None
    verb = {('GET', True): 'watch' if watch else 'list', ('GET', False): 'watch' if watch else 'get',
            ('POST', True): 'create', ('PUT', False): 'update', ('PATCH', False): 'patch',
            ('DELETE', False): 'delete', ('DELETE', True): 'deletecollection'}.get((method, collection))
    if verb is None or (verb == 'create' and ns is None and res.namespaced) \
            or (sub and verb not in ('get', 'update', 'patch')) or (res.review and verb != 'create') \
            or (verb == 'deletecollection' and res.plural == 'namespaces'):
        raise ApiError(405, 'the server does not allow this method on the requested resource',
                       'MethodNotAllowed', {})
    return Route(verb, res, ns, name, sub)


def _discovery(method, payload):
    # discovery documents are GET only
    if method != 'GET':
        raise ApiError(405, 'the server does not allow this method on the requested resource')
    return Route('get', payload=payload)


# ---------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------

class Listener:
    """One --listen address; can be closed (connection refused) and reopened."""

    def __init__(self, app, host, port, ssl_ctx):
        self.app, self.host, self.port, self.ssl_ctx = app, host, port, ssl_ctx
        self.lock = threading.Lock()
        self.conns = set()
        self.server = None
        self.closed = True

    @property
    def url(self):
        # URL clients use for this listener
        host = '[%s]' % self.host if ':' in self.host else self.host
        return '%s://%s:%d' % ('https' if self.ssl_ctx else 'http', host, self.port)

    def open(self):
        # bind (again) and serve in a daemon thread
        with self.lock:
            if self.server is not None:
                return
            srv = DoubleHTTPServer((self.host, self.port), Handler, self)
            self.port = srv.server_address[1]
            self.server, self.closed = srv, False
        threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.1},
                         name='listen-%d' % self.port, daemon=True).start()

    def close(self, keep=None):
        # stop accepting, close the socket, drop live connections (but keep `keep`)
        with self.lock:
            srv, self.server, self.closed = self.server, None, True
            conns = [c for c in self.conns if c is not keep]
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.app.cluster.cond:
            self.app.cluster.cond.notify_all()
        with self.app.faults.cond:
            self.app.faults.cond.notify_all()

    def track(self, conn):
        # remember live connections so close() can drop them
        with self.lock:
            self.conns.add(conn)
            return len(self.conns)

    def untrack(self, conn):
        # forget a finished connection
        with self.lock:
            self.conns.discard(conn)


class DoubleHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with lazy TLS handshakes and no reverse DNS at bind time."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, listener):
        self.listener = listener
        self.app = listener.app
        if ':' in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def server_bind(self):
        # skip HTTPServer's getfqdn(): reverse DNS can hang offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    def get_request(self):
        # accept fast; the TLS handshake happens in the connection thread
        sock, addr = self.socket.accept()
        try:  # like Go's net/http: no Nagle (headers and body are separate writes)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.listener.ssl_ctx is not None:
            sock = self.listener.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # client-side network errors are normal here: stay quiet
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, ValueError)):
            return
        super().handle_error(request, client_address)


class CloseConnection(Exception):
    """Abort the current connection without an answer."""


class Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection: API, discovery and admin requests."""

    protocol_version = 'HTTP/1.1'
    server_version = 'kube-apiserver-double'
    sys_version = ''
    timeout = IDLE_TIMEOUT

    def setup(self):
        # TLS handshake (bounded), then count the connection
        self.app = self.server.app
        self.listener = self.server.listener
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()
        if self.listener.track(self.connection) > self.app.max_connections:
            self.listener.untrack(self.connection)
            raise ConnectionError('too many connections')

    def finish(self):
        # untrack, flush quietly
        self.listener.untrack(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_request(self, code='-', size='-'):
        # dispatch() logs one line per request itself
        pass

    def log_message(self, fmt, *args):
        # BaseHTTPRequestHandler's own messages, unless --quiet
        if not self.app.quiet:
            sys.stderr.write('kubeapi %s\n' % (fmt % args))

    def do_GET(self):
        # every method goes through dispatch()
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- plumbing ---------------------------------------------------------
    def read_body(self):
        # the request body, Content-Length or chunked, at most MAX_BODY bytes
        if 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower():
            data = b''
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b';')[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise bad_request('malformed chunked body')
                if size == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass
                    return data
                if len(data) + size > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, 'the request body is too large')
                data += self.rfile.read(size)
                self.rfile.readline(16)
        try:
            n = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            self.close_connection = True
            raise bad_request('bad Content-Length')
        if n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, 'the request body is too large')
        return self.rfile.read(n) if n > 0 else b''

    def send_bytes(self, code, data, ctype='application/json', headers=None):
        # a complete response with Content-Length (keeps keep-alive working)
        self.code = code
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Cache-Control', 'no-cache, private')
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def send_json(self, code, obj, headers=None):
        # a JSON response
        self.send_bytes(code, jdump(obj).encode(), 'application/json', headers)

    def start_chunked(self, code=200):
        # headers of a streamed (watch/huge) response
        self.code = code
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Cache-Control', 'no-cache, private')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()

    def chunk(self, data):
        # one HTTP/1.1 chunk
        if data:
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))

    def end_chunked(self):
        # the terminating zero-length chunk
        self.wfile.write(b'0\r\n\r\n')

    def client_gone(self):
        # a watching/hung client that closed its side (EOF or error)
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            if isinstance(self.connection, ssl.SSLSocket):
                return self.connection.recv(1) == b''
            return self.connection.recv(1, socket.MSG_PEEK) == b''
        except (OSError, ValueError, ssl.SSLError):
            return True

    def wants_table(self):
        # kubectl asks for server-side printing with as=Table
        accept = self.headers.get('Accept') or ''
        return 'as=Table' in accept.replace(' ', '')

    # -- dispatch ---------------------------------------------------------
    def dispatch(self):
        # parse, authenticate, route, count, inject faults, execute, answer, log
        t0 = time.monotonic()
        self.code, self.user, self.verb = 0, '-', '-'
        try:
            split = urllib.parse.urlsplit(self.path)
            self.query = {k: v[-1] for k, v in
                          urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
            path = split.path
            body = self.read_body()
            if path == '/_double' or path.startswith('/_double/'):
                self.verb = 'admin'
                return self.app.admin(self, path, body)
            self.user = self.authenticate(path)
            self.ident = self.app.identity(self, self.user)
            rt = route(self.command, path, self.query)
            self.verb = rt.verb
            resname = rt.res.plural if rt.res else None
            if rt.res is not None:
                self.app.stats.count(self.user, rt.verb, resname)
            fault = self.app.faults.match(self.user, rt.verb, resname)
            if fault and fault['mode'] == 'slow':
                self.wait_while_active(fault, fault['delay'])
                fault = None
            if fault and fault['mode'] != 'truncate':
                return self.apply_fault(fault)
            self.app.check_access(self, rt)
            if fault:
                return self.send_truncated(rt, body)
            if rt.res is None:
                if isinstance(rt.payload, str):
                    return self.send_bytes(200, rt.payload.encode(), 'text/plain; charset=utf-8')
                return self.send_json(200, rt.payload)
            if rt.verb == 'watch':
                return self.serve_watch(rt)
            code, obj = self.app.execute(rt, body, self.headers, self.query, self.ident)
            if self.wants_table() and rt.verb in ('get', 'list') and rt.res:
                obj = to_table(rt.res, obj, self.query.get('includeObject', 'Metadata'),
                               obj.get('metadata', {}).get('resourceVersion', ''))
            self.send_json(code, obj)
        except ApiError as e:
            self.send_json(e.code, e.body(), e.headers)
        except CloseConnection:
            self.code = 'dropped'
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (OSError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # a bug in the double: answer 500, keep serving
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send_json(500, status_body(500, 'InternalError', 'double: %r' % (e,)))
            except OSError:
                pass
        finally:
            if not self.app.quiet:
                sys.stderr.write('kubeapi :%d %s %s %s %s -> %s %.1fms\n' % (
                    self.listener.port, self.user, self.verb, self.command, self.path, self.code,
                    (time.monotonic() - t0) * 1000))

    def authenticate(self, path):
        # bearer token -> user; 401 if tokens are configured and this one is not valid
        header = self.headers.get('Authorization') or ''
        if not self.app.auth.enabled:
            return 'system:anonymous'
        if not header and path in OPEN_PATHS:
            return 'system:anonymous'
        if header[:7].lower() == 'bearer ':
            user = self.app.auth.user_for(header[7:].strip())
            if user:
                return user
        raise ApiError(401, 'Unauthorized', 'Unauthorized')

    # -- faults -----------------------------------------------------------
    def apply_fault(self, f):
        # answer (or not) the way the matching fault says
        mode = f['mode']
        if mode == 'error':
            code = f['status']
            headers = {'Retry-After': f['retry_after']} if f.get('retry_after') is not None else {}
            return self.send_json(code, status_body(code, REASONS.get(code, 'Unknown'),
                                                    'fault injected by the API double (%s)' % mode),
                                  headers)
        if mode == 'drop':
            raise CloseConnection()
        if mode == 'garbage':
            return self.send_bytes(200, b'<html><body>502 Bad Gateway - garbage from the API double'
                                        b'</body></html>\n{"kind": ', 'application/json')
        if mode == 'huge':
            return self.send_huge(f['bytes'])
        # hang: hold the request until the fault goes away; never answer
        self.code = 'hung'
        deadline = time.monotonic() + HANG_MAX_SECONDS
        faults = self.app.faults
        while time.monotonic() < deadline and not self.app.stopping and not self.listener.closed:
            with faults.cond:
                if not faults.active(f['id']):
                    break
                faults.cond.wait(0.5)
            if self.client_gone():
                break
        raise CloseConnection()

    def wait_while_active(self, f, seconds):
        # a slow answer: wait until the fault is cleared, the client goes or time is up
        deadline = time.monotonic() + max(0.0, seconds)
        faults = self.app.faults
        while not self.app.stopping and not self.listener.closed:
            left = deadline - time.monotonic()
            if left <= 0 or self.client_gone():
                return
            with faults.cond:
                if f['count'] is None and not faults.active(f['id']):
                    return
                faults.cond.wait(min(0.2, left))

    def send_truncated(self, rt, body):
        # execute the request, then send only the first half of its answer and close
        self.close_connection = True
        if rt.verb == 'watch':
            self.start_chunked()
            self.chunk(b'{"type":"MODIFIED","object":{"kind":"' + rt.res.kind.encode()[:3])
            raise CloseConnection()
        if rt.res is None:
            code, data = 200, jdump(rt.payload).encode()
        else:
            code, obj = self.app.execute(rt, body, self.headers, self.query, self.ident)
            data = jdump(obj).encode()
        self.code = code
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.wfile.flush()
        raise CloseConnection()

    def send_huge(self, size):
        # a long, valid-looking PodList, streamed in 64 KiB chunks
        self.start_chunked()
        self.chunk(b'{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[')
        sent, n, buf = 0, 0, []
        pad = 'x' * 800
        while sent < size and not self.app.stopping:
            item = ('%s{"metadata":{"name":"huge-%08d","namespace":"default","annotations":{"pad":"%s"}}}'
                    % (',' if n else '', n, pad)).encode()
            buf.append(item)
            n += 1
            if sum(len(b) for b in buf) >= 65536 or sent + 65536 >= size:
                data = b''.join(buf)
                self.chunk(data)
                sent += len(data)
                buf = []
        self.chunk(b''.join(buf) + b']}')
        self.end_chunked()

    # -- watch ------------------------------------------------------------
    def serve_watch(self, rt):
        # stream watch events: initial ADDED or replay from resourceVersion, then live events
        res, cluster = rt.res, self.app.cluster
        labels = parse_label_selector(self.query.get('labelSelector'))
        fields = parse_field_selector(res, self.query.get('fieldSelector'))
        if rt.name:  # legacy /watch/.../name
            fields.append(('metadata.name', '=', rt.name))
        ns = rt.ns if res.namespaced else None
        try:
            timeout = float(self.query.get('timeoutSeconds') or self.app.watch_max)
        except ValueError:
            raise bad_request('invalid timeoutSeconds')
        timeout = max(0.0, min(timeout, self.app.watch_max))
        bookmarks = parse_bool(self.query.get('allowWatchBookmarks', ''))
        table = self.wants_table()
        rvp = self.query.get('resourceVersion', '')
        if rvp not in ('', '0'):
            try:
                start = int(rvp)
            except ValueError:
                raise bad_request('invalid resource version: %s' % rvp)
        else:
            start = None

        def matches(obj, obj_ns):
            # namespace, label and field filters of this watch
            return ((ns is None or obj_ns == ns) and labels_match(labels, obj['metadata'].get('labels'))
                    and fields_match(fields, obj))

        def encode(etype, obj):
            # one newline-terminated watch event
            if table and etype in ('ADDED', 'MODIFIED', 'DELETED'):
                obj = to_table(res, obj, self.query.get('includeObject', 'Metadata'),
                               obj['metadata'].get('resourceVersion', ''))
            return (jdump({'type': etype, 'object': obj}) + '\n').encode()

        out = []
        with cluster.cond:
            if start is None:
                cursor = cluster.rv
                for (p, ons, _), o in sorted(cluster.objects.items()):
                    if p == res.plural and matches(o, ons):
                        out.append(encode('ADDED', o))
            elif start < cluster.floor:
                cursor = None
            else:
                cursor = start
        self.start_chunked()
        if cursor is None:
            self.chunk(encode('ERROR', status_body(410, 'Expired', 'too old resource version: %d (%d)'
                                                   % (start, cluster.floor + 1))))
            return self.end_chunked()
        for data in out:
            self.chunk(data)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.app.bookmark_interval
        next_check = time.monotonic() + 1.0
        while True:
            batch, expired = [], False
            with cluster.cond:
                while True:
                    nowm = time.monotonic()
                    if (cluster.events and cluster.events[-1].rv > cursor) or cluster.stopping \
                            or nowm >= deadline or self.listener.closed or nowm >= next_check \
                            or (bookmarks and nowm >= next_bookmark):
                        break
                    wake = min(deadline, next_check, next_bookmark if bookmarks else deadline)
                    cluster.cond.wait(max(0.01, wake - nowm))
                if cluster.events and cluster.events[-1].rv > cursor:
                    if cursor < cluster.floor:
                        expired = True
                    else:
                        for ev in reversed(cluster.events):
                            if ev.rv <= cursor:
                                break
                            batch.append(ev)
                        batch.reverse()
                        cursor = cluster.events[-1].rv
                stopping = cluster.stopping
            if stopping or self.listener.closed:
                raise CloseConnection()
            if expired:
                self.chunk(encode('ERROR', status_body(410, 'Expired', 'too old resource version: %d (%d)'
                                                       % (cursor, cluster.floor + 1))))
                return self.end_chunked()
            for ev in batch:
                if ev.res != res.plural:
                    continue
                now_in = matches(ev.obj, ev.ns)
                was_in = ev.prev is not None and matches(ev.prev, ev.ns)
                if ev.type == 'DELETED':
                    if was_in:
                        self.chunk(encode('DELETED', ev.obj))
                elif ev.type == 'ADDED':
                    if now_in:
                        self.chunk(encode('ADDED', ev.obj))
                elif now_in and was_in:
                    self.chunk(encode('MODIFIED', ev.obj))
                elif now_in:
                    self.chunk(encode('ADDED', ev.obj))
                elif was_in:
                    self.chunk(encode('DELETED', ev.obj))
            nowm = time.monotonic()
            if nowm >= next_check:
                next_check = nowm + 1.0
                if self.client_gone():
                    raise CloseConnection()
                if self.app.faults.match(self.user, 'watch', res.plural, consume=False):
                    raise CloseConnection()
            if bookmarks and nowm >= next_bookmark:
                next_bookmark = nowm + self.app.bookmark_interval
                self.chunk(encode('BOOKMARK', {'kind': res.kind, 'apiVersion': res.api_version,
                                               'metadata': {'resourceVersion': str(cursor)}}))
            if nowm >= deadline:
                return self.end_chunked()


# ---------------------------------------------------------------------------
# The application: API execution and the admin API
# ---------------------------------------------------------------------------

class App:
    """Shared state of all listeners: store, auth, faults, statistics, options."""

    def __init__(self, args):
        self.cluster = Cluster(args.history, args.namespace_termination_seconds)
        self.rbac_lock = threading.Lock()
        self.rbac = {}               # token user -> Identity that RBAC applies to
        for spec in args.rbac or []:
            user, _, name = spec.partition('=')
            self.rbac[user] = Identity(name or user, restricted=True)
        tokens = {}
        for t in args.token or []:
            if '=' not in t:
                raise SystemExit('--token wants TOKEN=USER, got %r' % t)
            tok, user = t.split('=', 1)
            tokens[tok] = user
        self.auth = Auth(tokens, args.token_file or [])
        self.admin_token = args.admin_token
        self.faults = Faults()
        self.stats = Stats()
        self.quiet = args.quiet
        self.bookmark_interval = max(0.05, args.bookmark_interval)
        self.watch_max = max(1.0, args.watch_max_seconds)
        self.max_connections = args.max_connections
        self.listeners = []
        self.stopping = False

    @staticmethod
    def _json(body):
        # request body as JSON; 400 like the real server otherwise
        try:
            return json.loads(body.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request('couldn\'t get version/kind; json parse error: %s' % e)

    def identity(self, h, user):
        """The Identity of a request: its token user (RBAC-mapped with --rbac or /_double/rbac),
        or whom it impersonates (Impersonate-User/-Group headers, always subject to RBAC)."""
        with self.rbac_lock:
            ident = self.rbac.get(user) or Identity(user)
        imp_user = h.headers.get('Impersonate-User')
        imp_groups = h.headers.get_all('Impersonate-Group') or []
        if imp_user is None:
            if imp_groups:
                raise bad_request('requested %s without impersonating a user' % imp_groups)
            return ident
        wanted = [Attrs('impersonate', '', 'users', '', imp_user, '')]
        if imp_user.startswith(SA_PREFIX) and imp_user.count(':') == 3:
            sa_ns, sa_name = imp_user[len(SA_PREFIX):].split(':')
            wanted = [Attrs('impersonate', '', 'serviceaccounts', '', sa_name, sa_ns)]
        wanted += [Attrs('impersonate', '', 'groups', '', g, '') for g in imp_groups]
        for a in wanted:
            if ident.restricted and not authorize(self.cluster, ident, a)[0]:
                raise forbidden(ident.name, a)
        return Identity(imp_user, default_groups(imp_user, imp_groups), restricted=True)

    def check_access(self, h, rt):
        # 403 (before anything is executed or streamed) when RBAC applies and allows nothing
        if rt.res is None or rt.res.review or not h.ident.restricted:
            return
        a = request_attrs(rt, h.query)
        allowed, reason = authorize(self.cluster, h.ident, a)
        if not allowed:
            self.stats.count_forbidden(h.user, rt.verb, rt.res.plural)
            raise forbidden(h.ident.name, a, reason)

    def review(self, rt, ident, body):
        """SelfSubjectAccessReview / SelfSubjectReview: answered, never stored."""
        res = rt.res
        body = self._json(body)
        if not isinstance(body, dict):
            raise bad_request('%s in version "v1" cannot be handled as a %s' % (res.kind, res.kind))
        out = typed(res, {'metadata': {'creationTimestamp': None}, 'spec': body.get('spec') or {}})
        if res.plural == 'selfsubjectreviews':
            out.pop('spec')
            out['status'] = {'userInfo': ident.info()}
            return out
        if res.plural == 'selfsubjectrulesreviews':
            out['status'] = rules_review(self.cluster, ident, out['spec'].get('namespace', ''))
            return out
        ra = out['spec'].get('resourceAttributes')
        if not ra:
            out['status'] = {'allowed': True, 'reason': 'non-resource URLs are open in the API double'}
        elif not ident.restricted:
            out['status'] = {'allowed': True, 'reason': 'RBAC does not apply to this user in the API double'}
        else:
            a = Attrs(ra.get('verb', ''), ra.get('group', ''), ra.get('resource', ''),
                      ra.get('subresource', ''), ra.get('name', ''), ra.get('namespace', ''))
            allowed, reason = authorize(self.cluster, ident, a)
            out['status'] = {'allowed': allowed}
            if reason:
                out['status']['reason'] = reason
        return out

    def execute(self, rt, body, headers, query, ident=None):
        """Run one resource verb; returns (http code, object)."""
        res, c = rt.res, self.cluster
        ns = rt.ns if res.namespaced else ''
        ctype = (headers.get('Content-Type') or '').lower()
        if body and rt.verb in ('create', 'update') and 'protobuf' in ctype:
            try:
                body = jdump(decode_protobuf(res, body)).encode()
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise bad_request('cannot decode protobuf body: %s' % e)
        elif body and rt.verb == 'delete' and 'protobuf' in ctype:
            body = b''  # DeleteOptions: defaults are what the double does anyway
        if res.review:
            return 201, self.review(rt, ident or Identity('system:anonymous'), body)
        if rt.verb == 'get':
            return 200, c.get(res, ns, rt.name)
        if rt.verb == 'list':
            want = query.get('resourceVersion') or ''
            if want.isdigit() and int(want) > c.rv:
                # as the watch cache: wait up to 3 s for that resourceVersion, then 504
                deadline = time.monotonic() + 3
                while int(want) > c.rv and time.monotonic() < deadline:
                    time.sleep(0.1)
                if int(want) > c.rv:
                    raise ApiError(504, 'Timeout: Too large resource version: %s, current: %d' % (want, c.rv),
                                   'Timeout', {'causes': [{'reason': 'ResourceVersionTooLarge',
                                                           'message': 'Too large resource version'}],
                                               'retryAfterSeconds': 1})
            return 200, c.list(res, rt.ns if res.namespaced else None,
                               parse_label_selector(query.get('labelSelector')),
                               parse_field_selector(res, query.get('fieldSelector')))
        if rt.verb in ('create', 'update') and res.plural == 'leases' and \
                query.get('fieldValidation') == 'Strict':
            strict_lease_fields(self._json(body))
        if rt.verb == 'create':
            return 201, c.create(res, ns, self._json(body))
        if rt.verb == 'update':
            return c.update(res, ns, rt.name, self._json(body), rt.sub)
        if rt.verb == 'patch':
            return 200, c.patch(res, ns, rt.name, headers.get('Content-Type'), body, rt.sub)
        if rt.verb == 'delete':
            opts = self._json(body) if body.strip() else {}
            if query.get('preconditions.resourceVersion') or query.get('preconditions.uid'):
                opts = dict(opts or {}, preconditions={
                    'resourceVersion': query.get('preconditions.resourceVersion'),
                    'uid': query.get('preconditions.uid')})
            return 200, c.delete(res, ns, rt.name, opts)
        if rt.verb == 'deletecollection':
            return 200, c.deletecollection(res, rt.ns if res.namespaced else None,
                                           parse_label_selector(query.get('labelSelector')),
                                           parse_field_selector(res, query.get('fieldSelector')))
        raise ApiError(405, 'the server does not allow this method on the requested resource')

    def admin(self, h, path, body):
        """/_double/* endpoints for tests: faults, ports, tokens, stats, reset."""
        if self.admin_token and path not in ('/_double/healthz', '/_double/whoami'):
            if (h.headers.get('Authorization') or '') != 'Bearer ' + self.admin_token:
                raise ApiError(401, 'Unauthorized', 'Unauthorized')
        m, parts = h.command, [p for p in path.split('/') if p][1:]
        q = h.query
        if parts == ['healthz'] and m == 'GET':
            return h.send_bytes(200, b'ok', 'text/plain; charset=utf-8')
        if parts == ['faults']:
            if m == 'GET':
                return h.send_json(200, {'faults': self.faults.snapshot()})
            if m == 'POST':
                return h.send_json(201, self.faults.add(self._json(body)))
            if m == 'DELETE':
                return h.send_json(200, {'removed': self.faults.clear(q.get('user'))})
        if parts == ['ports'] and m == 'GET':
            return h.send_json(200, {'ports': [{'port': lst.port, 'open': not lst.closed, 'url': lst.url}
                                               for lst in self.listeners]})
        if len(parts) == 3 and parts[0] == 'ports' and parts[2] in ('open', 'close') and m == 'POST':
            try:
                port = int(parts[1])
            except ValueError:
                raise bad_request('bad port')
            lst = next((x for x in self.listeners if x.port == port), None)
            if lst is None:
                raise ApiError(404, 'no listener on port %d' % port, 'NotFound')
            if parts[2] == 'close':
                lst.close(keep=h.connection if h.listener is lst else None)
                if h.listener is lst:
                    h.close_connection = True
            else:
                try:
                    lst.open()
                except OSError as e:
                    raise ApiError(500, 'cannot listen on %d: %s' % (port, e))
            return h.send_json(200, {'port': port, 'open': not lst.closed})
        if parts == ['tokens']:
            if m == 'GET':
                return h.send_json(200, {'users': self.auth.users(), 'enabled': self.auth.enabled})
            if m == 'POST':
                spec = self._json(body)
                if not isinstance(spec, dict) or not spec.get('token') or not spec.get('user'):
                    raise bad_request('want {"token": .., "user": ..}')
                self.auth.add(str(spec['token']), str(spec['user']))
                return h.send_json(201, {'user': spec['user']})
            if m == 'DELETE':
                tok = q.get('token')
                if not tok:
                    raise bad_request('want ?token=')
                known = self.auth.revoke(tok)
                return h.send_json(200 if known else 404, {'revoked': known})
        if parts == ['whoami'] and m == 'GET':
            user = h.authenticate('/api')
            ident = self.identity(h, user)
            out = {'user': user}
            if ident.restricted:
                out.update(identity=ident.name, groups=ident.groups, rbac=True)
            return h.send_json(200, out)
        if parts == ['rbac']:
            if m == 'GET':
                with self.rbac_lock:
                    return h.send_json(200, {'subjects': {u: i.name for u, i in sorted(self.rbac.items())}})
            if m == 'POST':
                spec = self._json(body)
                if not isinstance(spec, dict) or not spec.get('user'):
                    raise bad_request('want {"user": .., "as": .. (default: the user itself), '
                                      '"groups": [..]}')
                user, name = str(spec['user']), str(spec.get('as') or spec['user'])
                groups = spec.get('groups')
                ident = Identity(name, default_groups(name, groups) if groups else None, restricted=True)
                with self.rbac_lock:
                    self.rbac[user] = ident
                return h.send_json(201, {'user': user, 'as': ident.name, 'groups': ident.groups})
            if m == 'DELETE':
                with self.rbac_lock:
                    users = [q['user']] if 'user' in q else list(self.rbac)
                    n = sum(self.rbac.pop(u, None) is not None for u in users)
                return h.send_json(200, {'removed': n})
        if parts == ['stats'] and m == 'GET':
            return h.send_json(200, self.stats.snapshot())
        if parts == ['stats', 'reset'] and m == 'POST':
            self.stats.reset()
            return h.send_json(200, {'reset': True})
        if parts == ['reset'] and m == 'POST':
            return h.send_json(200, {'deleted': self.cluster.reset()})
        raise no_route()

    def stop(self):
        # end watches and hung requests, close every listener
        self.stopping = True
        with self.cluster.cond:
            self.cluster.stopping = True
            self.cluster.cond.notify_all()
        with self.faults.cond:
            self.faults.cond.notify_all()
        for lst in self.listeners:
            lst.close()


def parse_listen(s):
    # HOST:PORT or [v6]:PORT
    host, _, port = s.rpartition(':')
    host = host.strip('[]') or '127.0.0.1'
    return host, int(port)


def main(argv=None):
    # parse options, open the listeners, serve until SIGTERM/SIGINT
    p = argparse.ArgumentParser(description='Kubernetes API server double (see the module docstring).')
    p.add_argument('--listen', action='append', help='HOST:PORT (repeatable; port 0 = ephemeral)')
    p.add_argument('--listen-plain', action='append',
                   help='HOST:PORT served without TLS even with --tls-cert (e.g. for the admin API)')
    p.add_argument('--tls-cert')
    p.add_argument('--tls-key')
    p.add_argument('--token', action='append', help='TOKEN=USER (repeatable)')
    p.add_argument('--token-file', action='append', help='file of "TOKEN USER" lines (repeatable)')
    p.add_argument('--admin-token', help='bearer token required on /_double/* (default: none)')
    p.add_argument('--port-file', help='write the bound ports here, one per line')
    p.add_argument('--history', type=int, default=1000, help='watch events kept for replay')
    p.add_argument('--bookmark-interval', type=float, default=5.0, help='seconds between BOOKMARKs')
    p.add_argument('--watch-max-seconds', type=float, default=1800.0)
    p.add_argument('--max-connections', type=int, default=512, help='per listening port')
    p.add_argument('--rbac', action='append', metavar='USER[=AS]',
                   help='make token user USER subject to RBAC, authorized as AS (default USER), e.g. '
                        'pg-0=system:serviceaccount:default:hapg (repeatable)')
    p.add_argument('--namespace-termination-seconds', type=float, default=1.0,
                   help='a deleted namespace stays Terminating this long (0: gone at once)')
    p.add_argument('--quiet', action='store_true')
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error('--tls-cert and --tls-key go together')
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    app = App(args)
    specs = [(x, ctx) for x in (args.listen or ([] if args.listen_plain else ['127.0.0.1:6443']))]
    specs += [(x, None) for x in args.listen_plain or []]
    for spec, lctx in specs:
        host, port = parse_listen(spec)
        lst = Listener(app, host, port, lctx)
        lst.open()
        app.listeners.append(lst)
    if args.port_file:
        tmp = args.port_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write(''.join('%d\n' % lst.port for lst in app.listeners))
        os.replace(tmp, args.port_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print('kubeapi listening on ' + ' '.join(lst.url for lst in app.listeners), flush=True)
    while not done.wait(1.0):
        pass
    app.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
