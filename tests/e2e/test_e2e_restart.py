"""Starting after a crash, and joining a cluster: as an admin meets them.

- ``foundry up`` killed with SIGKILL (as the OOM killer does) leaves Serve's HAProxy holding the
  port; the next ``foundry up`` on the same FOUNDRY_HOME clears it and serves.
- ``foundry up --address`` joins a cluster started with ``ray start --head`` (token auth on, as
  Ray 2.60 starts heads) and serves through it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
from e2e_support import ADMIN_KEY, foundry_bin, free_port, start_stack

from control.leftovers import port_holder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# No runtimes: what is under test is the stack's start, not a model's.
CONFIG = """
[models.remote.providers.p]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "foundry.toml"
    path.write_text(CONFIG)
    return path


def test_up_after_a_sigkill_clears_what_the_dead_stack_left(tmp_path, config):
    home, port = tmp_path / "home", free_port()
    first = start_stack(home, port, config)
    os.kill(first.proc.pid, signal.SIGKILL)  # foundry up alone, as the OOM killer would
    first.proc.wait(30)
    second = start_stack(home, port, config)  # would fail: HAProxy of the dead stack had the port
    try:
        models = httpx.get(f"{second.base_url}/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert [m["id"] for m in models.json()["data"]] == ["remote"]
        assert "cleared HAProxy pid" in second.log() or "Foundry is up" in second.log()
    finally:
        assert second.stop() == 0


def test_up_refuses_a_port_held_by_something_else_and_names_it(tmp_path, config):
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)"]
    )
    try:
        env = {**os.environ, "FOUNDRY_HOME": str(tmp_path / "home"), "FOUNDRY_ADMIN_KEY": ADMIN_KEY}
        env.pop("RAY_ADDRESS", None)
        deadline = time.monotonic() + 20
        while port_holder("127.0.0.1", port) is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        result = subprocess.run(
            [foundry_bin(), "up", "--port", str(port), "--config", str(config)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1
        assert f"port {port} is in use by pid {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_up_joins_a_cluster_started_with_ray_start(tmp_path, config):
    """The README's "outgrowing one machine" path: a head with token auth, then --address.
    Without the head's token a driver cannot connect at all; `foundry up` sends it by itself."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    gcs_port, http_port = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="fnd-ray-"))  # short: Ray's socket paths must fit 107 bytes
    # A HOME and a Ray temp dir of its own: the head's token and its "current cluster" record
    # stay out of every other test's way.
    env = {**os.environ, "HOME": str(tmp_path / "user")}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    head = subprocess.run(
        [ray_bin, "start", "--head", f"--port={gcs_port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    try:
        assert head.returncode == 0, head.stdout[-3000:] + head.stderr[-3000:]
        home = tmp_path / "home"
        log_path = tmp_path / "up.log"
        up_env = {**env, "FOUNDRY_HOME": str(home), "FOUNDRY_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "w") as log:
            up = subprocess.Popen(
                [foundry_bin(), "up", "--address", f"127.0.0.1:{gcs_port}", "--port", str(http_port),
                 "--config", str(config)],
                env=up_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while "Foundry is up" not in log_path.read_text():
                assert up.poll() is None, log_path.read_text()[-4000:]
                assert time.monotonic() < deadline, log_path.read_text()[-4000:]
                time.sleep(1)
            assert "joined Ray cluster" in log_path.read_text()
            reply = httpx.get(
                f"http://127.0.0.1:{http_port}/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
            )
            assert reply.status_code == 200 and reply.json()["data"][0]["id"] == "remote"
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_head(temp_dir: Path) -> None:
    """The head's processes, found by the temp dir in their command lines (`ray stop` would stop
    every Ray cluster of the machine)."""
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp_dir) in arg for arg in proc.info["cmdline"] or []):
            procs.append(proc)
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    for proc in alive:
        proc.kill()
