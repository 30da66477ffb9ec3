"""The optimizer's commands on the ``foundry`` CLI: ``predict``, ``optimize``, ``bench`` and the
``tune`` group (``train``, ``cv``, ``status``, ``activate``, ``models``, ``gpus``).

Heavy libraries (pandas, xgboost, ray, httpx) are imported inside the commands so that
``foundry --help`` stays fast. Every :class:`tune.errors.TuneError` ends the command with its
message on stderr and exit status 1.

Examples:
    foundry predict --csv configs.csv --out predicted.csv
    foundry optimize --model meta-llama/Llama-3.1-70B-Instruct --gpu h100_sxm,h200_sxm \\
        --num-gpus 16 --isl 2048 --osl 512 --concurrency 256 --slo-ttft-ms 2000 --slo-tpot-ms 40
    foundry optimize --candidates candidates.csv --slo-ttft-ms 500 --slo-tpot-ms 20 --json
    foundry bench --base-url http://localhost:8000/v1 --model foundry-tiny --isl 128 --osl 32 \\
        --concurrency 1,4,16 --requests 32 --out bench.csv
    foundry tune train --data ../shared/perfdata
    foundry tune train --from-store --since 2026-11-01 --data ../shared/perfdata
    foundry tune status
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["register"]

err = Console(stderr=True)
tune_app = typer.Typer(
    help="Train and inspect the performance predictor.", no_args_is_help=True
)


# Makes the deployer of ``optimize --measure --cluster C`` (the control plane gives it: tune may
# not import control): ``factory(cluster=, model=, api=, api_key=)`` -> a tune.bench.TrialDeployer.
_trial_deployer: Callable[..., Any] | None = None


def register(app: typer.Typer, *, trial_deployer: Callable[..., Any] | None = None) -> None:
    """Add ``predict``, ``optimize``, ``bench`` and the ``tune`` group to ``app``;
    ``trial_deployer`` lets ``optimize --measure --cluster`` deploy each trial."""
    global _trial_deployer
    _trial_deployer = trial_deployer
    app.command("predict")(predict)
    app.command("optimize")(optimize)
    app.command("bench")(bench)
    app.add_typer(tune_app, name="tune")


@contextmanager
def _errors() -> Iterator[None]:
    from tune.errors import TuneError

    try:
        yield
    except TuneError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _json(data: Any) -> None:
    _out(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _ints(text: str, option: str) -> tuple[int, ...]:
    from tune.errors import InvalidInput

    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidInput(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise InvalidInput(f"{option} needs at least one value")
    return values


def _predictor(artifacts: Path | None):  # noqa: ANN202
    from tune.predict.predictor import Predictor

    return Predictor.load(artifacts)


# ------------------------------------------------------------------------------------------
# foundry predict
# ------------------------------------------------------------------------------------------


def predict(
    csv_in: Annotated[Path, typer.Option("--csv", help="input CSV (measured-data columns)")],
    out: Annotated[Path, typer.Option("--out", help="output CSV: input plus predictions")],
    artifacts: Annotated[
        Path | None, typer.Option("--artifacts", help="predictor artifacts directory")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="fail on the first invalid row instead of skipping it")
    ] = False,
) -> None:
    """Predict TTFT, TPOT, E2E and output tokens/s per GPU for every row of a CSV.

    Adds pred_ttft_ms, pred_tpot_ms, pred_e2e_ms, pred_output_tps_per_gpu, the 90th
    percentiles pred_ttft_ms_p90 and pred_tpot_ms_p90, and pred_case (seen, unseen_model,
    unseen_gpu, unseen_model_gpu: what the training data held); every input column is carried
    through. model_path is a catalog id or a config.json path. An invalid row is reported with
    its line number and skipped (--strict: the command fails on it).
    """
    with _errors():
        import pandas as pd

        from tune.errors import InvalidInput

        try:
            frame = pd.read_csv(csv_in, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise InvalidInput(f"cannot read {csv_in}: {exc}") from exc
        predictor = _predictor(artifacts)
        result, invalid = predictor.predict_valid(frame)
        for position in sorted(invalid):  # line 1 is the header
            if strict:
                raise InvalidInput(f"{csv_in} line {position + 2}: {invalid[position]}")
            err.print(f"[yellow]skipped[/yellow] {csv_in} line {position + 2}: "
                      f"{invalid[position]}", highlight=False, soft_wrap=True)
        if invalid and result.empty:
            raise InvalidInput(f"{csv_in}: no valid row ({len(invalid)} invalid)")
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False)
        _note_unseen(result)
        err.print(f"{len(result)} rows -> {out}" + (f" ({len(invalid)} skipped)" if invalid else ""))


def _note_unseen(result: Any) -> None:
    """Flag rows whose GPU or model had no training rows (their intervals are wider)."""
    if "pred_case" not in result.columns:
        return
    for case, what in (("unseen_gpu", "GPU"), ("unseen_model", "model"),
                       ("unseen_model_gpu", "model and GPU")):
        rows = result[result["pred_case"] == case]
        if len(rows):
            names = sorted(set(rows["system" if what == "GPU" else "model_path"].astype(str)))
            err.print(f"[yellow]note:[/yellow] {len(rows)} rows on a {what} without training "
                      f"rows ({', '.join(names[:5])}): less accurate, see pred_*_p90",
                      highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------
# foundry optimize
# ------------------------------------------------------------------------------------------


def optimize(
    model: Annotated[str | None, typer.Option("--model", help="catalog id or config.json path")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU systems, comma-separated")] = None,
    num_gpus: Annotated[int | None, typer.Option("--num-gpus", help="GPUs available (of the chosen type)")] = None,
    isl: Annotated[int | None, typer.Option("--isl", help="input tokens per request")] = None,
    osl: Annotated[int | None, typer.Option("--osl", help="output tokens per request")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="target concurrent requests")] = None,
    slo_ttft_ms: Annotated[float, typer.Option("--slo-ttft-ms", help="TTFT SLO, ms")] = ...,  # type: ignore[assignment]
    slo_tpot_ms: Annotated[float, typer.Option("--slo-tpot-ms", help="TPOT SLO, ms")] = ...,  # type: ignore[assignment]
    slo_e2e_ms: Annotated[float | None, typer.Option("--slo-e2e-ms", help="E2E SLO, ms")] = None,
    objective: Annotated[str, typer.Option("--objective", help="throughput_per_gpu or cost")] = "throughput_per_gpu",
    search: Annotated[str, typer.Option("--search", help="ga (NSGA-II) or grid")] = "ga",
    candidates: Annotated[
        Path | None, typer.Option("--candidates", help="choose among this CSV's rows instead")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    seed: Annotated[int, typer.Option("--seed", help="search seed")] = 0,
    price: Annotated[
        str | None, typer.Option("--price", help="hourly GPU prices, e.g. h100_sxm=2.5,l40s=0.9")
    ] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="drive the search with Ray Tune trials")] = False,
    measure: Annotated[
        bool, typer.Option("--measure", help="benchmark each trial (foundry bench) via Ray Tune")
    ] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="endpoint for --measure (without --cluster)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key for --measure")] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="with --measure: deploy each trial on this registered cluster, measure it, remove it")
    ] = None,
    deploy_model: Annotated[
        str | None, typer.Option("--deploy-model", help="with --cluster: the registered model to deploy (default: --model)")
    ] = None,
    api: Annotated[str, typer.Option("--api", envvar="FOUNDRY_API", help="control API, with --cluster")] = "http://127.0.0.1:8000/api",
    requests: Annotated[int, typer.Option("--requests", help="requests per trial for --measure")] = 16,
    artifacts: Annotated[Path | None, typer.Option("--artifacts", help="predictor artifacts directory")] = None,
    risk: Annotated[
        float, typer.Option("--risk", help="accepted chance of missing an SLO: feasibility is judged on the (1 - risk) quantile; 0.5 = the point prediction")
    ] = 0.1,
) -> None:
    """Find the deployment that meets the SLOs at the best throughput per GPU (or cost).

    Two forms: --model/--gpu/--num-gpus/--isl/--osl/--concurrency searches the space of GPU
    type, TP, PP, replicas, max_num_seqs, precision and prefill budget and prints the best
    configuration, its vLLM and Ray Serve settings, and the Pareto front; --candidates CSV
    picks the best row of the CSV and prints its id and predictions.
    """
    with _errors():
        from tune.errors import InvalidInput

        if candidates is not None:
            _choose(candidates, slo_ttft_ms, slo_tpot_ms, artifacts, risk)
            return
        missing = [
            name for name, value in (("--model", model), ("--gpu", gpu), ("--num-gpus", num_gpus),
                                     ("--isl", isl), ("--osl", osl), ("--concurrency", concurrency))
            if value is None
        ]
        if missing:
            raise InvalidInput(f"missing {', '.join(missing)} (or give --candidates CSV)")
        if objective not in ("throughput_per_gpu", "cost"):
            raise InvalidInput("--objective is throughput_per_gpu or cost")
        if search not in ("ga", "grid"):
            raise InvalidInput("--search is ga or grid")
        _search(
            model=model, gpu=gpu, num_gpus=num_gpus, isl=isl, osl=osl, concurrency=concurrency,
            slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, slo_e2e_ms=slo_e2e_ms,
            objective=objective, search=search, as_json=as_json, seed=seed, price=price, risk=risk,
            use_ray=use_ray or measure, measure=measure, base_url=base_url, api_key=api_key,
            requests=requests, artifacts=artifacts, cluster=cluster, deploy_model=deploy_model, api=api,
        )


def _choose(path: Path, slo_ttft_ms: float, slo_tpot_ms: float, artifacts: Path | None,
            risk: float) -> None:
    import pandas as pd

    from tune.errors import InvalidInput
    from tune.search.optimize import choose_candidate

    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    _json(choose_candidate(frame, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms,
                           predictor=_predictor(artifacts), risk=risk))


def _prices(text: str | None) -> dict[str, float]:
    from tune.errors import InvalidInput

    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InvalidInput(f"--price entries are SYSTEM=USD, got {item!r}") from None
    return out


def _search(**kw: Any) -> None:
    from pydantic import ValidationError

    from tune.errors import InvalidInput
    from tune.search.optimize import optimize as run_optimize
    from tune.search.space import SearchSpace

    try:
        space = SearchSpace(
            model=kw["model"], gpus=tuple(g.strip() for g in kw["gpu"].split(",") if g.strip()),
            num_gpus=kw["num_gpus"], isl=kw["isl"], osl=kw["osl"], concurrency=kw["concurrency"],
            slo_ttft_ms=kw["slo_ttft_ms"], slo_tpot_ms=kw["slo_tpot_ms"],
            slo_e2e_ms=kw["slo_e2e_ms"], objective=kw["objective"],
            price_per_hour_usd=_prices(kw["price"]), risk=kw["risk"],
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(str(p) for p in first['loc']) or 'input'}: {first['msg']}") from None
    predictor = _predictor(kw["artifacts"])
    evaluate = None
    if kw["cluster"] and not kw["measure"]:
        raise InvalidInput("--cluster deploys trials to measure them: add --measure")
    if kw["measure"]:
        from tune.bench import BenchConfig, MeasuringEvaluator

        deployer = None
        if kw["cluster"]:
            if _trial_deployer is None:
                raise InvalidInput("--cluster needs the control plane's deployments (run `foundry optimize`)")
            deployer = _trial_deployer(cluster=kw["cluster"], model=kw["deploy_model"] or space.model,
                                       api=kw["api"], api_key=kw["api_key"])  # fmt: skip
        elif not kw["base_url"]:
            raise InvalidInput("--measure needs --cluster (deploy each trial) or --base-url (an endpoint already serving)")
        template = BenchConfig(
            base_url=kw["base_url"] or "http://unused/v1", model=space.model, isl=space.isl, osl=space.osl,
            concurrency=(1,), requests=kw["requests"], api_key=kw["api_key"],
        )
        evaluate = MeasuringEvaluator(space, template, deployer)
    result = run_optimize(
        space, search=kw["search"], seed=kw["seed"], predictor=predictor,
        driver="ray" if kw["use_ray"] else "inprocess", evaluate=evaluate,
        search_options={"population_size": 16, "generations": 6} if kw["use_ray"]
        and kw["search"] == "ga" else None,
    )
    if kw["as_json"]:
        _json(result.to_json())
        return
    _print_result(result)


def _print_result(result: Any) -> None:
    from rich.table import Table

    from tune.search.deploy import deployment_spec

    out = Console()
    best = result.best
    verdict = "meets the SLOs" if best.meets_slo else "closest to the SLOs (none meets them)"
    out.print(f"[bold]Best configuration[/bold] ({verdict}; {result.evaluated} evaluated of "
              f"{result.space.size}, {result.search}, {result.seconds:.2f} s)")
    table = Table(show_header=False)
    for key, value in best.as_dict().items():
        table.add_row(key, str(value))
    out.print(table)
    if best.case and best.case != "seen":
        err.print(f"[yellow]note:[/yellow] the training data had no rows of this "
                  f"{best.case.removeprefix('unseen_').replace('_', ' and ')}: expect the accuracy "
                  "of that case (README); the SLOs were judged on the upper bound",
                  highlight=False, soft_wrap=True)
    spec = deployment_spec(result.space.model, best, isl=result.space.isl, osl=result.space.osl)
    out.print("[bold]vLLM engine args[/bold]", json.dumps(spec["vllm"]))
    out.print("[bold]Ray Serve deployment[/bold]", json.dumps(spec["ray_serve"]))
    front = Table(title="Pareto front (SLO-meeting; throughput per GPU vs TPOT)")
    for col in ("gpu", "tp", "pp", "replicas", "max_num_seqs", "precision", "TTFT ms",
                "TPOT ms", "tok/s/GPU", "$/Mtok"):
        front.add_column(col)
    for e in result.front:
        c = e.candidate
        front.add_row(c.gpu, str(c.tp), str(c.pp), str(c.replicas), str(c.max_num_seqs),
                      c.precision, f"{e.ttft_ms:.0f}", f"{e.tpot_ms:.1f}",
                      f"{e.output_tps_per_gpu:.0f}", f"{e.cost_per_million_tokens_usd:.3f}")
    out.print(front)


# ------------------------------------------------------------------------------------------
# foundry bench
# ------------------------------------------------------------------------------------------


def bench(
    base_url: Annotated[str, typer.Option("--base-url", help="OpenAI-compatible base URL (…/v1)")],
    model: Annotated[str, typer.Option("--model", help="model name sent in requests")],
    isl: Annotated[int, typer.Option("--isl", help="prompt tokens per request")],
    osl: Annotated[int, typer.Option("--osl", help="max output tokens per request")],
    concurrency: Annotated[str, typer.Option("--concurrency", help="levels, e.g. 1,4,16")] = "1",
    requests: Annotated[int, typer.Option("--requests", help="requests per level")] = 32,
    api_key: Annotated[str | None, typer.Option("--api-key", help="bearer token")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="append rows to this CSV")] = None,
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="tokenizer.json or its directory (exact prompt lengths)")
    ] = None,
    system: Annotated[str, typer.Option("--system", help="system name recorded in the rows")] = "cpu",
    model_path: Annotated[
        str | None, typer.Option("--model-path", help="catalog id recorded as model_path")
    ] = None,
    endpoint: Annotated[str, typer.Option("--endpoint", help="chat or completions")] = "chat",
    tp: Annotated[int, typer.Option("--tp", help="tensor parallelism recorded in the rows")] = 1,
    ignore_eos: Annotated[
        bool, typer.Option("--ignore-eos", help="send vLLM's ignore_eos to force osl tokens")
    ] = False,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="per-request timeout")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="also store the rows in the stack's metrics store")
    ] = True,
    api: Annotated[
        str, typer.Option("--api", envvar="FOUNDRY_API", help="control API that stores the rows")
    ] = "http://127.0.0.1:8000/api",
) -> None:
    """Closed-loop streaming load: TTFT, TPOT/ITL, E2E percentiles and throughput per level.

    Writes rows in the measured-data schema (--out), which `foundry tune train --data` reads.
    """
    with _errors():
        import asyncio

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from tune.bench import (
            BenchConfig,
            bench_rows,
            compare_with_prediction,
            run_bench,
            write_rows,
        )

        config = BenchConfig(
            base_url=base_url, model=model, isl=isl, osl=osl,
            concurrency=_ints(concurrency, "--concurrency"), requests=requests, api_key=api_key,
            endpoint=endpoint,  # type: ignore[arg-type]
            tokenizer=tokenizer, system=system, model_path=model_path, tp_size=tp,
            timeout_s=timeout_s, ignore_eos=ignore_eos,
        )
        with Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=False) as progress:
            tasks = {
                level: progress.add_task(f"concurrency {level}", total=requests)
                for level in config.concurrency
            }
            update: Callable[[int, Any], None] = lambda level, _r: progress.advance(tasks[level])
            results = asyncio.run(run_bench(config, on_done=update))
        rows = bench_rows(config, results)
        for note in compare_with_prediction(rows):
            err.print(f"[yellow]prediction off:[/yellow] {note}", highlight=False, soft_wrap=True)
        if out is not None:
            write_rows(rows, out)
            err.print(f"{len(rows)} rows -> {out}")
        if record:
            err.print(_record_rows(rows, api))
        if as_json:
            _json(rows)
        else:
            _print_bench(rows)


def _record_rows(rows: list[dict[str, Any]], api: str) -> str:
    """POST the rows to the control API (admin key from FOUNDRY_API_KEY / FOUNDRY_ADMIN_KEY).
    The benchmark's own result stands either way, so a failure here is a note, not an error."""
    import os

    import httpx

    key = os.environ.get("FOUNDRY_API_KEY") or os.environ.get("FOUNDRY_ADMIN_KEY")
    if not key:
        return "rows not stored in the metrics store: set FOUNDRY_ADMIN_KEY (or pass --no-record)"
    try:
        r = httpx.post(f"{api.rstrip('/')}/benchmarks", json={"rows": rows},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    except httpx.HTTPError as exc:
        return f"rows not stored in the metrics store: cannot reach {api} ({type(exc).__name__})"
    if r.status_code != 201:
        return f"rows not stored in the metrics store: the control API answered {r.status_code}"
    return f"{r.json()['inserted']} rows stored in the metrics store ({api}/benchmarks)"


def _print_bench(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="foundry bench")
    columns = [
        ("concurrency", "batch_size", "{:.0f}"), ("ok", "requests_ok", "{:.0f}"),
        ("failed", "requests_failed", "{:.0f}"), ("TTFT mean", "silicon_ttft_ms", "{:.1f}"),
        ("TTFT p99", "ttft_p99_ms", "{:.1f}"), ("TPOT mean", "silicon_tpot_ms", "{:.2f}"),
        ("ITL p99", "itl_p99_ms", "{:.2f}"), ("E2E p50", "e2e_p50_ms", "{:.0f}"),
        ("E2E p99", "e2e_p99_ms", "{:.0f}"), ("out tok/s", "output_tps", "{:.1f}"),
        ("req/s", "requests_per_s", "{:.2f}"),
    ]
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) for _, key, fmt in columns))
    Console().print(table)


# ------------------------------------------------------------------------------------------
# foundry tune ...
# ------------------------------------------------------------------------------------------


def _store_rows(api: str, since: str | None) -> Any:
    """`foundry bench` rows stored in the metrics store (GET /api/benchmarks), as a frame."""
    import os

    import httpx

    from tune.errors import DataError
    from tune.predict.perfdata import measured_frame

    key = os.environ.get("FOUNDRY_API_KEY") or os.environ.get("FOUNDRY_ADMIN_KEY")
    if not key:
        raise DataError("--from-store needs an admin key in FOUNDRY_ADMIN_KEY (or FOUNDRY_API_KEY)")
    try:
        r = httpx.get(f"{api.rstrip('/')}/benchmarks", headers={"Authorization": f"Bearer {key}"},
                      timeout=60)
    except httpx.HTTPError as exc:
        raise DataError(f"cannot reach the control API at {api} ({type(exc).__name__})") from exc
    if r.status_code != 200:
        raise DataError(f"the control API answered {r.status_code} to GET {api}/benchmarks")
    return measured_frame(r.json()["data"], source="store", since=since)


def _load_data(data: list[Path] | None, *, from_store: bool = False, since: str | None = None,
               api: str = "") -> Any:
    import pandas as pd

    from tune.predict.perfdata import default_data_dir, load_measured
    from tune.predict.training import usable_rows

    paths = list(data or [])
    if not paths and not from_store:
        paths = [default_data_dir()]
    frames = [load_measured(path) for path in paths]
    if from_store:
        stored = _store_rows(api, since)
        err.print(f"{len(stored)} rows from the metrics store" + (f" since {since}" if since else ""))
        frames.append(stored)
    frame = pd.concat(frames, ignore_index=True)
    frame, skipped = usable_rows(frame)
    for line in skipped:
        err.print(f"[yellow]skipped:[/yellow] {line}", highlight=False)
    if frame.empty:
        from tune.errors import DataError

        raise DataError("no usable training rows")
    return frame


def _print_cv(report: Any, title: str = "Cross-validation") -> None:
    from rich.table import Table

    out = Console()
    table = Table(title=f"{title} ({report.rows} rows; pooled out-of-fold errors)")
    for col in ("scheme", "target", "MAPE", "median APE", "p90 APE", "signed mean error",
                "p90 covers"):
        table.add_column(col, justify="right" if col != "scheme" else "left")
    for row in report.table_rows():
        table.add_row(*row)
    out.print(table)
    if report.picking:
        picks = Table(title=f"Picking among measured configurations (SLO = group medians, "
                            f"risk {report.risk:g})")
        for col in ("scheme", "groups", "met SLO", "wrong picks", "fallbacks", "median regret"):
            picks.add_column(col, justify="right" if col != "scheme" else "left")
        for row in report.picking_rows():
            picks.add_row(*row)
        out.print(picks)
    for level, by_scheme in report.picking_by_risk.items():
        for scheme, p in by_scheme.items():
            out.print(f"  risk {level}: {scheme}: met SLO {p['met_slo_pct']:.1f}%, "
                      f"{p['wrong_picks']} wrong, {p['fallback_picks']} fallbacks, "
                      f"median regret {p['median_regret_pct']:.1f}%", highlight=False)


def _print_recorded_cv(metadata: dict[str, Any], title: str) -> None:
    from rich.table import Table

    cv = metadata.get("cross_validation") or {}
    table = Table(title=f"{title} ({cv.get('rows', '?')} rows)")
    for col in ("scheme", "target", "MAPE", "median APE", "signed mean error"):
        table.add_column(col, justify="right" if col != "scheme" else "left")
    for scheme, by_target in (cv.get("results") or {}).items():
        for target, m in by_target.items():
            table.add_row(scheme, target.upper(), f"{m['mape']:.1f}%", f"{m['median_ape']:.1f}%",
                          f"{m['signed_mean_error']:+.1f}%")
    Console().print(table if cv else f"{title}: none recorded")


_DATA_HELP = "measured-data CSV or directory; repeat for several (default: $FOUNDRY_PERFDATA or ../shared/perfdata)"


@tune_app.command("train")
def train(
    data: Annotated[list[Path] | None, typer.Option("--data", help=_DATA_HELP)] = None,
    from_store: Annotated[
        bool, typer.Option("--from-store", help="also train on `foundry bench` rows stored in the metrics store")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="with --from-store: only rows measured at or after this ISO 8601 time")
    ] = None,
    api: Annotated[
        str, typer.Option("--api", envvar="FOUNDRY_API", help="control API holding the stored rows")
    ] = "http://127.0.0.1:8000/api",
    out: Annotated[
        Path | None, typer.Option("--out", help="write the artifacts to this directory instead of a new version under $FOUNDRY_HOME/tune")
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="make the new version the one that predicts")
    ] = True,
    cv: Annotated[bool, typer.Option("--cv/--no-cv", help="run and record cross-validation (needed for the p90 intervals)")] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train the TTFT/TPOT predictor and version its artifacts under $FOUNDRY_HOME/tune.

    Prints the cross-validation recorded with the version that predicted before and the one of
    the new version, then makes the new version active (foundry tune status shows it).
    """
    with _errors():
        from tune.errors import TuneError
        from tune.predict.predictor import ArtifactStore, Predictor
        from tune.predict.training import cross_validate
        from tune.predict.training import train as fit

        frame = _load_data(data, from_store=from_store, since=since, api=api)
        store = ArtifactStore.default()
        try:
            before = Predictor.load().metadata
        except TuneError:  # no usable predictor before: nothing to compare with
            before = {}
        report = None
        if cv:
            err.print(f"cross-validating on {len(frame)} rows ...")
            report = cross_validate(frame, seed=seed)
        predictor = fit(frame, seed=seed, cv=report)
        if before:
            _print_recorded_cv(before, f"Before: {before.get('version', 'shipped')} "
                                       f"({before.get('training_rows', '?')} training rows)")
        if report is not None:
            _print_cv(report, "After: the new predictor")
        if out is not None:
            for path in predictor.save(out):
                err.print(f"wrote {path}")
            return
        name = store.add(predictor, activate=activate)
        state = "active" if activate else "not active (foundry tune activate " + name + ")"
        err.print(f"version {name} in {store.versions_dir / name}: {len(frame)} rows, {state}")


@tune_app.command("cv")
def cv_command(
    data: Annotated[list[Path] | None, typer.Option("--data", help=_DATA_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    risk: Annotated[float, typer.Option("--risk", help="risk of the picking evaluation's SLO check")] = 0.1,
    also_risk: Annotated[
        list[float] | None, typer.Option("--also-risk", help="also evaluate picking at this risk (repeatable)")
    ] = None,
    scheme: Annotated[
        list[str] | None, typer.Option("--scheme", help="random, leave_one_model_out, leave_one_gpu_out (default: all)")
    ] = None,
) -> None:
    """Cross-validate the predictor recipe (random 5-fold, leave one model out, leave one GPU
    out): MAPE, median and p90 APE, signed mean error, p90 coverage, and the picking
    evaluation (does the chosen configuration meet the SLO by the measured values?)."""
    with _errors():
        from tune.errors import InvalidInput
        from tune.predict.predictor import check_risk
        from tune.predict.training import SCHEMES, cross_validate

        check_risk(risk)
        schemes = tuple(scheme or SCHEMES)
        unknown = [s for s in schemes if s not in SCHEMES]
        if unknown:
            raise InvalidInput(f"unknown --scheme {unknown[0]!r}; known: {', '.join(SCHEMES)}")
        for level in also_risk or []:
            check_risk(level)
        report = cross_validate(_load_data(data), seed=seed, risk=risk, schemes=schemes,
                                picking_risks=tuple(also_risk or ()))
        if as_json:
            _json(report.to_json())
        else:
            _print_cv(report)


@tune_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Which predictor version predicts, trained on what data, and how accurate it was."""
    with _errors():
        from tune.predict.predictor import ArtifactStore, Predictor

        store = ArtifactStore.default()
        predictor = Predictor.load()
        meta = predictor.metadata
        cv = meta.get("cross_validation") or {}
        info = {
            "active": store.active() or "shipped",
            "path": meta.get("loaded_from"),
            "versions": store.versions(),
            "created_utc": meta.get("created_utc"),
            "training_rows": meta.get("training_rows"),
            "training_sources": meta.get("training_sources"),
            "training_data_sha256": meta.get("training_data_sha256"),
            "systems": meta.get("systems"),
            "architectures": meta.get("architectures"),
            "intervals": bool(meta.get("intervals")),
            "cross_validation": cv.get("results"),
            "picking": cv.get("picking"),
        }
        if as_json:
            _json(info)
            return
        out = Console()
        out.print(f"[bold]predictor[/bold] {info['active']} ({info['path']})")
        for key in ("created_utc", "training_rows", "training_sources", "systems",
                    "training_data_sha256", "versions"):
            value = info[key]
            text = (", ".join(map(str, value)) or "none") if isinstance(value, list) else value
            out.print(f"  {key}: {text}", highlight=False)
        if not info["intervals"]:
            out.print("  [yellow]no intervals[/yellow]: trained without cross-validation, "
                      "pred_*_p90 equal the point predictions")
        _print_recorded_cv(meta, "Cross-validation recorded with it")


@tune_app.command("activate")
def activate_version(version: Annotated[str, typer.Argument(help="e.g. v0003 (see foundry tune status)")]) -> None:
    """Make a trained version the one that predicts (roll back or forward)."""
    with _errors():
        from tune.predict.predictor import ArtifactStore

        store = ArtifactStore.default()
        store.activate(version)
        err.print(f"{version} is active ({store.versions_dir / version})")


@tune_app.command("models")
def models() -> None:
    """List the built-in model catalog (parameters and KV bytes per token)."""
    from rich.table import Table

    from tune.catalog.architectures import CATALOG

    table = Table(title="Model catalog")
    for col in ("id", "family", "layers", "total B", "active B", "KV KiB/token (bf16)"):
        table.add_column(col)
    for key in sorted(CATALOG):
        a = CATALOG[key]
        table.add_row(a.name, a.family, str(a.num_layers), f"{a.total_params / 1e9:.1f}",
                      f"{a.active_params / 1e9:.1f}", f"{a.kv_bytes_per_token() / 1024:.1f}")
    Console().print(table)


@tune_app.command("gpus")
def gpus() -> None:
    """List the GPU catalog (dense TFLOP/s, HBM, memory, interconnect, price)."""
    from rich.table import Table

    from tune.catalog.hardware import GPUS

    table = Table(title="GPU catalog (per GPU, dense tensor-core figures)")
    for col in ("system", "bf16 TFLOP/s", "fp8", "fp4", "HBM GB/s", "GB", "link GB/s",
                "NVLink domain", "$/h"):
        table.add_column(col)
    for g in GPUS.values():
        table.add_row(g.name, f"{g.bf16_dense_tflops:.0f}", f"{g.fp8_dense_tflops or 0:.0f}",
                      f"{g.fp4_dense_tflops or 0:.0f}", f"{g.hbm_bandwidth_gbs:.0f}",
                      f"{g.memory_gb:.0f}", f"{g.interconnect_gbs:.0f}",
                      str(g.nvlink_domain_gpus), f"{g.price_per_hour_usd:.2f}")
    Console().print(table)
