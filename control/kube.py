"""The one module that talks to Kubernetes: a cluster's inventory, KubeRay's presence, health,
and the RayService objects Foundry deploys, over the pinned ``kubernetes`` client.

The client is synchronous; every call runs in a worker thread (``asyncio.to_thread``) with a
connect and a read timeout on the request and an overall deadline around it, and urllib3 does
not retry (retries belong to the pipeline step that made the call). The client is built from a
kubeconfig's text (the control plane keeps it sealed in its database, not in a file), an
optional context and namespace::

    kube = await KubeClient.connect(kubeconfig_text, context="gpu-east", namespace="llm")
    try:
        inventory = await kube.inventory()
        await kube.apply_rayservice(manifest)
        ready, reason, message = await kube.rayservice_ready("llama-70b")
    finally:
        await kube.aclose()

Failures are translated here, once, into :mod:`control.errors` subclasses::

    ControlError
    ├── KubeError                  502 server_error           any failure talking to a cluster
    │   ├── KubeConfigInvalid      400 invalid_request_error  kubeconfig unreadable, no such
    │   │                                                     context, ConfigException
    │   ├── KubeUnreachable        503 server_error           urllib3 NewConnectionError, DNS,
    │   │   │                                                 TLS (SSLError), connection dropped
    │   │   └── KubeTimeout        504 server_error           Connect/ReadTimeoutError, deadline
    │   ├── KubeAuthFailed         502 server_error           ApiException 401 (the cluster
    │   │                                                     refused the kubeconfig's credentials)
    │   ├── KubeForbidden          502 server_error           ApiException 403 (RBAC)
    │   ├── KubeNotFound           404 not_found_error        ApiException 404 where absence is
    │   │                                                     an error (a missing namespace)
    │   ├── KubeConflict           409 invalid_request_error  ApiException 409 after one retry
    │   ├── KubeApiError           502 server_error           any other status (``cluster_status``)
    │   └── RayServiceNotReady     502 server_error           not our translation: the Ready
    │                                                         condition's terminal reason, or
    │                                                         the wait ran out (``reason``)
    └── InvalidRequest
        └── ManifestInvalid        422 invalid_request_error  ApiException 422: the Status
                                                              causes as (field, message) pairs;
                                                              also raised before sending by
                                                              :func:`control.kuberay.schema.admit`

A 401 or 403 from the cluster is not the caller's authentication failing, hence 502 and not
401/403 on our API. Credentials (the kubeconfig's token, password, key and certificate data)
are never logged; messages name the API server by scheme, host and port and have any of those
values cut out of text the server echoes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, new_client_from_config_dict
from kubernetes.utils import parse_quantity

from control.errors import ControlError
from control.kuberay.definitions import ResourceKind
from control.kuberay.schema import FieldError, ManifestInvalid, admit, admit_as, schema_for

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
DEADLINE_MARGIN_S = 5.0  # the deadline around a call: connect + read + this
MAX_MESSAGE_CHARS = 500
RAYSERVICE_CRD = "rayservices.ray.io"
GPU_RESOURCE = "nvidia.com/gpu"
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_MEMORY_MB = "nvidia.com/gpu.memory"
GFD_COUNT = "nvidia.com/gpu.count"
# Ready=False reasons after which KubeRay will not become ready without a change of spec
TERMINAL_REASONS = frozenset({"InitializingTimeout", "ValidationFailed"})

T = TypeVar("T")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubeError(ControlError):
    status: ClassVar[int] = 502
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "cluster_error"

    def __init__(self, message: str, *, cluster_status: int | None = None) -> None:
        super().__init__(message)
        self.cluster_status = cluster_status


class KubeConfigInvalid(KubeError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_kubeconfig"


class KubeUnreachable(KubeError):
    status = 503
    code = "cluster_unreachable"


class KubeTimeout(KubeUnreachable):
    status = 504
    code = "cluster_timeout"


class KubeAuthFailed(KubeError):
    code = "cluster_auth_failed"


class KubeForbidden(KubeError):
    code = "cluster_forbidden"


class KubeNotFound(KubeError):
    status = 404
    type = "not_found_error"
    code = "cluster_resource_not_found"


class KubeConflict(KubeError):
    status = 409
    type = "invalid_request_error"
    code = "cluster_conflict"


class KubeApiError(KubeError):
    code = "cluster_api_error"


class RayServiceNotReady(KubeError):
    """The RayService did not become ready: a terminal ``Ready=False`` reason, or the wait ran
    out (``reason`` is then the last one seen, or None before the operator set any)."""

    code = "rayservice_not_ready"

    def __init__(self, message: str, *, reason: str | None, condition_message: str | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.condition_message = condition_message


class KubeClient:
    """One cluster, one namespace. Build it with :meth:`connect`; close it with :meth:`aclose`."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        namespace: str,
        secrets: list[str],
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._api = api_client
        self.namespace = namespace
        self._secrets = sorted({secret for secret in secrets if secret and len(secret) >= 4}, key=len, reverse=True)
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._deadline_s = connect_timeout_s + read_timeout_s + DEADLINE_MARGIN_S
        self.target = _display_host(api_client.configuration.host)
        self._core = k8s.CoreV1Api(api_client)
        self._crds = k8s.ApiextensionsV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._version = k8s.VersionApi(api_client)
        self._rayservice: ResourceKind = schema_for("ray.io/v1", "RayService")

    @classmethod
    async def connect(
        cls,
        kubeconfig: str,
        *,
        context: str | None = None,
        namespace: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        allow_exec: bool = False,
    ) -> KubeClient:
        """A client for ``kubeconfig`` (its text, YAML); ``context`` defaults to its
        current-context, ``namespace`` to the context's namespace, else ``default``. Nothing is
        sent to the cluster yet.

        A user with an ``exec`` credential plugin (EKS, GKE) or an ``auth-provider`` runs a
        command of the kubeconfig's choosing on this host, so it is refused unless
        ``allow_exec`` (an operator's decision, not an API caller's). Loading runs in a thread.
        """
        return await asyncio.to_thread(
            cls._build, kubeconfig, context, namespace, connect_timeout_s, read_timeout_s, allow_exec
        )

    @classmethod
    def _build(
        cls,
        kubeconfig: str,
        context: str | None,
        namespace: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        allow_exec: bool = False,
    ) -> KubeClient:
        try:
            config = yaml.safe_load(kubeconfig)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise KubeConfigInvalid(f"the kubeconfig is not valid YAML{at}") from None
        if not isinstance(config, dict) or not config.get("clusters"):
            raise KubeConfigInvalid("the kubeconfig has no clusters")
        try:
            secrets = _secrets_of(config)
            chosen = context or config.get("current-context")
            contexts = {entry.get("name"): entry.get("context") or {} for entry in config.get("contexts") or []}
            users = {entry.get("name"): entry.get("user") or {} for entry in config.get("users") or []}
        except (AttributeError, TypeError):
            raise KubeConfigInvalid("the kubeconfig's contexts and users must be lists of named entries") from None
        if not chosen:
            raise KubeConfigInvalid("the kubeconfig has no current-context; name one with --context")
        if chosen not in contexts:
            names = ", ".join(sorted(str(name) for name in contexts)) or "none"
            raise KubeConfigInvalid(f"the kubeconfig has no context {chosen!r} (it has: {names})")
        if not isinstance(contexts[chosen], dict):
            raise KubeConfigInvalid(f"the kubeconfig's context {chosen!r} is not a mapping")
        user_name = contexts[chosen].get("user")
        user = users.get(user_name) or {}
        namespace = namespace or contexts[chosen].get("namespace") or "default"
        if not isinstance(namespace, str) or not _DNS1123_LABEL.match(namespace) or len(namespace) > 63:
            raise KubeConfigInvalid(f"the namespace {namespace!r} is not a DNS-1123 label")
        if not allow_exec and isinstance(user, dict) and ("exec" in user or "auth-provider" in user):
            plugin = "an exec credential plugin" if "exec" in user else "an auth-provider"
            raise KubeConfigInvalid(
                f"the kubeconfig's user {user_name!r} authenticates with {plugin}, which would run a command on "
                "this host; use a token or client certificate (or let an operator allow credential plugins)"
            )
        configuration = k8s.Configuration()
        configuration.retries = 0  # the pipeline step retries, not urllib3 behind its back
        try:
            api_client = new_client_from_config_dict(
                copy.deepcopy(config), context=chosen, persist_config=False, client_configuration=configuration
            )
        except (ConfigException, ValueError, KeyError, TypeError, OSError) as exc:
            raise KubeConfigInvalid(f"the kubeconfig cannot be used: {_scrub(str(exc), secrets)}") from None
        if not re.match(r"^https?://[^/]", configuration.host or ""):
            api_client.close()
            raise KubeConfigInvalid(f"the kubeconfig's cluster for context {chosen!r} has no http(s) server URL")
        # the client writes CA and client certificate data to 0600 temporary files that live
        # until the process exits (kubernetes.config caches them by content)
        return cls(
            api_client,
            namespace=namespace,
            secrets=secrets,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._api.close)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the cluster ---------------------------------------------------------------------------

    async def inventory(self) -> dict[str, Any]:
        """Nodes with their allocatable CPUs, memory and ``nvidia.com/gpu``, and the GPU product,
        memory and count that NVIDIA GPU feature discovery labels them with."""
        listing = await self._raw("listing nodes", self._core.list_node)
        nodes = [_node_inventory(item) for item in listing.get("items") or []]
        gpus_by_type: dict[str, int] = {}
        for node in nodes:
            if node["gpus"]:
                product = node["gpu_product"] or "unknown"
                gpus_by_type[product] = gpus_by_type.get(product, 0) + node["gpus"]
        totals = {
            "nodes": len(nodes),
            "ready_nodes": sum(1 for node in nodes if node["ready"]),
            "cpus": sum(node["cpus"] for node in nodes),
            "memory_bytes": sum(node["memory_bytes"] for node in nodes),
            "gpus": sum(node["gpus"] for node in nodes),
        }
        return {"nodes": nodes, "totals": totals, "gpus_by_type": gpus_by_type}

    async def operator_installed(self) -> bool:
        """Whether KubeRay's ``rayservices.ray.io`` CRD is installed."""
        try:
            await self._raw("reading the RayService CRD", self._crds.read_custom_resource_definition, RAYSERVICE_CRD)
        except KubeNotFound:
            return False
        return True

    async def health(self) -> dict[str, Any]:
        """``{"healthy", "reason", "version"}``: whether the API server answers with its version
        under our credentials. Never raises for an unhealthy cluster; ``reason`` says why."""
        try:
            version = await self._raw("reading the server version", self._version.get_code)
        except KubeError as exc:
            return {"healthy": False, "reason": exc.message, "code": exc.code, "version": None}
        return {"healthy": True, "reason": None, "code": None, "version": version.get("gitVersion")}

    # -- RayServices ---------------------------------------------------------------------------

    async def apply_rayservice(self, manifest: dict[str, Any], *, admit_first: bool = True) -> dict[str, Any]:
        """Create the RayService, or replace the one of that name (with its resourceVersion,
        once more if another writer got in between). The manifest is admitted first
        (:func:`control.kuberay.schema.admit`: the server and our fake see the same object, and
        the operator's rules fail here instead of as a ``ValidationFailed`` condition later).
        Returns the stored object."""
        body = admit(manifest) if admit_first else copy.deepcopy(manifest)
        name = (body.get("metadata") or {}).get("name")
        namespace = (body.get("metadata") or {}).get("namespace") or self.namespace
        kind = self._rayservice
        try:
            return await self._call(
                f"creating RayService {name!r}",
                self._custom.create_namespaced_custom_object,
                kind.group, kind.version, namespace, kind.plural, body,
            )  # fmt: skip
        except KubeConflict:
            pass  # AlreadyExists: replace it below
        for attempt in range(2):
            current = await self._get(name, namespace)
            if current is None:  # deleted in between: create it after all
                return await self._call(
                    f"creating RayService {name!r}",
                    self._custom.create_namespaced_custom_object,
                    kind.group, kind.version, namespace, kind.plural, body,
                )  # fmt: skip
            replacement = copy.deepcopy(body)
            replacement.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return await self._call(
                    f"replacing RayService {name!r}",
                    self._custom.replace_namespaced_custom_object,
                    kind.group, kind.version, namespace, kind.plural, name, replacement,
                )  # fmt: skip
            except KubeConflict:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def get_rayservice(self, name: str) -> dict[str, Any] | None:
        return await self._get(name, self.namespace)

    async def list_rayservices(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The namespace's RayServices, optionally only those matching ``label_selector``
        (``"foundry.dev/deployment=7,team"``)."""
        kind = self._rayservice
        kwargs = {"label_selector": label_selector} if label_selector else {}
        listing = await self._call(
            "listing RayServices",
            self._custom.list_namespaced_custom_object,
            kind.group, kind.version, self.namespace, kind.plural, **kwargs,
        )  # fmt: skip
        return list(listing.get("items") or [])

    async def rayservice_ready(self, name: str) -> tuple[bool, str | None, str | None]:
        """``(ready, reason, message)`` from the RayService's ``Ready`` condition; reasons are
        KubeRay's (``NonZeroServeEndpoints``, ``Initializing``, ``InitializingTimeout``,
        ``ValidationFailed``, ...; see :data:`TERMINAL_REASONS`). ``(False, None, None)`` while
        the operator has not set the condition; :class:`KubeNotFound` if there is no RayService."""
        current = await self.get_rayservice(name)
        if current is None:
            raise KubeNotFound(f"RayService {name!r} does not exist in namespace {self.namespace!r} on {self.target}")
        for condition in (current.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return condition.get("status") == "True", condition.get("reason"), condition.get("message")
        return False, None, None

    async def wait_rayservice_ready(self, name: str, *, timeout_s: float, poll_s: float = 1.0) -> str:
        """Wait until the RayService is ``Ready=True`` and return the reason
        (``NonZeroServeEndpoints``); :class:`RayServiceNotReady` on a terminal reason
        (:data:`TERMINAL_REASONS`) or after ``timeout_s``, naming the reason and the operator's
        message."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        reason: str | None = None
        message: str | None = None
        while True:
            ready, reason, message = await self.rayservice_ready(name)
            if ready:
                return reason or "Ready"
            if reason in TERMINAL_REASONS:
                raise RayServiceNotReady(
                    f"RayService {name!r} failed: {reason}: {self._scrub(message or '')}".rstrip(": "),
                    reason=reason,
                    condition_message=message,
                )
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise RayServiceNotReady(
                    f"RayService {name!r} was not ready within {timeout_s:g} s (last reason: {reason or 'none yet'})",
                    reason=reason,
                    condition_message=message,
                )
            await asyncio.sleep(min(poll_s, left))

    async def patch_rayservice(self, name: str, patch: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        """Patch the RayService: a dict is a JSON merge patch (RFC 7386: a list in it replaces
        the whole list, so send every worker group), a list a JSON patch (RFC 6902, e.g.
        ``[{"op": "replace", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/replicas",
        "value": 2}]``). The patched object is admitted here before it is sent."""
        current = await self.get_rayservice(name)
        if current is None:
            raise KubeNotFound(f"RayService {name!r} does not exist in namespace {self.namespace!r} on {self.target}")
        patched = _merge_patch(current, patch) if isinstance(patch, dict) else _json_patch(current, patch)
        patched.pop("status", None)
        admit(patched, old=current)
        kind = self._rayservice
        content_type = "application/merge-patch+json" if isinstance(patch, dict) else "application/json-patch+json"
        return await self._call(
            f"patching RayService {name!r}",
            self._custom.patch_namespaced_custom_object,
            kind.group, kind.version, self.namespace, kind.plural, name, patch,
            _content_type=content_type,
        )  # fmt: skip

    async def scale_worker_group(
        self,
        name: str,
        group: str,
        *,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
    ) -> dict[str, Any]:
        """Set a worker group's replicas and autoscaling bounds, by group name: a JSON patch that
        tests the group's name at its index, so a concurrent reorder fails instead of scaling
        the wrong group."""
        current = await self.get_rayservice(name)
        if current is None:
            raise KubeNotFound(f"RayService {name!r} does not exist in namespace {self.namespace!r} on {self.target}")
        groups = ((current.get("spec") or {}).get("rayClusterConfig") or {}).get("workerGroupSpecs") or []
        index = next((i for i, spec in enumerate(groups) if spec.get("groupName") == group), None)
        if index is None:
            raise KubeNotFound(f"RayService {name!r} has no worker group {group!r}")
        base = f"/spec/rayClusterConfig/workerGroupSpecs/{index}"
        operations: list[dict[str, Any]] = [{"op": "test", "path": f"{base}/groupName", "value": group}]
        for field_name, value in (("replicas", replicas), ("minReplicas", min_replicas), ("maxReplicas", max_replicas)):
            if value is not None:
                operations.append({"op": "add", "path": f"{base}/{field_name}", "value": value})
        return await self.patch_rayservice(name, operations)

    async def delete_rayservice(self, name: str) -> bool:
        """Delete the RayService (its RayCluster and pods follow in the background). True if it
        was there, False if it was already gone: deleting twice is fine."""
        kind = self._rayservice
        try:
            await self._call(
                f"deleting RayService {name!r}",
                self._custom.delete_namespaced_custom_object,
                kind.group, kind.version, self.namespace, kind.plural, name,
                propagation_policy="Background",
            )  # fmt: skip
        except KubeNotFound:
            return False
        return True

    # -- Secrets -------------------------------------------------------------------------------

    async def ensure_secret(self, name: str, data: dict[str, str], *, labels: dict[str, str] | None = None) -> None:
        """Create the Secret (``stringData``), or replace one of that name: the same call twice
        leaves one Secret with ``data``. The values are never logged or echoed."""
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels or {}},
            "stringData": data,
        }  # fmt: skip
        try:
            await self._raw(f"creating Secret {name!r}", self._core.create_namespaced_secret, self.namespace, body)
        except KubeConflict:
            await self._raw(f"replacing Secret {name!r}", self._core.replace_namespaced_secret, name, self.namespace, body)

    async def delete_secret(self, name: str) -> bool:
        """Delete the Secret; False if it was already gone."""
        try:
            await self._raw(f"deleting Secret {name!r}", self._core.delete_namespaced_secret, name, self.namespace)
        except KubeNotFound:
            return False
        return True

    # -- plumbing ------------------------------------------------------------------------------

    async def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        kind = self._rayservice
        try:
            return await self._call(
                f"reading RayService {name!r}",
                self._custom.get_namespaced_custom_object,
                kind.group, kind.version, namespace, kind.plural, name,
            )  # fmt: skip
        except KubeNotFound:
            return None

    async def _raw(self, what: str, method: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """A call whose JSON answer we read ourselves (nodes, CRDs, version): the generated
        models would reject fields newer than the client."""
        response = await self._call(what, method, *args, _preload_content=False)
        try:
            return json.loads(response.data)
        except ValueError:
            raise KubeApiError(f"{self.target} answered {what} with a body that is not JSON") from None

    async def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs["_request_timeout"] = self._timeout
        try:
            async with asyncio.timeout(self._deadline_s):
                return await asyncio.to_thread(method, *args, **kwargs)
        except ApiException as exc:
            raise self._status_error(what, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(what, exc) from None
        except TimeoutError:
            raise KubeTimeout(f"{self.target} did not finish {what} within {self._deadline_s:g} s") from None
        except ConfigException as exc:  # an exec plugin or token refresh failed mid-call
            raise KubeConfigInvalid(f"the kubeconfig's credentials failed: {self._scrub(str(exc))}") from None

    def _status_error(self, what: str, exc: ApiException) -> ControlError:
        status = exc.status or 0
        body = _json_or_none(exc.body)
        server_message = self._scrub(str(body.get("message") or exc.reason or "")) if isinstance(body, dict) else ""
        if status == 422:
            causes = ((body or {}).get("details") or {}).get("causes") or []
            errors = [
                FieldError(str(cause.get("field") or ""), self._scrub(str(cause.get("message") or cause.get("reason"))))
                for cause in causes
                if isinstance(cause, dict)
            ] or [FieldError("", server_message or "Invalid")]
            details = (body or {}).get("details") or {}
            return ManifestInvalid(errors, kind=str(details.get("kind") or ""), name=str(details.get("name") or ""))
        detail = f": {server_message}" if server_message else ""
        if status == 401:
            return KubeAuthFailed(
                f"{self.target} refused the kubeconfig's credentials while {what} (HTTP 401)", cluster_status=status
            )
        if status == 403:
            return KubeForbidden(f"{self.target} forbids {what} (HTTP 403){detail}", cluster_status=status)
        if status == 404:
            return KubeNotFound(f"{self.target}: not found while {what}{detail}", cluster_status=status)
        if status == 409:
            return KubeConflict(f"{self.target}: conflict while {what}{detail}", cluster_status=status)
        return KubeApiError(f"{self.target} failed {what} (HTTP {status}){detail}", cluster_status=status)

    def _transport_error(self, what: str, exc: urllib3.exceptions.HTTPError) -> KubeError:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
        connect_s, read_s = self._timeout
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            return KubeTimeout(f"could not connect to {self.target} within {connect_s:g} s")
        if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
            return KubeTimeout(f"{self.target} did not answer {what} within {read_s:g} s")
        if isinstance(reason, urllib3.exceptions.SSLError):
            return KubeUnreachable(f"the TLS handshake with {self.target} failed: {self._scrub(str(reason))}")
        if isinstance(reason, urllib3.exceptions.NameResolutionError):
            return KubeUnreachable(f"could not resolve the host of {self.target}")
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return KubeUnreachable(f"could not connect to {self.target}: connection refused or unreachable")
        if isinstance(reason, urllib3.exceptions.ProtocolError):
            return KubeUnreachable(f"the connection to {self.target} dropped while {what}")
        return KubeUnreachable(f"{self.target} failed {what}: {self._scrub(type(reason).__name__)}")

    def _scrub(self, text: str) -> str:
        return _scrub(text, self._secrets)


def _node_inventory(node: dict[str, Any]) -> dict[str, Any]:
    metadata = node.get("metadata") or {}
    status = node.get("status") or {}
    labels = metadata.get("labels") or {}
    allocatable = status.get("allocatable") or {}
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )
    return {
        "name": metadata.get("name"),
        "ready": ready,
        "cpus": float(_quantity(allocatable.get("cpu"))),
        "memory_bytes": int(_quantity(allocatable.get("memory"))),
        "gpus": int(_quantity(allocatable.get(GPU_RESOURCE))),
        "gpu_product": labels.get(GFD_PRODUCT) or None,
        "gpu_memory_mb": _int_label(labels.get(GFD_MEMORY_MB)),
        "labels_gpu_count": _int_label(labels.get(GFD_COUNT)),
    }


def _quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``"3500m"``, ``"16Gi"``, ``4``); 0 when absent or unreadable."""
    if value is None or value == "":
        return Decimal(0)
    try:
        return parse_quantity(value)
    except (ValueError, ArithmeticError):
        log.warning("ignoring an unreadable node quantity %r", value)
        return Decimal(0)


def _int_label(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class _PatchFailed(Exception):
    pass


def _json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902's add, replace, remove and test; enough to check a patch before sending it."""
    document = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        op, path = operation.get("op"), operation.get("path", "")
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]]
        if not tokens:
            raise ManifestInvalid([FieldError(f"patch[{number}].path", f"Unsupported value: {path!r}")])
        parent: Any = document
        try:
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
                elif op == "test" and parent[index] != operation["value"]:
                    raise _PatchFailed
            else:
                if op in ("add", "replace"):
                    if op == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = operation["value"]
                elif op == "remove":
                    del parent[last]
                elif op == "test" and parent.get(last) != operation["value"]:
                    raise _PatchFailed
            if op not in ("add", "replace", "remove", "test"):
                raise ManifestInvalid([FieldError(f"patch[{number}].op", f"Unsupported value: {op!r}")])
        except _PatchFailed:
            raise KubeConflict(f"the patch's test at {path} failed: the object changed") from None
        except (KeyError, IndexError, ValueError, TypeError):
            raise ManifestInvalid([FieldError(f"patch[{number}].path", f"Not found: {path!r}")]) from None
    return document


def _secrets_of(config: dict[str, Any]) -> list[str]:
    """Every credential value in a kubeconfig, to cut out of messages."""
    secrets: list[str] = []
    sensitive = re.compile(r"token|password|secret|key-data|certificate-data|client-key|id-token|refresh", re.I)

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for sub_key, sub in value.items():
                walk(sub, str(sub_key))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and sensitive.search(key):
            secrets.append(value)

    for user in config.get("users") or []:
        if isinstance(user, dict):
            walk(user.get("user") or {})
    return secrets


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1[redacted]", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _display_host(host: str) -> str:
    """``scheme://host[:port]`` without user info or path."""
    match = re.match(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/]*@)?(?P<hostport>[^/?#]+)", host or "", re.I)
    return f"{match['scheme']}://{match['hostport']}" if match else "the Kubernetes API server"


def _json_or_none(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


__all__ = [
    "KubeApiError",
    "KubeAuthFailed",
    "KubeClient",
    "KubeConfigInvalid",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeNotFound",
    "KubeTimeout",
    "KubeUnreachable",
    "ManifestInvalid",
    "RayServiceNotReady",
    "TERMINAL_REASONS",
    "admit_as",
]
