"""Fixtures for the runtime tests: the built-in tiny model, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from serve.runtimes.tiny import ensure_tiny_model


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tests share a few cores with other processes; several intra-op threads then spin-wait on
    each other (10x slower forwards on a loaded 2-core machine). One thread keeps them quick."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``foundry-tiny`` built into a session-wide temporary Foundry home (about 2 s)."""
    return ensure_tiny_model(tmp_path_factory.mktemp("foundry-home"))
