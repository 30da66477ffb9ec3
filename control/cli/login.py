"""``foundry login`` / ``foundry logout``: sign in at the OIDC issuer for the CLI and notebooks.

The tokens are cached under ``$FOUNDRY_HOME/credentials`` (see :mod:`control.login`); every
``foundry`` command and ``control.client.Foundry`` use them when no API key is given.

Example::

    foundry login --issuer https://keycloak.example.com/realms/ml --client-id foundry
    foundry users me
"""

from __future__ import annotations

from typing import Annotated

import typer

from control import login as oidc_login
from control.cli.admin import _fail


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)


def login(
    issuer: Annotated[
        str, typer.Option("--issuer", envvar="FOUNDRY_OIDC_ISSUER", help="The OIDC issuer URL (auth.oidc_issuer of the stack config).")
    ],
    client_id: Annotated[
        str,
        typer.Option("--client-id", envvar="FOUNDRY_OIDC_CLIENT_ID", help="The public client id (auth.oidc_audience of the stack config)."),
    ],
    client_secret: Annotated[
        str | None,
        typer.Option("--client-secret", envvar="FOUNDRY_OIDC_CLIENT_SECRET", show_envvar=False,
                     help="Only for a confidential client (public clients need none)."),
    ] = None,
    device: Annotated[bool, typer.Option("--device", help="Use the device flow (no browser on this machine).")] = False,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the sign-in URL instead of opening it.")] = False,
) -> None:
    """Sign in with your identity provider (authorization code + PKCE, or --device)."""
    opener = (lambda url: None) if no_browser else oidc_login.webbrowser.open
    try:
        record = oidc_login.login(
            issuer, client_id, client_secret=client_secret, device=device, open_browser=opener, announce=typer.echo
        )
    except oidc_login.LoginError as exc:
        _fail(str(exc))
    typer.echo(f"logged in as {record['email'] or record['sub']}; tokens kept in {oidc_login.cache_path()}")


def logout() -> None:
    """Forget the tokens `foundry login` kept."""
    typer.echo("logged out" if oidc_login.logout() else "not logged in")
