"""What a dead stack left behind, found and cleared before the next ``foundry up``.

A stack killed with SIGKILL (the OOM killer, ``kill -9``) cannot clean up. Ray's own processes
share the fate of the driver that started them, but Serve's HAProxy is a child of a Ray worker
and outlives it, holding the HTTP port. So each ``FOUNDRY_HOME`` gets its own HAProxy directory
(:func:`haproxy_paths`, short enough for Unix sockets) and a pid file of the ``foundry up`` that
owns it; at start:

    live pid file              -> refuse: another stack uses this FOUNDRY_HOME (its pid named)
    HAProxy of this home alive -> its stack is dead: terminate it
    port still taken           -> refuse, naming the process that holds it

Example::

    claim(home)                 # raises LeftoverError naming what is in the way
    ...                         # start the stack
    release(home)               # at a clean stop
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path

import psutil

PID_FILE = "foundry-up.pid"
TERMINATE_TIMEOUT_S = 10.0


class LeftoverError(RuntimeError):
    """Something outside this stack is in the way; the message says what and how to clear it."""


def haproxy_paths(home: Path) -> dict[str, str]:
    """Environment for Ray Serve's HAProxy ingress: files under a directory of this home's own
    (Serve's default, ``/tmp/haproxy-serve``, is shared by every stack on the machine). Serve
    adds a 56-character node directory and HAProxy takes socket paths of at most 97 bytes, so
    the base is short: ``/tmp/fnd-<8 hex digits of the home's path>``."""
    base = haproxy_dir(home)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
    }


def haproxy_dir(home: Path) -> Path:
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"fnd-{digest}"


def claim(home: Path, *, host: str, port: int | None) -> list[str]:
    """Make ``home`` and ``port`` ours: refuse if a live stack owns the home, clear what a dead
    one left, refuse if the port is still taken (``port=None``: not ours to check). Returns what
    was cleared (for the log)."""
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / PID_FILE
    owner = _read_pid(pid_file)
    if owner is not None and owner != os.getpid() and _is_foundry_up(owner):
        raise LeftoverError(
            f"another `foundry up` (pid {owner}) is running with FOUNDRY_HOME={home}; stop it first"
        )
    cleared = _terminate_haproxy(haproxy_dir(home))
    holder = None if port is None else port_holder(host, port)
    if holder is not None:
        raise LeftoverError(f"port {port} is in use by {holder}; stop it or start with --port")
    pid_file.write_text(str(os.getpid()))
    return cleared


def release(home: Path) -> None:
    pid_file = home / PID_FILE
    if _read_pid(pid_file) == os.getpid():
        pid_file.unlink(missing_ok=True)


def port_holder(host: str, port: int) -> str | None:
    """``None`` if ``host:port`` can be listened on; else who holds it, as well as can be told."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({_describe(conn.pid)})"
    except psutil.Error:
        pass
    return "another process (not visible to this user)"


def _terminate_haproxy(directory: Path) -> list[str]:
    """HAProxy processes whose configuration lies under ``directory``, terminated."""
    prefix = f"{directory}/"
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and "haproxy" in Path(cmdline[0]).name and any(arg.startswith(prefix) for arg in cmdline):
            victims.append(proc)
    for proc in victims:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(victims, timeout=TERMINATE_TIMEOUT_S)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=TERMINATE_TIMEOUT_S)
    return [f"HAProxy pid {p.pid} left by a stack that died" for p in victims]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_foundry_up(pid: int) -> bool:
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "foundry" in cmdline and " up" in cmdline


def _describe(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200] or "?"
    except psutil.Error:
        return "?"
