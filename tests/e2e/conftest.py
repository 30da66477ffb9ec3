"""Session fixture: one stack for the e2e tests, started as a user starts it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e_support import free_port, start_stack


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("foundry") / "home"


@pytest.fixture(scope="session")
def stack(stack_home):
    s = start_stack(stack_home, free_port())
    yield s
    s.stop()
    if os.environ.get("FOUNDRY_KEEP_E2E_HOME") is None:
        shutil.rmtree(stack_home, ignore_errors=True)
