"""Helpers to start the stack as a user does: ``foundry up`` in a subprocess, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_KEY = "sk-fnd-e2e-admin-key-0123456789abcdefghijklmnopqrstuv"
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def foundry_bin() -> str:
    return str(Path(sys.executable).with_name("foundry"))


@dataclass
class RunningStack:
    proc: subprocess.Popen
    home: Path
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        return {**os.environ, "FOUNDRY_HOME": str(self.home), "FOUNDRY_ADMIN_KEY": ADMIN_KEY, "FOUNDRY_API": self.api_url}

    def cli(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [foundry_bin(), *args], env=env or self.env(), capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"foundry {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                raise AssertionError("foundry up did not stop within the timeout:\n" + self.log())
        return self.proc.returncode


def start_stack(home: Path, port: int, config: Path | None = None, timeout_s: float = START_TIMEOUT_S) -> RunningStack:
    log_path = home.parent / f"foundry-up-{port}.log"
    env = {**os.environ, "FOUNDRY_HOME": str(home), "FOUNDRY_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    args = [foundry_bin(), "up", "--port", str(port)]
    if config:
        args += ["--config", str(config)]
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = RunningStack(proc, home, port, log_path)
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"foundry up exited with {proc.returncode}:\n{stack.log()}")
        try:
            ok = httpx.get(f"{stack.base_url}/models", headers=headers, timeout=5).status_code == 200
            ok = ok and httpx.get(f"{stack.api_url}/health", timeout=5).status_code == 200
            if ok and "Foundry is up" in log_path.read_text():
                return stack
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stack.stop()
            raise AssertionError(f"foundry up was not ready after {timeout_s} s:\n{stack.log()}")
        time.sleep(1)


