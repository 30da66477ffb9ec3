"""The Dockerfile builds the image the KubeRay manifests name, on the Ray and Python that
pyproject.toml pins (pods of other versions would not join the cluster)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from control.kuberay.manifests import IMAGE, IMAGE_REPOSITORY, RAY_VERSION

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert match, f"Dockerfile has no ARG {name}=..."
    return match.group(1)


def test_ray_and_python_match_pyproject():
    [ray_pin] = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")]
    pinned = ray_pin.split("==")[1]
    assert arg("RAY_VERSION") == pinned == RAY_VERSION
    major, minor = re.fullmatch(r"py(\d)(\d+)", arg("PYTHON_TAG")).groups()
    low, high = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).groups()
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= (int(major), int(minor)) < as_tuple(high)
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu" in DOCKERFILE


def test_installs_every_package_with_the_vllm_extra():
    assert "vllm" in " ".join(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    assert 'pip install ".[gpu]"' in DOCKERFILE
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY --chown=ray:users {package} ./{package}" in DOCKERFILE


def test_the_manifests_name_this_version():
    assert IMAGE == f"{IMAGE_REPOSITORY}:{PYPROJECT['project']['version']}"


def test_no_secrets_or_local_state_go_in():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".foundry", "tests", ".pytest_cache"} <= set(ignored)
    assert not re.search(r"(?i)^(ENV|ARG)\s+\S*(KEY|TOKEN|SECRET|PASSWORD)", DOCKERFILE, re.MULTILINE)
