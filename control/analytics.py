"""Usage over time: ``GET /analytics/timeseries`` and ``GET /analytics/top`` of the control API.

Both read the metrics store's rollups (:mod:`serve.metrics.rollups`: 5-minute, hourly and daily
aggregates that ClickHouse maintains), never the raw request rows, so a month of hourly points
answers in milliseconds. Percentiles merge quantile states across buckets and groups.

    GET /api/analytics/timeseries?metric=latency_p95&interval=1h&since=2026-11-01T00:00:00Z&group_by=model
    -> {"metric": "latency_p95", "interval": "1h", "since": ..., "until": ...,
        "series": [{"group": "chat-main", "points": [{"t": "2026-11-01T00:00:00Z", "value": 812.4}, ...]}]}

    GET /api/analytics/top?metric=cost&by=key&limit=5          (this calendar month by default)
    -> {"metric": "cost", "by": "key", "since": ..., "until": ..., "interval": "1d",
        "data": [{"group": "key_0123456789ab", "value": 41.2}, ...]}

``since`` rounds down and ``until`` up to whole buckets; a bucket without data is 0 (for
percentiles too). ``project`` (name or id) keeps one project's requests. The app includes
:data:`router` behind its authentication (see :func:`control.app.create_app`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from control import projects
from control.errors import DatabaseUnavailable, InvalidRequest, MetricsUnavailable, NotFound
from control.permissions import Access, project_not_found
from control.schemas import ErrorResponse, Ref, UTCDatetime
from serve.metrics.records import Ranking, TimeSeries
from serve.metrics.store import MetricsBackendError

QUERY_TIMEOUT_S = 30.0

Metric = Literal["requests", "errors", "tokens", "cost", "latency_p50", "latency_p95", "ttft_p50", "ttft_p95"]
Interval = Literal["5m", "1h", "1d"]
Dimension = Literal["model", "project", "provider", "key", "deployment"]

# The range a time series covers when ``since`` is not given.
DEFAULT_SPAN = {"5m": timedelta(hours=6), "1h": timedelta(hours=24), "1d": timedelta(days=30)}


class AnalyticsSource(Protocol):
    """Where the routes read from: :class:`serve.metrics.store.MetricsStore` or the actor's client."""

    async def timeseries(self, metric: str, interval: str, **kwargs) -> TimeSeries: ...

    async def top(self, metric: str, by: str, **kwargs) -> Ranking: ...


Number = Annotated[int | float, Field(description="counts are integers; cost in US dollars; times in ms")]


class Point(BaseModel):
    t: datetime = Field(description="the bucket's start, UTC")
    value: Number


class Series(BaseModel):
    group: str = Field(description='the group_by value (a model, project id, key id, ...), or "all"')
    points: list[Point]


class TimeSeriesPublic(BaseModel):
    metric: Metric
    interval: Interval
    since: datetime = Field(description="the first bucket's start")
    until: datetime = Field(description="the end of the last bucket (exclusive)")
    series: list[Series]

    @classmethod
    def of(cls, ts: TimeSeries) -> TimeSeriesPublic:
        return cls(
            metric=ts.metric, interval=ts.interval, since=ts.since, until=ts.until,  # type: ignore[arg-type]
            series=[Series(group=s.group, points=[Point(t=t, value=v) for t, v in s.points]) for s in ts.series],
        )  # fmt: skip


class Ranked(BaseModel):
    group: str
    value: Number


class TopPublic(BaseModel):
    metric: Metric
    by: Dimension
    since: datetime
    until: datetime
    interval: Interval = Field(description="the rollup that answered")
    data: list[Ranked] = Field(description="highest first")

    @classmethod
    def of(cls, ranking: Ranking) -> TopPublic:
        return cls(
            metric=ranking.metric, by=ranking.by, since=ranking.since, until=ranking.until,  # type: ignore[arg-type]
            interval=ranking.interval, data=[Ranked(group=g, value=v) for g, v in ranking.data],  # type: ignore[arg-type]
        )  # fmt: skip


router = APIRouter(
    prefix="/analytics",
    tags=["analytics"],
    responses={
        400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field"},
        404: {"model": ErrorResponse, "description": "Unknown project"},
        503: {"model": ErrorResponse, "description": "Database or metrics store unavailable"},
    },
)

SinceQuery = Annotated[UTCDatetime | None, Query(description="ISO 8601, inclusive; naive is UTC")]
UntilQuery = Annotated[UTCDatetime | None, Query(description="ISO 8601, exclusive; naive is UTC (default: now)")]
ProjectQuery = Annotated[Ref | None, Query(description="only this project (name or id)")]


@router.get("/timeseries", response_model=TimeSeriesPublic)
async def timeseries(
    request: Request,
    metric: Annotated[Metric, Query()] = "requests",
    interval: Annotated[Interval, Query(description="bucket width; read from the rollup of that width")] = "1h",
    since: SinceQuery = None,
    until: UntilQuery = None,
    group_by: Annotated[Dimension | None, Query(description="one series per value (default: one series)")] = None,
    project: ProjectQuery = None,
) -> TimeSeriesPublic:
    """``metric`` per bucket of ``interval`` over ``[since, until)`` (default: the last 6 h at 5m,
    24 h at 1h, 30 days at 1d), one series per ``group_by`` value seen in the range."""
    until = until or datetime.now(timezone.utc)
    since = since or until - DEFAULT_SPAN[interval]
    _check_range(since, until)
    project_id = await _project_id(request, project)
    source: AnalyticsSource = request.app.state.usage
    ts = await _answer(
        source.timeseries(metric, interval, since=since, until=until, group_by=group_by, project_id=project_id)
    )
    return TimeSeriesPublic.of(ts)


@router.get("/top", response_model=TopPublic)
async def top(
    request: Request,
    metric: Annotated[Metric, Query()] = "cost",
    by: Annotated[Dimension, Query(description="what to rank")] = "key",
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    since: Annotated[
        UTCDatetime | None, Query(description="ISO 8601 (default: the start of the calendar month of until, UTC)")
    ] = None,
    until: UntilQuery = None,
    project: ProjectQuery = None,
) -> TopPublic:
    """The ``limit`` groups of ``by`` with the highest ``metric`` over ``[since, until)``, e.g.
    the keys that cost most this month (the defaults); with only ``until``, its month so far."""
    until = until or datetime.now(timezone.utc)
    since = since or _month_start(until)
    _check_range(since, until)
    project_id = await _project_id(request, project)
    source: AnalyticsSource = request.app.state.usage
    ranking = await _answer(source.top(metric, by, since=since, until=until, limit=limit, project_id=project_id))
    return TopPublic.of(ranking)


def _month_start(until: datetime) -> datetime:
    """The start of the calendar month (UTC) that the instant before ``until`` falls in: this
    month for now, November for 2026-12-01T00:00Z (``until`` is exclusive)."""
    last = until - timedelta(microseconds=1) if until > datetime.min.replace(tzinfo=timezone.utc) else until
    return last.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _check_range(since: datetime, until: datetime) -> None:
    if since >= until:
        raise InvalidRequest("until must be later than since", param="until")


async def _project_id(request: Request, project: str | None) -> str | None:
    """The project to report on: ``project`` if the caller may view its usage (another
    project's is a 404), else all (admins) or the caller's one project (else name it)."""
    access = Access(request.state.caller, "usage:view")  # set by control.permissions.authorize
    if project is None:
        mine = access.projects()
        if mine is not None and len(mine) != 1:
            raise InvalidRequest("name the project: you are a member of several", param="project", code="missing_field")
        return next(iter(mine)) if mine is not None else None
    try:
        async with request.app.state.sessions() as session:
            found = await projects.find_project(session, project)
    except NotFound:
        raise project_not_found(project)() from None
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise DatabaseUnavailable("the control database is unavailable; try again shortly") from exc
    access.check(found.id, project_not_found(project))
    return found.id


async def _answer(query):  # noqa: ANN001, ANN202 - a store coroutine
    try:
        return await asyncio.wait_for(query, QUERY_TIMEOUT_S)
    except ValueError as exc:  # the store names the argument: "interval: 17280 buckets ..."
        param, _, message = str(exc).partition(": ")
        raise InvalidRequest(message or str(exc), param=param if message else None) from None
    except TimeoutError as exc:
        raise MetricsUnavailable(f"the metrics store did not answer within {QUERY_TIMEOUT_S:g}s") from exc
    except MetricsBackendError as exc:
        raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
