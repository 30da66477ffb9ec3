"""The executor: pipeline runs as DBOS workflows, one child workflow per step.

    run workflow (id = run id)                        step workflow (id = <run id>/step/<step id>)
    ─────────────────────────                         ──────────────────────────────────────────
    start the steps whose dependencies are done  ───► render params, then per attempt:
      (skips and conditions decided here)               one DBOS step running the action
    DBOS.asyncio_wait(first completed)  ◄───────────    (failures: durable backoff sleep, retry)
    repeat; then the run's final status               or a durable wait (sleep, event)

Why it survives a SIGKILL: every decision of the run workflow follows from checkpointed facts
(which children finished, recorded by ``DBOS.asyncio_wait``; their results), so a replay takes
the same path and starts no step twice; a step's action result is a DBOS step output, so a
finished action never runs again, and one interrupted mid-way runs again with the same
idempotency key (``<run id>:<step id>``). Sleeps and event waits keep their deadlines.

DBOS facts this module is built around:

- one DBOS instance per process, so one :class:`PipelineEngine` per process;
- ``executor_id`` must be unique per live process and stable across its restarts: DBOS
  recovers the PENDING workflows of its own executor id at launch;
- ``application_version`` is pinned (:data:`APPLICATION_VERSION`): DBOS would otherwise hash the
  workflow code, and runs started by an older build would never be recovered;
- workflows and steps are async: DBOS runs sync workflows on an unbounded thread pool.

Example::

    engine = PipelineEngine("sqlite:///pipelines.db", executor_id="worker-1")
    await engine.start()                       # recovers unfinished runs of worker-1
    created = await engine.create_pipeline(definition_dict)
    run = await engine.start_run(created["id"], {"n": 3})
    run = await engine.wait_for_change(run["id"], run["version"], timeout_s=10)
    await engine.stop()
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import ray
from dbos import DBOS, SetWorkflowID
from dbos._error import DBOSAwaitedWorkflowCancelledError, DBOSStepTimeoutError, DBOSWorkflowCancelledError
from jinja2 import TemplateError
from sqlalchemy.engine import make_url

from pipelines import templating
from pipelines.actions import ActionContext, ActionRegistry, default_registry
from pipelines.definition import PipelineDefinition, StepDefinition, check_definition, parse_definition, resolve_params
from pipelines.dispatch import attempt_on_ray
from pipelines.errors import ActionError, Conflict, DefinitionError, ExecutorUnavailable, NotFound
from pipelines.store import RUN_FINAL, RunStore, sync_url

__all__ = ["APPLICATION_VERSION", "PipelineEngine"]

log = logging.getLogger(__name__)

APPLICATION_VERSION = "foundry-pipelines-1"  # bump only with a migration path for PENDING runs
POLL_S = 0.1
HTTP_TIMEOUT_S = 30.0

_current: PipelineEngine | None = None  # DBOS is a process singleton; so is the engine its workflows use


def _engine() -> PipelineEngine:
    if _current is None:
        raise RuntimeError("no pipeline engine is running in this process")
    return _current


def step_workflow_id(run_id: str, step_id: str) -> str:
    return f"{run_id}/step/{step_id}"


def event_workflow_id(run_id: str, name: str) -> str:
    return f"{run_id}/event/{name}"


# --- the DBOS workflows (registered at import; they call into the process's engine) -----------


@DBOS.workflow(name="foundry_pipeline_run")
async def _run_workflow(run_id: str, definition: dict, params: dict) -> dict:
    return await _engine()._execute_run(run_id, definition, params)


@DBOS.workflow(name="foundry_pipeline_step")
async def _step_workflow(run_id: str, definition: dict, params: dict, step_id: str, upstream: dict) -> dict:
    return await _engine()._execute_step(run_id, definition, params, step_id, upstream)


@DBOS.workflow(name="foundry_pipeline_event")
async def _event_workflow(data: Any) -> None:
    await DBOS.set_event_async("data", {"data": data})


def _now() -> float:
    return time.time()


class PipelineEngine:
    def __init__(
        self,
        database_url: str,
        *,
        executor_id: str,
        registry: ActionRegistry | None = None,
        application_version: str = APPLICATION_VERSION,
        log_level: str = "WARNING",
        plugins: dict[str, dict] | None = None,
    ) -> None:
        self.database_url = database_url
        self.executor_id = executor_id
        self.registry = registry or default_registry
        self.application_version = application_version
        self._log_level = log_level
        self.plugins = dict(plugins or {})  # module -> settings: configured where steps run on Ray too
        self._store: RunStore | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: dict[str, asyncio.Task] = {}  # workflow id -> its task in this process
        self._waiters: set[asyncio.Task] = set()
        self._watchers: dict[str, list[asyncio.Future]] = {}
        self._ready = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, launch DBOS (which resumes this executor's unfinished runs)."""
        global _current
        if _current is not None:
            raise RuntimeError("a pipeline engine already runs in this process (DBOS is one per process)")
        _current = self
        try:
            self._store = RunStore(self.database_url, on_change=self._notify)
            self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
            _prepare_sqlite(self.database_url)  # milliseconds, once; before DBOS owns the loop's thread pool
            DBOS(
                config={
                    "name": "foundry-pipelines",
                    "system_database_url": sync_url(self.database_url),
                    "executor_id": self.executor_id,
                    "application_version": self.application_version,
                    "log_level": self._log_level,
                    "notification_listener_polling_interval_sec": POLL_S,
                }
            )
            # Launched on this event loop, so recovered async workflows run here too.
            DBOS.launch()
            await self._store.create_tables()
            self._ready.set()
            await self._reconcile()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop executing; unfinished runs stay PENDING in DBOS and resume at the next start."""
        global _current
        tasks = [t for t in [*self._tasks.values(), *self._waiters] if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if _current is self:
            await asyncio.to_thread(DBOS.destroy, workflow_completion_timeout_sec=0)
            _current = None
            # DBOS made its (now shut down) pool this loop's default executor: give it a live one.
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(thread_name_prefix="pipelines"))
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.close()
        self._ready.clear()

    async def _reconcile(self) -> None:
        """Runs recorded here whose workflow never started (a crash right after the insert) start
        now; runs whose workflow ended while the view was not updated get their final status."""
        for run_id in await self.store.open_runs():
            status = await DBOS.get_workflow_status_async(run_id)
            if status is None:
                row = await self.store.run_row(run_id)
                data = await self.store.definition(row["pipeline_id"], row["pipeline_version"])
                with SetWorkflowID(run_id):
                    await DBOS.start_workflow_async(_run_workflow, run_id, data["definition"], row["params"])
            elif status.status == "SUCCESS":
                result = (await (await DBOS.retrieve_workflow_async(run_id)).get_result()) or {}
                row = await self.store.run_row(run_id)
                await self.store.finish_run(run_id, result.get("status", "succeeded"), outputs=row["outputs"], error=result.get("error"))
            elif status.status == "CANCELLED":
                await self.store.finish_run(run_id, "cancelled", error="cancelled")
            elif status.status in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
                await self.store.finish_run(run_id, "failed", error=f"the executor failed: {status.error}")

    @property
    def store(self) -> RunStore:
        if self._store is None or not self._ready.is_set():
            raise ExecutorUnavailable("the pipeline executor is not running")
        return self._store

    # --- the API -------------------------------------------------------------------------------

    async def create_pipeline(self, definition: dict | PipelineDefinition) -> dict:
        """Store a definition (a new version if the name exists); ``{"id", "version", "name"}``."""
        parsed = parse_definition(definition, self.registry)
        data = parsed.model_dump(mode="json", by_alias=True, exclude_defaults=False)
        pipeline_id, version = await self.store.save_definition(parsed.name, data)
        return {"id": pipeline_id, "version": version, "name": parsed.name}

    async def list_pipelines(self) -> list[dict]:
        return await self.store.list_definitions()

    async def get_pipeline(self, pipeline_id: str, version: int | None = None) -> dict:
        return await self.store.definition(pipeline_id, version)

    async def start_run(self, pipeline_id: str, params: dict | None = None) -> dict:
        stored = await self.store.definition(pipeline_id)
        definition = PipelineDefinition.model_validate(stored["definition"])
        try:
            check_definition(definition, self.registry)  # actions may have been unregistered since
        except DefinitionError as exc:
            raise DefinitionError(f"pipeline {stored['name']!r} cannot run here: {exc.message}", exc.param) from None
        resolved = resolve_params(definition, params or {})
        run_id = f"run_{uuid.uuid4().hex[:20]}"
        rows = [
            {"step_id": s.id, "position": i, "action": s.action, "weight": s.weight}
            for i, s in enumerate(definition.steps)
        ]
        await self.store.create_run(run_id, stored["id"], stored["version"], resolved, rows)
        with SetWorkflowID(run_id):
            await DBOS.start_workflow_async(_run_workflow, run_id, stored["definition"], resolved)
        return await self.store.run(run_id)

    async def get_run(self, run_id: str) -> dict:
        return await self.store.run(run_id)

    async def list_runs(self, pipeline_id: str | None = None, limit: int = 100) -> list[dict]:
        return await self.store.list_runs(pipeline_id, limit)

    async def cancel_run(self, run_id: str, expected_version: int | None = None) -> dict:
        """Cancel a run. Exactly one of two racing state changes wins; the other gets
        :class:`Conflict`, as does a cancel of a finished run or of a stale ``expected_version``."""
        while True:
            row = await self._open_row(run_id, expected_version)
            if await self.store.compare_and_set(
                run_id,
                row["version"],
                {"status": "cancelled", "error": "cancelled by request", "finished_at": time.time()},
            ):
                break
            if expected_version is not None:
                raise Conflict(f"run {run_id} changed while cancelling; read it again", param="version")
        step_ids = [s for s in (await self.store.run(run_id))["steps"]]
        workflow_ids = [run_id, *(step_workflow_id(run_id, s) for s in step_ids)]
        await DBOS.cancel_workflows_async(workflow_ids)
        self._cancel_local(workflow_ids)
        await self.store.cancel_open_steps(run_id, step_ids, "cancelled by request")
        return await self.store.run(run_id)

    async def send_event(self, run_id: str, name: str, data: Any = None, expected_version: int | None = None) -> dict:
        """Deliver an event to a run: the ``wait_for_event`` step waiting for ``name`` (now or
        later) completes with ``data`` as its outputs. Each name is delivered once per run."""
        row = await self.store.run_row(run_id)
        stored = await self.store.definition(row["pipeline_id"], row["pipeline_version"])
        definition = PipelineDefinition.model_validate(stored["definition"])
        if not _waits_for(definition, name, row["params"]):
            raise NotFound(f"no step of pipeline {stored['name']!r} waits for event {name!r}", param="name")
        while True:
            row = await self._open_row(run_id, expected_version)
            if name in row["events"]:
                raise Conflict(f"event {name!r} was already sent to run {run_id}", param="name")
            if await self.store.compare_and_set(run_id, row["version"], {"events": [*row["events"], name]}):
                break
            if expected_version is not None:
                raise Conflict(f"run {run_id} changed; read it again", param="version")
        with SetWorkflowID(event_workflow_id(run_id, name)):
            await DBOS.start_workflow_async(_event_workflow, data)
        return await self.store.run(run_id)

    async def wait_for_change(self, run_id: str, after_version: int, timeout_s: float = 15.0) -> dict:
        """The run once its version is past ``after_version`` (or it is final), else after the timeout."""
        future = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(run_id, []).append(future)
        try:
            run = await self.store.run(run_id)
            if run["version"] > after_version or run["status"] in RUN_FINAL:
                return run
            try:
                await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                pass
            return await self.store.run(run_id)
        finally:
            waiting = self._watchers.get(run_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._watchers.pop(run_id, None)

    async def actions(self) -> list[dict]:
        return [{"name": s.name, "kind": s.kind, "description": s.description} for s in self.registry.specs()]

    # --- helpers for the API -------------------------------------------------------------------

    async def _open_row(self, run_id: str, expected_version: int | None) -> dict:
        row = await self.store.run_row(run_id)
        if row["status"] in RUN_FINAL:
            raise Conflict(f"run {run_id} is already {row['status']}", param="run_id")
        if expected_version is not None and row["version"] != expected_version:
            raise Conflict(
                f"run {run_id} is at version {row['version']}, not {expected_version}; read it again", param="version"
            )
        return row

    def _notify(self, run_id: str) -> None:
        for future in self._watchers.get(run_id, []):
            if not future.done():
                future.set_result(None)

    def _cancel_local(self, workflow_ids: list[str]) -> None:
        for workflow_id in workflow_ids:
            task = self._tasks.get(workflow_id)
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()

    def _register(self, workflow_id: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks[workflow_id] = task
            task.add_done_callback(lambda t: self._tasks.pop(workflow_id, None) if self._tasks.get(workflow_id) is t else None)

    # --- the run workflow ------------------------------------------------------------------------

    async def _execute_run(self, run_id: str, definition_data: dict, params: dict) -> dict:
        await self._ready.wait()
        self._register(run_id)
        definition = PipelineDefinition.model_validate(definition_data)
        settings = definition.settings
        await self.store.run_started(run_id)
        started = await DBOS.run_step_async({"name": "run_started_at"}, _now)
        order = definition.topological_order()
        results: dict[str, dict] = {}
        waiters: dict[str, asyncio.Task] = {}
        failure: str | None = None
        stopping: str | None = None
        cancelled: set[str] = set()

        def settle(step: StepDefinition, result: dict) -> None:
            nonlocal failure, stopping
            results[step.id] = result
            if result["status"] == "failed" and step.on_failure == "fail" and failure is None:
                failure = f"step {step.id!r} failed: {result['error']}"
                if settings.fail_fast:
                    stopping = stopping or failure

        while True:
            progressed = True
            while progressed:
                progressed = False
                for step in order:
                    if step.id in results or step.id in waiters or any(d not in results for d in step.depends_on):
                        continue
                    decision, reason = self._decide(definition, step, results, params, stopping)
                    if decision == "run":
                        if len(waiters) < settings.max_parallel_steps:
                            waiters[step.id] = await self._start_step(run_id, definition, definition_data, params, step, results)
                        continue
                    await self.store.update_step(run_id, step.id, status=decision, error=reason)
                    settle(step, {"status": decision, "outputs": {}, "error": reason})
                    progressed = True
            to_cancel = [s for s in waiters if s not in cancelled]
            if stopping and to_cancel:
                cancelled.update(to_cancel)
                await self._cancel_steps(run_id, to_cancel, stopping)
            if not waiters:
                break
            running = [s.id for s in order if s.id in waiters]
            timeout = None
            if settings.timeout_s is not None and not stopping:
                timeout = max(0.0, started + settings.timeout_s - time.time())
            done, _ = await DBOS.asyncio_wait(
                [waiters[s] for s in running], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                stopping = f"the run took longer than its timeout_s ({settings.timeout_s:g}s)"
                failure = failure or stopping
                continue
            for step_id in running:
                if waiters[step_id] in done:
                    settle(definition.step(step_id), waiters.pop(step_id).result())

        outputs = {
            sid: results[sid]["outputs"] for sid in definition.leaves() if results.get(sid, {}).get("status") == "succeeded"
        }
        status = "failed" if failure else "succeeded"
        await self.store.finish_run(run_id, status, outputs=outputs, error=failure)
        return {"status": status, "error": failure}

    def _decide(
        self, definition: PipelineDefinition, step: StepDefinition, results: dict, params: dict, stopping: str | None
    ) -> tuple[str, str | None]:
        if stopping:
            return "cancelled", f"not started: {stopping}"
        for dep in step.depends_on:
            status = results[dep]["status"]
            if status == "failed" and definition.step(dep).on_failure == "fail":
                return "skipped", f"dependency {dep!r} failed"
            if status == "cancelled":
                return "cancelled", f"dependency {dep!r} was cancelled"
        if step.depends_on and all(results[d]["status"] == "skipped" for d in step.depends_on):
            return "skipped", "every step it depends on was skipped"
        if step.condition:
            try:
                if not templating.truthy(step.condition, _template_context(definition, step, results, params)):
                    return "skipped", "condition is false"
            except TemplateError as exc:
                return "failed", f"condition: {exc}"
        return "run", None

    async def _start_step(
        self,
        run_id: str,
        definition: PipelineDefinition,
        definition_data: dict,
        params: dict,
        step: StepDefinition,
        results: dict,
    ) -> asyncio.Task:
        upstream = {
            sid: {"status": results[sid]["status"], "outputs": results[sid]["outputs"]}
            for sid in definition.ancestors(step.id)
        }
        workflow_id = step_workflow_id(run_id, step.id)
        with SetWorkflowID(workflow_id):
            handle = await DBOS.start_workflow_async(_step_workflow, run_id, definition_data, params, step.id, upstream)
        # Outside the workflow's context: DBOS records nothing for this wait, whose completion
        # order varies; DBOS.asyncio_wait records which ones were done instead.
        waiter = asyncio.create_task(
            self._await_step(workflow_id, getattr(handle, "task", None)), context=contextvars.Context()
        )
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return waiter

    async def _await_step(self, workflow_id: str, task: asyncio.Future | None) -> dict:
        while True:
            task = task or self._tasks.get(workflow_id)
            if task is not None:
                await asyncio.wait([task])
                if task.cancelled():
                    return _cancelled("cancelled")
                error = task.exception()
                if isinstance(error, (DBOSWorkflowCancelledError, DBOSAwaitedWorkflowCancelledError)):
                    return _cancelled("cancelled")
                if error is not None:
                    return {"status": "failed", "outputs": {}, "error": f"the executor failed: {error}"}
                return task.result()
            status = await DBOS.get_workflow_status_async(workflow_id)
            if status is not None and status.status == "SUCCESS":
                handle = await DBOS.retrieve_workflow_async(workflow_id)
                return await handle.get_result()
            if status is not None and status.status == "CANCELLED":
                return _cancelled("cancelled")
            if status is not None and status.status in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
                return {"status": "failed", "outputs": {}, "error": f"the executor failed: {status.error}"}
            await asyncio.sleep(POLL_S)  # polling a recovered step run elsewhere

    async def _cancel_steps(self, run_id: str, step_ids: list[str], reason: str) -> None:
        workflow_ids = [step_workflow_id(run_id, s) for s in step_ids]
        await DBOS.cancel_workflows_async(workflow_ids)
        self._cancel_local(workflow_ids)
        await self.store.cancel_open_steps(run_id, step_ids, f"cancelled: {reason}")

    # --- the step workflow -----------------------------------------------------------------------

    async def _execute_step(self, run_id: str, definition_data: dict, params: dict, step_id: str, upstream: dict) -> dict:
        await self._ready.wait()
        self._register(step_workflow_id(run_id, step_id))
        definition = PipelineDefinition.model_validate(definition_data)
        step = definition.step(step_id)
        spec = self.registry.get(step.action)
        try:
            rendered = spec.validate(templating.render(step.params, {"params": params, "steps": upstream}))
        except TemplateError as exc:
            return await self._step_failed(run_id, step_id, f"params: {exc}")
        except ActionError as exc:
            return await self._step_failed(run_id, step_id, exc.message)
        if spec.kind == "wait":
            return await self._wait(run_id, step, rendered)
        retry = step.retry or definition.settings.retry
        for attempt in range(1, retry.max_attempts + 1):
            await self.store.update_step(run_id, step_id, status="running", attempts=attempt, progress=0.0)
            options = {"name": f"{step_id}#{attempt}", "preemptible": True, "timeout_seconds": step.timeout_s}
            try:
                outputs = await DBOS.run_step_async(
                    options, self._attempt, run_id, step_id, attempt, step.action, rendered, step.run_on
                )
            except ActionError as exc:
                error = exc
            except DBOSStepTimeoutError:
                error = ActionError(f"the attempt took longer than timeout_s ({step.timeout_s:g}s)")
            else:
                await self.store.update_step(run_id, step_id, status="succeeded", outputs=outputs, error=None)
                return {"status": "succeeded", "outputs": outputs, "error": None}
            if not error.retryable or attempt == retry.max_attempts:
                return await self._step_failed(run_id, step_id, error.message)
            delay = retry.delay_s(attempt, seed=f"{run_id}:{step_id}")
            await self.store.update_step(
                run_id, step_id, error=f"attempt {attempt} failed: {error.message}; retrying in {delay:.2f}s"
            )
            await DBOS.sleep_async(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _step_failed(self, run_id: str, step_id: str, error: str) -> dict:
        await self.store.update_step(run_id, step_id, status="failed", error=error)
        return {"status": "failed", "outputs": {}, "error": error}

    async def _attempt(
        self, run_id: str, step_id: str, attempt: int, action: str, params: dict, run_on: str = "executor"
    ) -> dict:
        """One attempt of an action: a DBOS step, so once it returned it never runs again. Here,
        or as a Ray task (``run_on: ray`` where Ray is initialised: :mod:`pipelines.dispatch`)."""
        spec = self.registry.get(action)

        async def report(percent: float) -> None:
            await self.store.update_step(run_id, step_id, progress=percent)

        ctx = ActionContext(run_id=run_id, step_id=step_id, attempt=attempt, http=self._http, report=report)
        if run_on == "ray" and ray.is_initialized():
            return await attempt_on_ray(spec, self.plugins, ctx, params)
        return await spec.run(ctx, params)

    async def _wait(self, run_id: str, step: StepDefinition, params: dict) -> dict:
        if step.action == "wait_for_event":
            name = params["name"]
            await self.store.update_step(run_id, step.id, status="waiting", event=name, attempts=1)
            message = await DBOS.get_event_async(
                event_workflow_id(run_id, name), "data", timeout_seconds=params["timeout_s"]
            )
            if message is None:
                return await self._step_failed(run_id, step.id, f"no event {name!r} within {params['timeout_s']:g}s")
            data = message["data"]
            outputs = data if isinstance(data, dict) else {"data": data}
        else:
            if step.action == "sleep":
                seconds = params["seconds"]
            else:
                seconds = max(0.0, params["at"].timestamp() - time.time())
            await self.store.update_step(run_id, step.id, status="waiting", attempts=1)
            await DBOS.sleep_async(seconds)  # the wake-up time is checkpointed
            outputs = {"slept_s": round(seconds, 3)}
        await self.store.update_step(run_id, step.id, status="succeeded", outputs=outputs, error=None)
        return {"status": "succeeded", "outputs": outputs, "error": None}


def _cancelled(reason: str) -> dict:
    return {"status": "cancelled", "outputs": {}, "error": reason}


def _template_context(definition: PipelineDefinition, step: StepDefinition, results: dict, params: dict) -> dict:
    steps = {
        sid: {"status": results[sid]["status"], "outputs": results[sid]["outputs"]}
        for sid in definition.ancestors(step.id)
        if sid in results
    }
    return {"params": params, "steps": steps}


def _waits_for(definition: PipelineDefinition, name: str, params: dict) -> bool:
    for step in definition.steps:
        if step.action != "wait_for_event":
            continue
        raw = step.params.get("name")
        try:
            if templating.render(raw, {"params": params, "steps": {}}) == name:
                return True
        except TemplateError:
            return True  # named from a step's outputs: only known when it runs
    return False


def _prepare_sqlite(url: str) -> None:
    """Write-ahead logging for a SQLite file, set before DBOS opens it (changing the journal mode
    needs the only connection): commits append to the log instead of rewriting pages, and
    readers never wait for the writer. Safe against a killed process, as the default is."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    import sqlite3

    conn = sqlite3.connect(parsed.database, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
