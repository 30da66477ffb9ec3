"""A dead stack's HAProxy is cleared at the next start; anything else on the port is named."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control.leftovers import LeftoverError, claim, haproxy_dir, haproxy_paths, port_holder, release

LISTEN = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener(argv0: str, port: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([argv0, "-c", LISTEN, str(port), *args])
    deadline = time.monotonic() + 20
    while port_holder("127.0.0.1", port) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "the listener did not start"
        time.sleep(0.05)
    return proc


@pytest.fixture
def fake_haproxy(tmp_path) -> str:
    """The Python interpreter under the name ``haproxy``, as process listings see it."""
    link = tmp_path / "bin" / "haproxy"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    return str(link)


def test_haproxy_left_by_a_dead_stack_of_this_home_is_cleared(tmp_path, fake_haproxy):
    home, port = tmp_path / "home", free_port()
    node_dir = haproxy_dir(home) / ("0" * 56)  # where Serve writes it: a directory per node
    orphan = listener(fake_haproxy, port, "-db", "-f", str(node_dir / "haproxy.cfg"))
    try:
        cleared = claim(home, host="127.0.0.1", port=port)
        assert cleared == [f"HAProxy pid {orphan.pid} left by a stack that died"]
        assert orphan.wait(10) is not None
        assert port_holder("127.0.0.1", port) is None
        assert (home / "foundry-up.pid").read_text() == str(os.getpid())
    finally:
        orphan.kill()
        orphan.wait()
        release(home)
    assert not (home / "foundry-up.pid").exists()


def test_another_homes_haproxy_is_left_alone_and_named(tmp_path, fake_haproxy):
    port = free_port()
    other = listener(fake_haproxy, port, "-f", str(haproxy_dir(tmp_path / "other") / ("0" * 56) / "haproxy.cfg"))
    try:
        with pytest.raises(LeftoverError) as exc:
            claim(tmp_path / "home", host="127.0.0.1", port=port)
        assert f"port {port} is in use by pid {other.pid}" in str(exc.value)
        assert "[" not in str(exc.value).split("(")[0]
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_live_stack_of_the_same_home_is_not_touched(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # a process that looks like `foundry up` to the process table
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "foundry", "up"])
    try:
        (home / "foundry-up.pid").write_text(str(live.pid))
        with pytest.raises(LeftoverError, match=f"another `foundry up` \\(pid {live.pid}\\)"):
            claim(home, host="127.0.0.1", port=None)
    finally:
        live.kill()
        live.wait()
    assert claim(home, host="127.0.0.1", port=None) == []  # its pid file is stale now: ours


def test_haproxy_paths_are_short_and_per_home(tmp_path):
    a = haproxy_paths(tmp_path / ("x" * 150))
    b = haproxy_paths(tmp_path / "y")
    assert a != b
    # Serve adds a 56-character node directory; HAProxy takes socket paths of up to 97 bytes
    assert all(len(str(Path(p).parent / ("0" * 56) / Path(p).name)) <= 97 for p in a.values())
    assert Path(a["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent == Path(a["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent


def test_outside_text_is_printed_as_it_is_never_as_markup(tmp_path):
    """A path or message with rich markup in it (HAProxy's config path in Ray's error was one)."""
    from typer.testing import CliRunner

    from control.cli import app

    bad = tmp_path / "foundry[bold].toml"
    bad.write_text('[server]\n"port[/haproxy.cfg:45]" = 1\n')
    result = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2, result.output
    assert "foundry[bold].toml" in result.output
    assert "port[/haproxy.cfg:45]" in result.output
