"""A Python client for a Foundry stack: typed methods for the control API, the OpenAI SDK for
inference. Made for notebooks and scripts, so it is synchronous (there is no async twin).

Example::

    from control.client import Foundry

    foundry = Foundry()                       # $FOUNDRY_API, key from $FOUNDRY_API_KEY / $FOUNDRY_ADMIN_KEY
    foundry.openai.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "hi"}])
    p95 = foundry.timeseries("latency_p95", interval="1h", since="24h", group_by="model").frame()
    foundry.top("cost", by="key", limit=5).frame()          # the keys that cost most this month
    dep = foundry.deploy("foundry-tiny", cluster="local", name="tiny-chat")   # waits until it serves

Times (``since``, ``until``) are datetimes (naive is UTC), ISO 8601 strings, or durations back
from now: ``"30m"``, ``"24h"``, ``"7d"`` or a :class:`~datetime.timedelta`.

Errors::

    FoundryError
    ├── FoundryAPIError          the API answered 4xx/5xx: status, type, code, param, message
    └── FoundryConnectionError   no answer (unreachable, timed out, not a Foundry API)
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx

from control.analytics import TimeSeriesPublic, TopPublic
from control.clusters_api import ClusterPublic
from control.deployments_api import DeploymentView
from control.registry_api import ModelPublic
from control.login import current_token
from control.schemas import (
    AuditPage,
    Health,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    Me,
    MemberCreate,
    MemberPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    UsagePublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)

if TYPE_CHECKING:
    import openai
    import pandas as pd

DEFAULT_API = "http://127.0.0.1:8000/api"
TIMEOUT_S = 30.0

__all__ = [
    "Foundry",
    "FoundryAPIError",
    "FoundryConnectionError",
    "FoundryError",
    "TimeSeries",
    "TopList",
    "resolve_api_key",
    "resolve_time",
]


class FoundryError(Exception):
    """Base of the client's errors."""


class FoundryAPIError(FoundryError):
    """The control API refused a request; the fields are its OpenAI-style error body."""

    def __init__(self, status: int, message: str, type: str = "", code: str = "", param: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


class FoundryConnectionError(FoundryError):
    """The control API could not be reached, did not answer in time, or is not a Foundry API."""


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The credential to send: ``explicit``, else ``$FOUNDRY_API_KEY``, else ``$FOUNDRY_ADMIN_KEY``,
    else the token of ``foundry login`` (refreshed if need be; see :mod:`control.login`)."""
    return explicit or os.environ.get("FOUNDRY_API_KEY") or os.environ.get("FOUNDRY_ADMIN_KEY") or current_token()


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def resolve_time(value: datetime | timedelta | str, *, now: datetime | None = None) -> datetime:
    """A point in time, UTC: a datetime (naive is UTC), ISO 8601, or a duration back from now.

    >>> now = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    >>> resolve_time("24h", now=now).isoformat()
    '2026-11-01T12:00:00+00:00'
    >>> resolve_time("2026-11-01T08:00:00", now=now).isoformat()
    '2026-11-01T08:00:00+00:00'
    """
    now = now or datetime.now(timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, str):
        if match := _DURATION.match(value.strip()):
            return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither ISO 8601 nor a duration like 30m, 24h, 7d") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class TimeSeries(TimeSeriesPublic):
    """``GET /analytics/timeseries``, with :meth:`frame` for pandas."""

    def frame(self) -> pd.DataFrame:
        """One column per group, one row per bucket start (a UTC ``DatetimeIndex`` named ``t``)."""
        import pandas as pd

        columns = {s.group: pd.Series([p.value for p in s.points], index=[p.t for p in s.points]) for s in self.series}
        frame = pd.DataFrame(columns)
        frame.index = pd.DatetimeIndex(frame.index, name="t")
        return frame


class TopList(TopPublic):
    """``GET /analytics/top``, with :meth:`frame` for pandas."""

    def frame(self) -> pd.DataFrame:
        """Columns ``group`` and ``value`` (named after the metric), highest first."""
        import pandas as pd

        return pd.DataFrame([(r.group, r.value) for r in self.data], columns=[self.by, self.metric])


class Foundry:
    """The control API at ``api_url`` (default ``$FOUNDRY_API`` or :data:`DEFAULT_API`) and the
    OpenAI-compatible API beside it (``…/v1``), both with ``api_key`` (see :func:`resolve_api_key`)."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        inference_url: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.api_url = (api_url or os.environ.get("FOUNDRY_API") or DEFAULT_API).rstrip("/")
        key = resolve_api_key(api_key)
        if not key:
            raise FoundryError(
                "no API key: pass api_key=..., set FOUNDRY_API_KEY or FOUNDRY_ADMIN_KEY, or run `foundry login`"
            )
        self.api_key = key
        # A `foundry login` token expires within the hour: read it again (refreshed) per request.
        self._from_login = not (api_key or os.environ.get("FOUNDRY_API_KEY") or os.environ.get("FOUNDRY_ADMIN_KEY"))
        self.inference_url = (inference_url or self.api_url.removesuffix("/api") + "/v1").rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )
        self._openai: openai.OpenAI | None = None

    def __enter__(self) -> Foundry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._openai is not None:
            self._openai.close()

    @property
    def openai(self) -> openai.OpenAI:
        """The official OpenAI SDK, pointed at this stack's ``/v1`` with the same key."""
        if self._openai is None:
            import openai

            self._openai = openai.OpenAI(base_url=self.inference_url, api_key=self.api_key, timeout=self.timeout_s)
        return self._openai

    # --- health and identity ---

    def health(self) -> Health:
        return Health.model_validate(self._call("GET", "/health"))

    def me(self) -> Me:
        return Me.model_validate(self._call("GET", "/users/me"))

    # --- users ---

    def users(self) -> list[UserPublic]:
        return [UserPublic.model_validate(u) for u in self._call("GET", "/users")["data"]]

    def create_user(self, email: str, *, is_admin: bool = False) -> UserPublic:
        body = UserCreate(email=email, is_admin=is_admin).model_dump(mode="json")
        return UserPublic.model_validate(self._call("POST", "/users", json=body))

    def update_user(self, user_id: str, **changes: Any) -> UserPublic:
        """Change ``is_active`` and/or ``is_admin``."""
        body = UserUpdate.model_validate(changes).model_dump(mode="json", exclude_unset=True)
        return UserPublic.model_validate(self._call("PATCH", f"/users/{user_id}", json=body))

    # --- projects and members ---

    def projects(self) -> list[ProjectPublic]:
        return [ProjectPublic.model_validate(p) for p in self._call("GET", "/projects")["data"]]

    def create_project(self, name: str, **budget: Any) -> ProjectPublic:
        """A project; ``budget_tokens``, ``budget_usd``, ``budget_period`` as in ``ProjectCreate``."""
        body = ProjectCreate.model_validate({"name": name, **budget}).model_dump(mode="json", exclude_unset=True)
        return ProjectPublic.model_validate(self._call("POST", "/projects", json=body))

    def update_project(self, project: str, **changes: Any) -> ProjectPublic:
        """Only the fields given change; ``None`` removes a budget."""
        body = ProjectUpdate.model_validate(changes).model_dump(mode="json", exclude_unset=True)
        return ProjectPublic.model_validate(self._call("PATCH", f"/projects/{project}", json=body))

    def members(self, project: str) -> list[MemberPublic]:
        return [MemberPublic.model_validate(m) for m in self._call("GET", f"/projects/{project}/members")["data"]]

    def add_member(self, project: str, user: str, role: str) -> MemberPublic:
        body = MemberCreate.model_validate({"user": user, "role": role}).model_dump(mode="json")
        return MemberPublic.model_validate(self._call("POST", f"/projects/{project}/members", json=body))

    def remove_member(self, project: str, user: str) -> None:
        self._call("DELETE", f"/projects/{project}/members/{user}")

    # --- keys ---

    def keys(self, project: str | None = None) -> list[KeyPublic]:
        params = {"project": project} if project else None
        return [KeyPublic.model_validate(k) for k in self._call("GET", "/keys", params=params)["data"]]

    def create_key(self, project: str, **fields: Any) -> KeyCreated:
        """A key in ``project`` (created if missing); ``fields`` as in ``KeyCreate`` (``name``,
        ``models``, ``rpm``, ``tpm``, ``model_limits``, budgets, expiry). ``.key`` is the secret."""
        body = KeyCreate.model_validate({"project": project, **fields}).model_dump(mode="json", exclude_unset=True)
        return KeyCreated.model_validate(self._call("POST", "/keys", json=body))

    def update_key(self, key_id: str, **changes: Any) -> KeyPublic:
        """Only the fields given change; ``None`` removes a limit."""
        body = KeyUpdate.model_validate(changes).model_dump(mode="json", exclude_unset=True)
        return KeyPublic.model_validate(self._call("PATCH", f"/keys/{key_id}", json=body))

    def revoke_key(self, key_id: str) -> KeyPublic:
        return KeyPublic.model_validate(self._call("DELETE", f"/keys/{key_id}"))

    # --- usage and analytics ---

    def usage(self, *, since: Any = None, until: Any = None, project: str | None = None) -> UsagePublic:
        """Totals and per-model percentiles over ``[since, until)``."""
        params = self._range(since, until) | ({"project": project} if project else {})
        return UsagePublic.model_validate(self._call("GET", "/usage", params=params or None))

    def timeseries(
        self,
        metric: str = "requests",
        *,
        interval: str = "1h",
        since: Any = None,
        until: Any = None,
        group_by: str | None = None,
        project: str | None = None,
    ) -> TimeSeries:
        """``metric`` (requests, errors, tokens, cost, latency_p50/p95, ttft_p50/p95) per bucket of
        ``interval`` (5m, 1h, 1d), per ``group_by`` (model, project, provider, key, deployment)."""
        params = {"metric": metric, "interval": interval, **self._range(since, until)}
        if group_by:
            params["group_by"] = group_by
        if project:
            params["project"] = project
        return TimeSeries.model_validate(self._call("GET", "/analytics/timeseries", params=params))

    def top(
        self,
        metric: str = "cost",
        *,
        by: str = "key",
        limit: int = 10,
        since: Any = None,
        until: Any = None,
        project: str | None = None,
    ) -> TopList:
        """The ``limit`` highest groups of ``by`` by ``metric`` (default: this calendar month)."""
        params = {"metric": metric, "by": by, "limit": limit, **self._range(since, until)}
        if project:
            params["project"] = project
        return TopList.model_validate(self._call("GET", "/analytics/top", params=params))

    # --- models, clusters, deployments ---

    def models(self) -> list[ModelPublic]:
        return [ModelPublic.model_validate(m) for m in self._call("GET", "/models")["data"]]

    def add_model(self, source: str, *, name: str | None = None, **fields: Any) -> ModelPublic:
        """Register a model directory, ``builtin:foundry-tiny`` or ``TYPE:MODEL``; one already
        registered under that name with the same source is returned as it is."""
        body = {"source": source, **({"name": name} if name else {}), **fields}
        try:
            return ModelPublic.model_validate(self._call("POST", "/models", json=body))
        except FoundryAPIError as exc:
            if exc.status != 409 or exc.code != "model_exists":
                raise
            same = [m for m in self.models() if m.source == source and (name is None or m.name == name)]
            if not same:
                raise
            return same[0]

    def clusters(self) -> list[ClusterPublic]:
        return [ClusterPublic.model_validate(c) for c in self._call("GET", "/clusters")["data"]]

    def add_cluster(self, name: str = "local", *, kubeconfig: str | None = None, context: str | None = None,
                    namespace: str | None = None) -> ClusterPublic:  # fmt: skip
        """``"local"``: the stack's Ray cluster (again: its inventory refreshed). Any other name: a
        Kubernetes cluster with KubeRay, given its kubeconfig's text."""
        body = {k: v for k, v in {"name": name, "kubeconfig": kubeconfig, "context": context,
                                  "namespace": namespace}.items() if v is not None}  # fmt: skip
        return ClusterPublic.model_validate(self._call("POST", "/clusters", json=body))

    def deploy(self, model: str, *, cluster: str = "local", wait: bool = True, timeout_s: float = 1800.0,
               **options: Any) -> DeploymentView:  # fmt: skip
        """Deploy ``model`` on ``cluster`` (``name``, ``engine``, ``replicas``, ``slo_ttft_ms``,
        ``slo_tpot_ms``, ``isl``, ``osl``, ``concurrency``, ... as ``POST /deployments`` takes
        them); with ``wait``, until it runs or fails."""
        dep = DeploymentView.model_validate(
            self._call("POST", "/deployments", json={"model": model, "cluster": cluster, **options})
        )
        return self.wait_deployment(dep.id, ("running", "failed"), timeout_s) if wait else dep

    def deployments(self, *, include_deleted: bool = False) -> list[DeploymentView]:
        params = {"include_deleted": "true"} if include_deleted else None
        return [DeploymentView.model_validate(d) for d in self._call("GET", "/deployments", params=params)["data"]]

    def deployment(self, deployment_id: str) -> DeploymentView:
        return DeploymentView.model_validate(self._call("GET", f"/deployments/{deployment_id}"))

    def scale(self, deployment_id: str, **bounds: int) -> DeploymentView:
        """``replicas=N``, or ``min_replicas``/``max_replicas`` (vLLM)."""
        return DeploymentView.model_validate(self._call("PATCH", f"/deployments/{deployment_id}", json=bounds))

    def delete_deployment(self, deployment_id: str, *, wait: bool = True, timeout_s: float = 600.0) -> DeploymentView:
        """Drain and remove; with ``wait``, until it is deleted."""
        dep = DeploymentView.model_validate(self._call("DELETE", f"/deployments/{deployment_id}"))
        return self.wait_deployment(dep.id, ("deleted", "failed"), timeout_s) if wait else dep

    def wait_deployment(self, deployment_id: str, statuses: tuple[str, ...], timeout_s: float) -> DeploymentView:
        deadline = time.monotonic() + timeout_s
        while (dep := self.deployment(deployment_id)).status not in statuses:
            if time.monotonic() > deadline:
                raise FoundryError(f"deployment {deployment_id} is still {dep.status} after {timeout_s:g} s")
            time.sleep(0.5)
        return dep

    # --- benchmarks and audit ---

    def record_benchmarks(self, rows: list[dict[str, Any]]) -> int:
        """Store ``foundry bench`` rows (``tune.bench.bench_rows``) in the metrics store."""
        return int(self._call("POST", "/benchmarks", json={"rows": rows})["inserted"])

    def benchmarks(self, model_path: str | None = None) -> list[dict[str, Any]]:
        params = {"model_path": model_path} if model_path else None
        return self._call("GET", "/benchmarks", params=params)["data"]

    def audit(self, **filters: Any) -> AuditPage:
        """The audit log: ``actor``, ``action``, ``target``, ``project``, ``since``, ``until``,
        ``after``, ``limit`` as the API takes them."""
        params = {k: v for k, v in filters.items() if v is not None}
        for name in ("since", "until"):
            if name in params:
                params[name] = resolve_time(params[name]).isoformat()
        return AuditPage.model_validate(self._call("GET", "/audit", params=params or None))

    # --- the wire ---

    @staticmethod
    def _range(since: Any, until: Any) -> dict[str, str]:
        now = datetime.now(timezone.utc)
        out = {}
        if since is not None:
            out["since"] = resolve_time(since, now=now).isoformat()
        if until is not None:
            out["until"] = resolve_time(until, now=now).isoformat()
        return out

    def _call(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        if self._from_login and (token := current_token()):
            self._http.headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise FoundryConnectionError(f"{self.api_url} did not answer within {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise FoundryConnectionError(f"cannot reach the control API at {self.api_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"message": response.reason_phrase or "request failed"}
            raise FoundryAPIError(
                response.status_code, error.get("message", ""), error.get("type", ""), error.get("code", ""),
                error.get("param"),
            )  # fmt: skip
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise FoundryConnectionError(f"{self.api_url} answered with something that is not JSON") from None
