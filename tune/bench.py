"""``foundry bench``: closed-loop load against an OpenAI-compatible endpoint, measuring the truth.

For each concurrency level ``C``, ``C`` workers keep exactly one streaming request in flight
each until ``requests`` requests have completed (a closed loop, like the measured data). Every
request streams (``stream: true`` with ``stream_options.include_usage``) over the official wire
format, so the client sees each token as it leaves the server:

* TTFT: request sent -> first chunk carrying text;
* ITL: gaps between text chunks; TPOT: (E2E - TTFT) / (output tokens - 1), output tokens from
  the final ``usage`` chunk (chunk count when the server sends no usage);
* E2E, output tokens/s and requests/s over the level's wall time.

Prompts have an exact token count when a tokenizer is available (``tokenizer.json`` file or a
directory holding one): random common words are encoded, cut to ``isl`` tokens and decoded, and
every prompt starts with a distinct number so no two share a cacheable prefix. Without a
tokenizer a prompt is ``isl`` common English words, which BPE tokenizers encode as about one
token each (within a few percent). Chat requests add the chat template's tokens on top; the
``completions`` endpoint sends the prompt as is. The measured prompt length is reported.

Results become rows of the measured-data schema (``backend="foundry"``, mean TTFT/TPOT in
``silicon_ttft_ms``/``silicon_tpot_ms``, percentiles in extra columns), which
``foundry tune train --data`` reads.

Example:
    >>> from tune.bench import BenchConfig
    >>> BenchConfig(base_url="http://localhost:9000/v1", model="m", isl=128, osl=32,
    ...             concurrency=(1, 4), requests=8).endpoint
    'chat'
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from tune.errors import BenchError, InvalidInput
from tune.predict.schema import MEASURED_COLUMNS

__all__ = [
    "BenchConfig",
    "LevelResult",
    "MeasuringEvaluator",
    "TrialDeployer",
    "TrialEndpoint",
    "TrialUnavailable",
    "PromptFactory",
    "RequestRecord",
    "bench_rows",
    "compare_with_prediction",
    "run_bench",
    "write_rows",
]

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which she "
    "do how their if will up other about out many then them these so some her would make like "
    "him into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part over new sound take "
    "only little work know place year live me back give most very after thing our just name good "
    "sentence man think say great where help through much before line right too mean old any same "
    "tell boy follow came want show also around form three small set put end does another well "
    "large must big even such because turn here why ask went men read need land different home us "
    "move try kind hand picture again change off play spell air away animal house point page letter"
).split()


class PromptFactory:
    """Prompts of (exactly, with a tokenizer) ``isl`` tokens, distinct from their first token."""

    def __init__(self, tokenizer: str | Path | None = None, *, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._tokenizer = None
        if tokenizer:
            from tokenizers import Tokenizer

            path = Path(tokenizer).expanduser()
            if path.is_dir():
                path = path / "tokenizer.json"
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception on bad files
                raise InvalidInput(f"cannot load tokenizer {path}: {exc}") from exc

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def make(self, isl: int, index: int) -> str:
        words = [str(index)] + [self._rng.choice(_WORDS) for _ in range(isl + 8)]
        if self._tokenizer is None:
            return " ".join(words[:isl])
        tok = self._tokenizer
        text = " ".join(words)
        while len(tok.encode(text, add_special_tokens=False).ids) < isl:
            text += " " + " ".join(self._rng.choice(_WORDS) for _ in range(isl))
        ids = tok.encode(text, add_special_tokens=False).ids[:isl]
        for _ in range(8):  # decode/encode may merge at the cut; trim until it round-trips
            text = tok.decode(ids)
            again = tok.encode(text, add_special_tokens=False).ids
            if len(again) == isl:
                return text
            ids = again[:isl] if len(again) > isl else ids[: len(ids) - 1]
        return text


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: an endpoint, a workload and the concurrency levels to sweep."""

    base_url: str
    model: str
    isl: int
    osl: int
    concurrency: tuple[int, ...]
    requests: int
    api_key: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    tokenizer: str | None = None
    system: str = "cpu"
    model_path: str | None = None  # catalog id for the rows; defaults to ``model``
    tp_size: int = 1
    timeout_s: float = 600.0
    ignore_eos: bool = False  # vLLM extension: always generate ``osl`` tokens
    seed: int = 0

    def __post_init__(self) -> None:
        if self.isl < 1 or self.osl < 1 or self.requests < 1:
            raise InvalidInput("isl, osl and requests must be at least 1")
        if not self.concurrency or min(self.concurrency) < 1:
            raise InvalidInput("concurrency levels must be positive integers")
        if self.endpoint not in ("chat", "completions"):
            raise InvalidInput("endpoint must be chat or completions")


@dataclass
class RequestRecord:
    """What one request measured (``error`` set when it failed)."""

    ttft_ms: float = float("nan")
    e2e_ms: float = float("nan")
    itl_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str | None = None

    @property
    def tpot_ms(self) -> float:
        if self.output_tokens > 1:
            return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)
        return float("nan")


@dataclass
class LevelResult:
    """All requests of one concurrency level and the level's wall time."""

    concurrency: int
    records: list[RequestRecord]
    duration_s: float

    def summary(self) -> dict[str, float]:
        ok = [r for r in self.records if r.error is None]
        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(values, q)) if values else float("nan")
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")
        ttft = [r.ttft_ms for r in ok]
        tpot = [r.tpot_ms for r in ok if r.output_tokens > 1]
        e2e = [r.e2e_ms for r in ok]
        itl = [x for r in ok for x in r.itl_ms]
        tokens = sum(r.output_tokens for r in ok)
        prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
        return {
            "requests_ok": len(ok),
            "requests_failed": len(self.records) - len(ok),
            "ttft_mean_ms": mean(ttft), "ttft_p50_ms": pct(ttft, 50),
            "ttft_p90_ms": pct(ttft, 90), "ttft_p99_ms": pct(ttft, 99),
            "tpot_mean_ms": mean(tpot), "tpot_p50_ms": pct(tpot, 50),
            "tpot_p90_ms": pct(tpot, 90), "tpot_p99_ms": pct(tpot, 99),
            "itl_mean_ms": mean(itl), "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99),
            "e2e_mean_ms": mean(e2e), "e2e_p50_ms": pct(e2e, 50),
            "e2e_p90_ms": pct(e2e, 90), "e2e_p99_ms": pct(e2e, 99),
            "output_tokens_mean": tokens / len(ok) if ok else float("nan"),
            "prompt_tokens_mean": mean([float(p) for p in prompts]),
            "output_tps": tokens / self.duration_s if self.duration_s > 0 else float("nan"),
            "requests_per_s": len(ok) / self.duration_s if self.duration_s > 0 else float("nan"),
            "duration_s": self.duration_s,
        }


def _request_body(config: BenchConfig, prompt: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.osl,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if config.ignore_eos:
        body["ignore_eos"] = True
    if config.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/chat/completions", body
    body["prompt"] = prompt
    return "/completions", body


def _chunk_text(chunk: dict[str, Any]) -> str:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("reasoning_content") or choice.get("text")
        if text:
            return str(text)
    return ""


async def _one_request(client: httpx.AsyncClient, config: BenchConfig, prompt: str) -> RequestRecord:
    path, body = _request_body(config, prompt)
    record = RequestRecord()
    chunks = 0
    started = time.perf_counter()
    last = started
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                record.error = f"HTTP {response.status_code}: {text}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    record.error = f"malformed stream chunk: {data[:100]}"
                    return record
                if "error" in chunk:
                    record.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                    return record
                now = time.perf_counter()
                if _chunk_text(chunk):
                    chunks += 1
                    if chunks == 1:
                        record.ttft_ms = (now - started) * 1e3
                    else:
                        record.itl_ms.append((now - last) * 1e3)
                    last = now
                usage = chunk.get("usage")
                if usage:
                    record.output_tokens = int(usage.get("completion_tokens") or 0)
                    record.prompt_tokens = usage.get("prompt_tokens")
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        return record
    record.e2e_ms = (time.perf_counter() - started) * 1e3
    if not record.output_tokens:
        record.output_tokens = chunks
    if chunks == 0:
        record.error = "the stream carried no text"
    return record


async def run_level(
    config: BenchConfig,
    concurrency: int,
    prompts: PromptFactory,
    *,
    on_done: Callable[[RequestRecord], None] | None = None,
    client: httpx.AsyncClient | None = None,
) -> LevelResult:
    """One closed-loop level: ``concurrency`` workers until ``config.requests`` complete."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    own = client is None
    client = client or httpx.AsyncClient(
        base_url=config.base_url.rstrip("/"), headers=headers,
        timeout=httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0)),
        limits=httpx.Limits(max_connections=concurrency + 4),
    )
    records: list[RequestRecord] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < config.requests:
            index = issued
            issued += 1
            prompt = prompts.make(config.isl, index)
            record = await _one_request(client, config, prompt)
            records.append(record)
            if on_done:
                on_done(record)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if own:
            await client.aclose()
    return LevelResult(concurrency, records, time.perf_counter() - started)


async def run_bench(
    config: BenchConfig, *, on_done: Callable[[int, RequestRecord], None] | None = None
) -> list[LevelResult]:
    """Every concurrency level of ``config``, in order. Raises :class:`BenchError` when a
    level completes no request at all (the message carries the first error)."""
    prompts = await asyncio.to_thread(PromptFactory, config.tokenizer, seed=config.seed)
    results = []
    for level in config.concurrency:
        callback = (lambda r, lv=level: on_done(lv, r)) if on_done else None
        result = await run_level(config, level, prompts, on_done=callback)
        if not any(r.error is None for r in result.records):
            first = next((r.error for r in result.records if r.error), "no response")
            raise BenchError(f"concurrency {level}: every request failed; first error: {first}")
        results.append(result)
    return results


def bench_rows(config: BenchConfig, results: list[LevelResult]) -> list[dict[str, Any]]:
    """Rows of the measured-data schema (plus percentile columns), one per level."""
    from tune import __version__

    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    measured = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    model_path = config.model_path or config.model
    rows = []
    for result in results:
        s = result.summary()
        slug = model_path.replace("/", "_").lower()
        rows.append({
            "id": f"foundry_bench_{slug}_{config.system}_{config.isl}x{config.osl}"
                  f"_c{result.concurrency}_{stamp}",
            "backend": "foundry", "backend_version": __version__, "model_path": model_path,
            "system": config.system, "precision": "", "gemm_quant_mode": "", "moe_quant_mode": "",
            "isl": config.isl, "osl": config.osl, "batch_size": result.concurrency,
            "tp_size": config.tp_size, "pp_size": 1, "attention_dp_size": 1,
            "moe_tp_size": config.tp_size, "moe_ep_size": 1,
            "silicon_ttft_ms": s["ttft_mean_ms"], "silicon_tpot_ms": s["tpot_mean_ms"],
            **{k: v for k, v in s.items() if k not in ("ttft_mean_ms", "tpot_mean_ms")},
            "endpoint": config.endpoint, "exact_prompt_tokens": config.tokenizer is not None,
            "measured_utc": measured,
        })
    return rows


def compare_with_prediction(rows: list[dict[str, Any]], predictor: Any = None) -> list[str]:
    """Add the active predictor's view to each row, in place, and return a note per row whose
    measurement falls outside the predicted 10th-90th percentile interval.

    Each row gains ``pred_ttft_ms``, ``pred_tpot_ms``, their p10 and p90, ``pred_case``,
    ``pred_version`` and ``outside_interval``; stored with the row, the measurement is the
    next training row of ``foundry tune train --from-store``. Rows the catalogs cannot price
    (a model name that is not a catalog id or a config.json) are left as they are.
    """
    import pandas as pd

    from tune.errors import TuneError
    from tune.predict.features import build_features
    from tune.predict.predictor import Predictor
    from tune.predict.workload import invalid_rows

    if not rows:
        return []
    frame = pd.DataFrame(rows)
    invalid = invalid_rows(frame)
    keep = [i for i in range(len(rows)) if i not in invalid]
    if not keep:
        return []
    try:
        predictor = predictor or Predictor.load()
    except TuneError as exc:
        return [f"no prediction to compare with: {exc}"]
    features = build_features(frame.iloc[keep])
    upper = predictor.predict_features(features, risk=0.1)
    lower = predictor.predict_features(features, risk=0.9)
    version = predictor.metadata.get("version", "shipped")
    notes = []
    for j, i in enumerate(keep):
        row = rows[i]
        outside = []
        for target, column in (("ttft", "silicon_ttft_ms"), ("tpot", "silicon_tpot_ms")):
            low, high = float(lower[f"{target}_bound"][j]), float(upper[f"{target}_bound"][j])
            row[f"pred_{target}_ms"] = float(upper[target][j])
            row[f"pred_{target}_ms_p10"], row[f"pred_{target}_ms_p90"] = low, high
            measured = float(row[column])
            if not low <= measured <= high:
                outside.append(f"{target.upper()} {measured:.1f} ms outside {low:.1f}-{high:.1f}")
        row["pred_case"] = str(upper["case"][j])
        row["pred_version"] = version
        row["outside_interval"] = bool(outside)
        if outside:
            notes.append(f"concurrency {row['batch_size']}: {'; '.join(outside)} "
                         f"(predictor {version}, {row['pred_case']}): a training row for "
                         "`foundry tune train --from-store`")
    return notes


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write (or append to) a CSV: measured-data columns first, extras after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extras = [k for k in rows[0] if k not in MEASURED_COLUMNS] if rows else []
    columns = [*MEASURED_COLUMNS, *extras]
    exists = path.exists() and path.stat().st_size > 0
    with path.open("a" if exists else "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class TrialEndpoint:
    """Where a deployed trial answers: an OpenAI-compatible base URL, the model name, a key."""

    base_url: str
    model: str
    api_key: str | None = None


class TrialUnavailable(Exception):
    """This candidate cannot be deployed where the trials run (the reason is the message)."""


class TrialDeployer(Protocol):
    """Deploys one candidate for measuring and removes it afterwards (the control plane's
    deployments, ``foundry optimize --measure --cluster C``)."""

    def deploy(self, candidate: Any) -> TrialEndpoint: ...

    def remove(self, candidate: Any) -> None: ...


class MeasuringEvaluator:
    """Evaluate search candidates by benchmarking instead of predicting (``--measure``).

    Each candidate is measured at its per-replica load (``ceil(C / replicas)`` concurrent
    users). With a ``deployer`` each candidate is deployed first (its GPU type, TP/PP, replicas
    and ``max_num_seqs`` applied), measured at the endpoint the deployer returns, and removed
    after, one at a time; a candidate the deployer cannot place fails with its reason. Without
    one every candidate is measured against ``template.base_url`` (whatever serves there).
    Throughput per GPU is the measured output tokens/s over the replica's GPUs. Memory and
    divisibility constraints are still checked with the physics; infeasible candidates are not
    benchmarked.
    """

    def __init__(self, space: Any, template: BenchConfig, deployer: TrialDeployer | None = None) -> None:
        self.space = space
        self.template = template
        self.deployer = deployer
        self._checker: Any = None  # the physics check, loaded where the trials run

    def __call__(self, candidates: list[Any]) -> list[Any]:
        from dataclasses import replace

        from tune.predict.predictor import Predictor
        from tune.search.space import Evaluation, Evaluator

        if self._checker is None:
            self._checker = Evaluator(self.space, Predictor.load())
        checks = self._checker(candidates)
        out = []
        for candidate, check in zip(candidates, checks, strict=True):
            if not check.feasible:
                out.append(check)
                continue
            if self.deployer is None:
                out.append(self._measure(candidate, check, self.template))
                continue
            try:
                endpoint = self.deployer.deploy(candidate)
            except TrialUnavailable as exc:
                out.append(Evaluation.failed(candidate, str(exc)))
                continue
            try:
                config = replace(self.template, base_url=endpoint.base_url, model=endpoint.model,
                                 api_key=endpoint.api_key or self.template.api_key)  # fmt: skip
                out.append(self._measure(candidate, check, config))
            finally:
                self.deployer.remove(candidate)
        return out

    def _measure(self, candidate: Any, check: Any, template: BenchConfig) -> Any:
        from dataclasses import replace

        from tune.predict.serving import slo_violation
        from tune.search.space import Evaluation

        load = -(-self.space.concurrency // candidate.replicas)
        config = replace(template, concurrency=(load,), requests=max(template.requests, load))
        try:
            (result,) = asyncio.run(run_bench(config))
        except BenchError as exc:
            return Evaluation.failed(candidate, str(exc))
        s = result.summary()
        ttft, tpot = s["ttft_mean_ms"], s["tpot_mean_ms"]
        e2e = s["e2e_mean_ms"]
        tps_gpu = s["output_tps"] / candidate.gpus_per_replica
        space = self.space
        violation = float(slo_violation(
            ttft, tpot, slo_ttft_ms=space.slo_ttft_ms, slo_tpot_ms=space.slo_tpot_ms,
            e2e=e2e, slo_e2e_ms=space.slo_e2e_ms))
        return replace(
            check, ttft_ms=ttft, tpot_ms=tpot, e2e_ms=e2e, output_tps_per_gpu=tps_gpu,
            output_tps_total=tps_gpu * check.gpus_used,
            cost_per_million_tokens_usd=check.gpus_used
            * space.gpu(candidate.gpu).price_per_hour_usd
            / max(tps_gpu * check.gpus_used * 3600.0, 1e-9) * 1e6,
            violation=violation, ttft_bound_ms=ttft, tpot_bound_ms=tpot,
        )
