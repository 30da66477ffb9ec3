"""`foundry deployments render --target kuberay`: the RayService for a cluster not registered,
written without a stack (the optimizer's pick, admitted by KubeRay's schemas)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from control.cli import app
from control.kuberay.schema import admit

pytestmark = pytest.mark.slow  # the optimizer's search


def test_render_writes_an_admitted_rayservice_whose_gpus_fit(tmp_path):
    out = tmp_path / "llama-70b.yaml"
    result = CliRunner().invoke(app, [
        "deployments", "render", "meta-llama/Llama-3.1-70B-Instruct", "--target", "kuberay", "--gpu", "h100_sxm",
        "--num-gpus", "8", "--isl", "2048", "--osl", "512", "--concurrency", "64", "--slo-ttft-ms", "1000",
        "--slo-tpot-ms", "50", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(out.read_text())
    assert manifest["kind"] == "RayService"
    admit(manifest)
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpus = sum(int(w["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               * w["maxReplicas"] * (w.get("numOfHosts") or 1) for w in workers)  # fmt: skip
    assert 0 < gpus <= 8


def test_render_says_what_is_missing_or_wrong():
    runner = CliRunner()
    both = runner.invoke(app, ["deployments", "render", "m", "--out", "x.yaml"])
    assert both.exit_code == 1 and "--cluster C, or --target kuberay" in both.output
    partial = runner.invoke(app, ["deployments", "render", "m", "--target", "kuberay", "--out", "x.yaml"])
    assert partial.exit_code == 1 and "--gpu TYPE and --num-gpus N" in partial.output
    unknown = runner.invoke(app, ["deployments", "render", "meta-llama/Llama-3.1-8B-Instruct", "--target", "kuberay",
                                  "--gpu", "tpu-v9", "--num-gpus", "1", "--out", "x.yaml"])  # fmt: skip
    assert unknown.exit_code == 1 and "tpu-v9" in unknown.output
