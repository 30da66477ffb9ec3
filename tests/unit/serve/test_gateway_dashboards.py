"""The shipped Grafana dashboards query only metrics the gateway exports, with their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import serve.gateway.telemetry as telemetry

DASHBOARDS = sorted((Path(__file__).parents[3] / "cluster_configs" / "grafana").glob("*.json"))
# name -> labels, from the table in serve/gateway/telemetry.py's docstring
EXPORTED = {
    m.group(1): {"le"} | {label.strip() for label in re.sub(r"\(.*?\)", "", m.group(3)).split(",")}
    for m in re.finditer(r"^\s+(foundry_gateway_\w+)\s+(counter|histogram)\s+(.+)$", telemetry.__doc__, re.M)
}


def ray_name(name: str) -> str | None:
    """``ray_foundry_gateway_x_total`` -> ``foundry_gateway_x``, as Ray and Prometheus name them."""
    base = re.sub(r"^ray_", "", name)
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        base = base.removesuffix(suffix)
    return base if base in EXPORTED else None


def test_the_docstring_table_lists_what_telemetry_exports():
    exported = {m.name.removesuffix("_total") for m in telemetry.Telemetry().registry.collect()}
    assert set(EXPORTED) <= exported
    assert {"foundry_gateway_requests", "foundry_gateway_cost_usd", "foundry_gateway_ttft_seconds"} <= set(EXPORTED)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_exported_metrics_and_labels(path):
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        names = re.findall(r"\b(ray_foundry_\w+)", expr)
        assert names, expr
        for name in names:
            metric = ray_name(name)
            assert metric is not None, f"{path.name}: {name} is not exported"
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr) + re.findall(r"by \(([^)]*)\)", expr):
                for part in label.split(","):
                    assert part.strip() in EXPORTED[metric], f"{path.name}: {metric} has no label {part.strip()!r}"
