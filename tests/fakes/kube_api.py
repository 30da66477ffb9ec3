"""A small Kubernetes API server over real HTTP, for the parts of the API Foundry uses, with a
fake KubeRay operator that moves RayServices through their conditions.

The real ``kubernetes`` client talks to it through the kubeconfig :meth:`FakeKubeAPI.kubeconfig`
writes (plain HTTP, or HTTPS with ``tls=True`` and a self-signed CA in the kubeconfig's
``certificate-authority-data``; a bearer token that is checked: a wrong one gets 401)::

    GET  /version
    GET  /api/v1/nodes[/NAME]                       seeded nodes with NVIDIA GFD labels
    GET  /apis/apiextensions.k8s.io/v1/customresourcedefinitions[/NAME]
                                                    KubeRay's CRDs while ``operator_installed``
    /apis/ray.io/v1/namespaces/NS/PLURAL            rayservices, rayclusters, rayjobs:
        GET (list; labelSelector, fieldSelector metadata.name=; watch=true streams JSON lines
             of ADDED/MODIFIED/DELETED from resourceVersion, or from the current objects)
        POST (create: 201 with uid, resourceVersion, generation 1, creationTimestamp; 409
              AlreadyExists; 422 Invalid with the causes; status dropped)
    /apis/ray.io/v1/namespaces/NS/PLURAL/NAME       GET, PUT (409 on a stale resourceVersion,
                                                    422 without one), PATCH (merge-patch+json,
                                                    json-patch+json; 415 for strategic merge),
                                                    DELETE (then 404)
    /apis/ray.io/v1/namespaces/NS/PLURAL/NAME/status  GET, PUT, PATCH: only status changes
    /api/v1/namespaces/NS/secrets[/NAME]            POST (201; 409 AlreadyExists), GET, PUT, DELETE

Admission is :func:`control.kuberay.schema.admit_as` without the operator's rules, as the API
server checks only the CRD schema; the generation moves only when ``spec`` changes, and writes to
the main resource never change ``status``. The fake operator applies the operator's rules later,
as KubeRay does: a RayService that breaks them gets ``Ready=False ValidationFailed``.

The operator (a thread) gives each new or changed RayService ``Ready=False Initializing`` at
once, then, ``ready_after_s`` later, ``Ready=True NonZeroServeEndpoints`` with
``serviceStatus: Running``, unless told otherwise::

    api.conflict_next(1)                                       # the next PUT gets 409 Conflict
    api.delay_next(1, seconds=2)                               # the next request waits 2 s
    api.fail_rayservice("llm", reason="InitializingTimeout")   # or the annotation
    metadata.annotations["fake.foundry.dev/fail"] = "ValidationFailed"
    metadata.annotations["fake.foundry.dev/fail"] = "stall"     # never ready; with
    metadata.annotations["ray.io/initializing-timeout"] = "2s"  # -> InitializingTimeout after 2 s

Seeded: uids come from ``random.Random(seed)``; the resourceVersion is a counter.

Example::

    with FakeKubeAPI.running(seed=1) as api:
        api.add_node("gpu-1", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3", gpu_memory_mb=81559)
        kube = await KubeClient.connect(api.kubeconfig())
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import json
import random
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control.kuberay.definitions import Definitions, ResourceKind, UnknownKind, shipped
from control.kuberay.schema import ManifestInvalid, admit_as, parse_duration_s

FAIL_ANNOTATION = "fake.foundry.dev/fail"
TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
OPERATOR_TICK_S = 0.02
WATCH_DEFAULT_TIMEOUT_S = 60.0
GIT_VERSION = "v1.34.1-fake"


class FakeKubeAPI:
    def __init__(
        self,
        *,
        seed: int = 0,
        token: str | None = None,
        namespace: str = "default",
        operator_installed: bool = True,
        ready_after_s: float = 0.3,
        definitions: Definitions | None = None,
        tls: bool = False,
    ) -> None:
        self._random = random.Random(seed)
        self.tls = tls
        self.ca_pem: bytes | None = None  # the self-signed certificate, with tls
        self.token = token or f"fake-token-{self._random.getrandbits(64):016x}"
        self.namespace = namespace
        self.operator_installed = operator_installed
        self.ready_after_s = ready_after_s
        self.definitions = definitions or shipped()
        self.url = ""
        self.nodes: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every authenticated request
        self._lock = threading.Condition()
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, ns, name)
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> Secret
        self._events: list[tuple[int, str, str, str, dict[str, Any]]] = []  # (rv, type, plural, ns, obj)
        self._rv = 1000
        self._failures: dict[str, tuple[str, str]] = {}
        self._conflicts_left = 0
        self._delays: list[float] = []  # seconds to wait before answering, one per coming request
        # (namespace, name) -> (generation, since when, settled): the operator's view of each RayService
        self._progress: dict[tuple[str, str], tuple[int, float, bool]] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeKubeAPI]:
        api = cls(**kwargs)
        api.start()
        try:
            yield api
        finally:
            api.stop()

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        scheme = "http"
        if self.tls:
            cert_pem, key_pem = _self_signed("127.0.0.1")
            self.ca_pem = cert_pem
            with tempfile.TemporaryDirectory() as folder:
                cert_file, key_file = Path(folder, "tls.crt"), Path(folder, "tls.key")
                cert_file.write_bytes(cert_pem)
                key_file.write_bytes(key_pem)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert_file, key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        operator = threading.Thread(target=self._operate, daemon=True)
        self._threads = [serve, operator]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()  # end the watches
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def kubeconfig(
        self,
        *,
        token: str | None = None,
        namespace: str | None = None,
        server: str | None = None,
        ca_pem: bytes | None = None,
    ) -> str:
        """A kubeconfig (YAML text) for this server, with its CA under tls; ``token``, ``server``
        and ``ca_pem`` override for fault tests."""
        cluster: dict[str, Any] = {"server": server or self.url}
        if ca_pem or self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem or self.ca_pem).decode()
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": cluster}],
                "users": [{"name": "fake-admin", "user": {"token": token or self.token}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake-admin", "namespace": namespace or self.namespace},
                    }
                ],
                "current-context": "fake",
            }
        )

    # -- seeding and inspection ----------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        cpu: str = "16",
        memory: str = "64Gi",
        gpus: int = 0,
        gpu_product: str | None = None,
        gpu_memory_mb: int | None = None,
        ready: bool = True,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A node with ``cpu``/``memory``/``nvidia.com/gpu`` allocatable and GFD labels when it
        has GPUs."""
        node_labels = {"kubernetes.io/hostname": name, **(labels or {})}
        allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            allocatable["nvidia.com/gpu"] = str(gpus)
            node_labels["nvidia.com/gpu.count"] = str(gpus)
            if gpu_product:
                node_labels["nvidia.com/gpu.product"] = gpu_product
            if gpu_memory_mb is not None:
                node_labels["nvidia.com/gpu.memory"] = str(gpu_memory_mb)
        with self._lock:
            node = {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": self._uid(),
                    "resourceVersion": self._next_rv(),
                    "labels": node_labels,
                    "creationTimestamp": _now(),
                },
                "spec": {},
                "status": {
                    "capacity": dict(allocatable),
                    "allocatable": allocatable,
                    "conditions": [
                        {"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}
                    ],
                    "nodeInfo": {"kubeletVersion": GIT_VERSION},
                },
            }
            self.nodes.append(node)
        return node

    def fail_rayservice(self, name: str, reason: str = "InitializingTimeout", message: str | None = None) -> None:
        """The operator reports ``Ready=False reason`` for RayService ``name`` instead of ready."""
        with self._lock:
            self._failures[name] = (reason, message or f"fake operator: {reason}")

    def delay_next(self, count: int = 1, *, seconds: float) -> None:
        """The next ``count`` requests wait ``seconds`` before being answered."""
        with self._lock:
            self._delays = [seconds] * count

    def conflict_next(self, count: int = 1) -> None:
        """The next ``count`` replaces (PUT) answer 409 Conflict, as if another writer got in first."""
        with self._lock:
            self._conflicts_left = count

    def get(self, plural: str, name: str, namespace: str | None = None, group: str = "ray.io") -> dict | None:
        with self._lock:
            found = self._objects.get((group, plural, namespace or self.namespace, name))
            return copy.deepcopy(found)

    def count(self, plural: str = "rayservices") -> int:
        with self._lock:
            return sum(1 for key in self._objects if key[1] == plural)

    # -- the store -----------------------------------------------------------------------------

    def _uid(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, kind: str, resource: ResourceKind, namespace: str, obj: dict[str, Any]) -> None:
        self._events.append((int(obj["metadata"]["resourceVersion"]), kind, resource.plural, namespace, copy.deepcopy(obj)))
        self._lock.notify_all()

    def create(self, resource: ResourceKind, namespace: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, _status(400, "BadRequest", "the body is not a JSON object")
        meta = body.setdefault("metadata", {}) if isinstance(body.get("metadata", {}), dict) else None
        if meta is None:
            return 400, _status(400, "BadRequest", "metadata must be an object")
        if meta.get("namespace") not in (None, "", namespace):
            return 400, _status(
                400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{self._random.getrandbits(20):05x}"[:63]
            for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
                meta.pop(server_field, None)
            meta["namespace"] = namespace
            if resource.has_status:
                body.pop("status", None)
            try:
                stored = admit_as(resource, body, operator_rules=False)
            except ManifestInvalid as exc:
                return 422, _invalid(resource, meta.get("name") or "", exc)
            key = (resource.group, resource.plural, namespace, stored["metadata"]["name"])
            if key in self._objects:
                return 409, _status(
                    409,
                    "AlreadyExists",
                    f'{resource.plural}.{resource.group} "{key[3]}" already exists',
                    details={"name": key[3], "group": resource.group, "kind": resource.plural},
                )
            stored["metadata"].update(
                uid=self._uid(), resourceVersion=self._next_rv(), generation=1, creationTimestamp=_now()
            )
            self._objects[key] = stored
            self._record("ADDED", resource, namespace, stored)
            return 201, copy.deepcopy(stored)

    def update(
        self, resource: ResourceKind, namespace: str, name: str, body: Any, *, status_only: bool, require_rv: bool
    ) -> tuple[int, dict[str, Any]]:
        """PUT (``require_rv``) and the end of PATCH: conflict check, admission, generation."""
        with self._lock:
            key = (resource.group, resource.plural, namespace, name)
            current = self._objects.get(key)
            if current is None:
                return 404, _not_found(resource, name)
            if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
                return 400, _status(400, "BadRequest", "the body is not a JSON object")
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if require_rv and not sent_rv:
                return 422, _status(
                    422,
                    "Invalid",
                    f'{resource.kind}.{resource.group} "{name}" is invalid: metadata.resourceVersion: Invalid value: '
                    '0: must be specified for an update',
                    details={"name": name, "group": resource.group, "kind": resource.kind, "causes": [
                        {"reason": "FieldValueInvalid", "message": "Invalid value: 0: must be specified for an update",
                         "field": "metadata.resourceVersion"}]},
                )  # fmt: skip
            forced = require_rv and not status_only and self._conflicts_left > 0
            if forced:
                self._conflicts_left -= 1
            if forced or (sent_rv and sent_rv != current["metadata"]["resourceVersion"]):
                return 409, _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural}.{resource.group} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    details={"name": name, "group": resource.group, "kind": resource.plural},
                )
            if (body.get("metadata") or {}).get("name", name) != name:
                return 400, _status(400, "BadRequest", "the name of the object does not match the name on the URL")
            candidate = copy.deepcopy(current)
            if status_only:
                candidate["status"] = body.get("status")
                if candidate["status"] is None:
                    candidate.pop("status")
            else:
                kept_meta = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "namespace")}
                candidate = {k: v for k, v in body.items() if k != "status" or not resource.has_status}
                candidate["metadata"] = {**body.get("metadata", {}), **kept_meta, "name": name}
                if resource.has_status and "status" in current:
                    candidate["status"] = current["status"]
            candidate["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = admit_as(resource, candidate, old=current, operator_rules=False)
            except ManifestInvalid as exc:
                return 422, _invalid(resource, name, exc)
            if stored == current:
                return 200, copy.deepcopy(current)  # a no-op write changes nothing, not even the resourceVersion
            if stored.get("spec") != current.get("spec"):
                stored["metadata"]["generation"] = current["metadata"]["generation"] + 1
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = stored
            self._record("MODIFIED", resource, namespace, stored)
            return 200, copy.deepcopy(stored)

    def patch(
        self, resource: ResourceKind, namespace: str, name: str, content_type: str, patch: Any, *, status_only: bool
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            current = self._objects.get((resource.group, resource.plural, namespace, name))
            if current is None:
                return 404, _not_found(resource, name)
            if content_type == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    return 400, _status(400, "BadRequest", "a merge patch is a JSON object")
                patched = _merge_patch(current, patch)
            elif content_type == "application/json-patch+json":
                try:
                    patched = _json_patch(current, patch)
                except _PatchError as exc:
                    return 422, _status(422, "Invalid", f"the server rejected our request due to an error in our request: {exc}")
            else:
                return 415, _status(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media "
                    "types include: application/json-patch+json, application/merge-patch+json",
                )  # fmt: skip
            if not isinstance(patched, dict):
                return 422, _status(422, "Invalid", "the patch did not leave an object")
            sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if sent_rv == current["metadata"]["resourceVersion"] or not sent_rv:
                patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.update(resource, namespace, name, patched, status_only=status_only, require_rv=False)

    def delete(self, resource: ResourceKind, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            key = (resource.group, resource.plural, namespace, name)
            current = self._objects.pop(key, None)
            if current is None:
                return 404, _not_found(resource, name)
            self._progress.pop((namespace, name), None)
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            self._record("DELETED", resource, namespace, gone)
            return 200, _status(
                200, "", "", status="Success", details={"name": name, "group": resource.group, "kind": resource.plural,
                                                        "uid": current["metadata"]["uid"]},
            )  # fmt: skip

    def listing(self, resource: ResourceKind, namespace: str | None, query: dict[str, str]) -> tuple[int, dict]:
        try:
            match = _selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        except ValueError as exc:
            return 400, _status(400, "BadRequest", str(exc))
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (group, plural, ns, _), obj in sorted(self._objects.items())
                if group == resource.group and plural == resource.plural and namespace in (None, ns) and match(obj)
            ]
            return 200, {
                "apiVersion": resource.api_version,
                "kind": resource.list_kind,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def watch(self, resource: ResourceKind, namespace: str | None, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        match = _selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        timeout_s = float(query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT_S)
        deadline = time.monotonic() + timeout_s
        initial: list[dict[str, Any]] = []
        with self._lock:
            since = query.get("resourceVersion") or "0"
            if since == "0":  # no resourceVersion: the current objects first, as ADDED
                for (group, plural, ns, _), obj in sorted(self._objects.items()):
                    if group == resource.group and plural == resource.plural and namespace in (None, ns) and match(obj):
                        initial.append({"type": "ADDED", "object": copy.deepcopy(obj)})
                position = int(self._rv)
            else:
                position = int(since)
        yield from initial
        while not self._stopping.is_set():
            with self._lock:
                pending = [event for event in self._events if event[0] > position]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._lock.wait(timeout=min(left, 0.5))
                    continue
            for rv, kind, plural, ns, obj in pending:
                position = rv
                if plural == resource.plural and namespace in (None, ns) and match(obj):
                    yield {"type": kind, "object": obj}

    # -- the operator --------------------------------------------------------------------------

    def _operate(self) -> None:
        resource = self.definitions.kind("ray.io/v1", "RayService")
        while not self._stopping.wait(OPERATOR_TICK_S):
            with self._lock:
                for (group, plural, namespace, name), obj in list(self._objects.items()):
                    if (group, plural) == (resource.group, resource.plural):
                        self._reconcile(resource, namespace, name, obj)

    def _reconcile(self, resource: ResourceKind, namespace: str, name: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        generation = obj["metadata"]["generation"]
        state = self._progress.get((namespace, name))
        if state is None or state[0] != generation:  # new, or its spec changed
            self._progress[(namespace, name)] = (generation, now, False)
            if _condition(obj.get("status") or {}, "Ready") is None:
                self._set_status(resource, namespace, name, ready=False, reason="Initializing",
                                 message="RayService is initializing", generation=generation)  # fmt: skip
            return
        _, since, settled = state
        if settled:
            return
        annotations = obj["metadata"].get("annotations") or {}
        failure = self._failures.get(name)
        fail = annotations.get(FAIL_ANNOTATION)
        try:
            admit_as(resource, obj, operator_rules=True)
        except ManifestInvalid as exc:
            failure = ("ValidationFailed", str(exc))
        if failure is None and fail == "stall":
            timeout = parse_duration_s(annotations.get(TIMEOUT_ANNOTATION, "") or "")
            if not timeout or now - since < timeout:
                return
            failure = ("InitializingTimeout", f"RayService did not become ready within {annotations[TIMEOUT_ANNOTATION]}")
        elif failure is None and fail:
            failure = (fail, f"fake operator: {fail}")
        immediate = failure is not None and (failure[0] == "ValidationFailed" or fail == "stall")
        if not immediate and now - since < self.ready_after_s:
            return
        if failure is not None:
            self._set_status(resource, namespace, name, ready=False, reason=failure[0], message=failure[1],
                             generation=generation)  # fmt: skip
        else:
            self._set_status(resource, namespace, name, ready=True, reason="NonZeroServeEndpoints",
                             message="Number of serve endpoints is greater than 0", generation=generation)  # fmt: skip
        self._progress[(namespace, name)] = (generation, since, True)

    def _set_status(
        self, resource: ResourceKind, namespace: str, name: str, *, ready: bool, reason: str, message: str, generation: int
    ) -> None:
        current = self._objects[(resource.group, resource.plural, namespace, name)]
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": reason,
                    "message": message[:32768],
                    "lastTransitionTime": _now(),
                    "observedGeneration": generation,
                },
                {
                    "type": "UpgradeInProgress",
                    "status": "False",
                    "reason": "NoPendingCluster",
                    "message": "No pending cluster exists",
                    "lastTransitionTime": _now(),
                    "observedGeneration": generation,
                },
            ],
            "observedGeneration": generation,
            "numServeEndpoints": 1 if ready else 0,
            "lastUpdateTime": _now(),
        }
        if ready:
            status["serviceStatus"] = "Running"
        body = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": status}
        code, answer = self.update(resource, namespace, name, body, status_only=True, require_rv=True)
        assert code == 200, answer  # the fake operator writes valid status


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    crd_prefix = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    secrets = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")
    custom = re.compile(
        r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
        r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            body = self._body()
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                self._json(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            api.requests.append((method, url.path))
            with api._lock:
                delay = api._delays.pop(0) if api._delays else 0.0
            if delay:
                api._stopping.wait(delay)
            path = url.path.rstrip("/")
            if path == "/version" and method == "GET":
                self._json(200, {"major": "1", "minor": "34", "gitVersion": GIT_VERSION, "platform": "linux/amd64"})
            elif path.startswith("/api/v1/nodes") and method == "GET":
                self._nodes(path.removeprefix("/api/v1/nodes").strip("/"), query)
            elif match := secrets.match(path):
                self._secret(method, match["ns"], match["name"], body)
            elif path.startswith(crd_prefix) and method == "GET":
                self._crds(path.removeprefix(crd_prefix).strip("/"))
            elif match := custom.match(path):
                self._custom(method, match, query, body)
            else:
                self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))

        def _secret(self, method: str, namespace: str, name: str | None, body: Any) -> None:
            with api._lock:
                if name is None and method == "POST":
                    name = ((body or {}).get("metadata") or {}).get("name")
                    if (namespace, name) in api.secrets:
                        self._json(409, _status(409, "AlreadyExists", f'secrets "{name}" already exists'))
                        return
                    api.secrets[(namespace, name)] = _stored_secret(body, api._next_rv())
                    self._json(201, api.secrets[(namespace, name)])
                elif name is not None and method == "GET":
                    found = api.secrets.get((namespace, name))
                    self._json(*((200, found) if found else (404, _status(404, "NotFound", f'secrets "{name}" not found'))))
                elif name is not None and method == "PUT":
                    if (namespace, name) not in api.secrets:
                        self._json(404, _status(404, "NotFound", f'secrets "{name}" not found'))
                        return
                    api.secrets[(namespace, name)] = _stored_secret(body, api._next_rv())
                    self._json(200, api.secrets[(namespace, name)])
                elif name is not None and method == "DELETE":
                    found = api.secrets.pop((namespace, name), None)
                    self._json(*((200, _status(200, "Success", "deleted")) if found else
                                 (404, _status(404, "NotFound", f'secrets "{name}" not found'))))  # fmt: skip
                else:
                    self._json(405, _status(405, "MethodNotAllowed", f"{method} is not supported here"))

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return _Unparsable()

        def _nodes(self, name: str, query: dict[str, str]) -> None:
            with api._lock:
                nodes = copy.deepcopy(api.nodes)
            if name:
                found = next((node for node in nodes if node["metadata"]["name"] == name), None)
                if found is None:
                    self._json(404, _status(404, "NotFound", f'nodes "{name}" not found'))
                else:
                    self._json(200, found)
                return
            match = _selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
            items = [node for node in nodes if match(node)]
            self._json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(api._rv)},
                             "items": items})  # fmt: skip

        def _crds(self, name: str) -> None:
            crds = [copy.deepcopy(crd) for crd in api.definitions.crds] if api.operator_installed else []
            if name:
                found = next((crd for crd in crds if crd["metadata"]["name"] == name), None)
                if found is None:
                    self._json(404, _status(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io "{name}" not found',
                                            details={"name": name, "group": "apiextensions.k8s.io",
                                                     "kind": "customresourcedefinitions"}))  # fmt: skip
                else:
                    self._json(200, found)
                return
            self._json(200, {"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
                             "metadata": {}, "items": crds})  # fmt: skip

        def _custom(self, method: str, match: re.Match[str], query: dict[str, str], body: Any) -> None:
            try:
                resource = api.definitions.plural(match["group"], match["version"], match["plural"])
            except UnknownKind:
                resource = None
            if resource is None or not api.operator_installed:
                self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))
                return
            if isinstance(body, _Unparsable):
                self._json(400, _status(400, "BadRequest", "the body of the request is not valid JSON"))
                return
            namespace, name, status_only = match["ns"], match["name"], match["sub"] == "status"
            if name is None:
                if method == "GET" and query.get("watch") in ("true", "1"):
                    self._stream(api.watch(resource, namespace, query))
                elif method == "GET":
                    self._json(*api.listing(resource, namespace, query))
                elif method == "POST" and namespace:
                    self._json(*api.create(resource, namespace, body))
                else:
                    self._json(405, _status(405, "MethodNotAllowed", f"{method} is not supported here"))
                return
            if namespace is None:
                self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))
            elif method == "GET":
                found = api.get(resource.plural, name, namespace, resource.group)
                self._json(*((200, found) if found else (404, _not_found(resource, name))))
            elif method == "PUT":
                self._json(*api.update(resource, namespace, name, body, status_only=status_only, require_rv=True))
            elif method == "PATCH":
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                self._json(*api.patch(resource, namespace, name, content_type, body, status_only=status_only))
            elif method == "DELETE" and not status_only:
                self._json(*api.delete(resource, namespace, name))
            else:
                self._json(405, _status(405, "MethodNotAllowed", f"{method} is not supported here"))

        def _json(self, code: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

        def _stream(self, events: Iterator[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for event in events:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

    return Handler


def _stored_secret(body: Any, resource_version: str) -> dict[str, Any]:
    secret = copy.deepcopy(body or {})
    secret.update(apiVersion="v1", kind="Secret")
    data = dict(secret.pop("stringData", None) or {})  # the API server folds stringData into data
    secret["data"] = dict(secret.get("data") or {}) | {
        k: base64.b64encode(str(v).encode()).decode() for k, v in data.items()
    }
    secret.setdefault("metadata", {})["resourceVersion"] = resource_version
    return secret


class _Unparsable:
    pass


class _PatchError(Exception):
    pass


def _status(
    code: int, reason: str, message: str, *, status: str = "Failure", details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status, "code": code}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    return body


def _not_found(resource: ResourceKind, name: str) -> dict[str, Any]:
    return _status(404, "NotFound", f'{resource.plural}.{resource.group} "{name}" not found',
                   details={"name": name, "group": resource.group, "kind": resource.plural})  # fmt: skip


def _invalid(resource: ResourceKind, name: str, exc: ManifestInvalid) -> dict[str, Any]:
    """The API server's 422: one cause per field error."""
    causes = [
        {"reason": _cause_reason(message), "message": message, "field": path} for path, message in exc.errors
    ]
    listed = ", ".join(f"{path}: {message}" for path, message in exc.errors)
    return _status(
        422,
        "Invalid",
        f'{resource.kind}.{resource.group} "{name}" is invalid: [{listed}]',
        details={"name": name, "group": resource.group, "kind": resource.kind, "causes": causes},
    )


def _cause_reason(message: str) -> str:
    for prefix, reason in (
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Forbidden", "FieldValueForbidden"),
        ("unknown field", "FieldValueInvalid"),
    ):
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _selector(labels: str, fields: str):
    """A predicate for ``labelSelector`` (``a=b,c,!d,e!=f,g in (x,y),h notin (z)``) and
    ``fieldSelector`` (``metadata.name=x``, ``metadata.namespace=y``)."""
    tests = []
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", labels or ""):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            tests.append(lambda o, k=key, op=op, vs=values: (_labels(o).get(k) in vs) == (op == "in"))
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m[1], m[2], m[3]
            if op == "!=":
                tests.append(lambda o, k=key, v=value: _labels(o).get(k) != v)
            else:
                tests.append(lambda o, k=key, v=value: _labels(o).get(k) == v)
        elif m := re.fullmatch(r"!\s*(\S+)", term):
            tests.append(lambda o, k=m[1]: k not in _labels(o))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            tests.append(lambda o, k=term: k in _labels(o))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    for term in filter(None, (t.strip() for t in (fields or "").split(","))):
        m = re.fullmatch(r"(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(\S*)", term)
        if not m:
            raise ValueError(f'"{term}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        attribute, op, value = m[1].split(".")[1], m[2], m[3]
        tests.append(lambda o, a=attribute, op=op, v=value: ((o["metadata"].get(a) == v) == (op != "!=")))
    return lambda obj: all(test(obj) for test in tests)


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(target: dict[str, Any], operations: Any) -> Any:
    if not isinstance(operations, list):
        raise _PatchError("a JSON patch is a list of operations")
    document = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict):
            raise _PatchError("an operation is an object")
        op, path = operation.get("op"), operation.get("path", "")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        if not tokens:
            raise _PatchError(f"unsupported path {path!r}")
        try:
            parent: Any = document
            for token in tokens[:-1]:
                parent = parent[int(token)] if isinstance(parent, list) else parent[token]
            last = tokens[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op == "add":
                    parent.insert(index, operation["value"])
                elif op == "replace":
                    parent[index] = operation["value"]
                elif op == "remove":
                    del parent[index]
                elif op == "test":
                    if parent[index] != operation["value"]:
                        raise _PatchError(f"testing value {path} failed")
                else:
                    raise _PatchError(f"unsupported operation {op!r}")
            else:
                if op == "add" or (op == "replace" and last in parent):
                    parent[last] = operation["value"]
                elif op == "remove" and last in parent:
                    del parent[last]
                elif op == "test":
                    if parent.get(last) != operation["value"]:
                        raise _PatchError(f"testing value {path} failed")
                else:
                    raise _PatchError(f"{op} {path}: no such path or operation")
        except (KeyError, IndexError, ValueError, TypeError):
            raise _PatchError(f"{op} {path}: no such path") from None
    return document


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _self_signed(ip: str) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for ``ip``, and its key: the fake's own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
