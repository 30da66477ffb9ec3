"""``foundry up`` and ``foundry config``: run the stack, show its configuration."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

config_app = typer.Typer(help="Show the stack configuration.", no_args_is_help=True)
# Outside text (paths, Ray's and HAProxy's messages) is printed as it is, never as rich markup.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)  # paths stay whole


def _error(message: object) -> None:
    console.print(Text.assemble(("error:", "red"), " ", str(message)))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.add_typer(config_app, name="config")


@config_app.command("default")
def config_default() -> None:
    """Print the default configuration (what `foundry up` runs without --config)."""
    from control.config import default_config_text

    sys.stdout.write(default_config_text())


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="TOML file to validate")]) -> None:
    """Validate a configuration file; errors name the key."""
    from control.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    console.print(f"{path}: ok ({len(cfg.models)} models, {len(cfg.runtimes)} runtimes)")


def up(
    config: Annotated[Path | None, typer.Option("--config", help="TOML file that replaces the defaults entirely")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (default 8000, or [server] port)")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start one)")
    ] = None,
) -> None:
    """Start the whole stack on Ray: gateway at /v1, control API at /api, model runtimes."""
    from control.config import ConfigError, default_config, foundry_home, load_config, ray_environment

    try:
        cfg = load_config(config) if config else default_config()
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None

    home = foundry_home()
    if not (address or os.environ.get("RAY_ADDRESS")):
        # before ray.serve is imported: it reads its ingress mode at import time
        for name, value in ray_environment(cfg, home).items():
            os.environ.setdefault(name, value)
    from control.stack import Stack

    stack = Stack(cfg, home=home, address=address, port=port)
    stop = threading.Event()

    def _on_signal(signum, frame):
        if stop.is_set():
            console.print("forced exit")
            raise SystemExit(130)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    t0 = time.monotonic()
    console.print(f"Starting Foundry (state in {home}) ...")
    try:
        info = stack.start()
    except Exception as exc:
        _error(f"the stack did not start: {exc}")
        try:
            stack.stop()
        finally:
            raise typer.Exit(1) from None
    # ray.init installs its own SIGTERM handler (which aborts the process); take it back.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _print_banner(info, time.monotonic() - t0)

    while not stop.wait(0.5):
        pass
    console.print("Shutting down: finishing in-flight requests, flushing metrics ...")
    stack.stop()
    console.print("Stopped.")


def _print_banner(info, elapsed_s: float) -> None:
    out = Console(soft_wrap=True, markup=False, highlight=False)
    key_hint = "$FOUNDRY_ADMIN_KEY"
    where = "local Ray cluster" if info.started_ray else "joined Ray cluster"
    out.print(Text.assemble("\n", ("Foundry is up", "bold green"), f" in {elapsed_s:.0f} s ({where})\n"))
    out.print(f"  Gateway (OpenAI API)  {info.gateway_url}", highlight=False)
    out.print(f"  Control API           {info.control_url}   docs: {info.docs_url}", highlight=False)
    if info.dashboard_url:
        out.print(f"  Ray dashboard         {info.dashboard_url}", highlight=False)
    out.print(f"  Database              {info.database_url}", highlight=False)
    out.print("  Models:", highlight=False)
    for name, what in info.models.items():
        out.print(f"    {name:<24} {what}", highlight=False)
    if info.admin_key:
        out.print(f"\n  Admin key (shown once; only its hash is stored):\n    {info.admin_key}", highlight=False)
        out.print("  Keep it: export FOUNDRY_ADMIN_KEY=<the key above>", highlight=False)
    else:
        out.print("\n  Admin key: the one in $FOUNDRY_ADMIN_KEY (or printed at the first start)", highlight=False)
    model = next(iter(info.models), "foundry-tiny")
    out.print(
        "\nTry it:\n"
        f"  curl {info.gateway_url}/chat/completions -H \"Authorization: Bearer {key_hint}\" \\\n"
        f"    -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n"
        f"  python -c \"from openai import OpenAI; c = OpenAI(base_url='{info.gateway_url}', api_key='...'); "
        f"print(c.chat.completions.create(model='{model}', messages=[{{'role': 'user', 'content': 'Hi'}}]))\"\n"
        f"  foundry keys create --project demo --json\n\n"
        "Press Ctrl-C to stop.",
        highlight=False,
        soft_wrap=True,
    )
