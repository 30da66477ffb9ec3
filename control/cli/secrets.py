"""``foundry secrets``: keep provider API keys out of config files in clear.

Example::

    foundry secrets keygen                          # ~/.foundry/keys/{private,public}.pem
    export FOUNDRY_RSA_PRIVATE_KEY_PATH=~/.foundry/keys/private.pem
    echo -n "$OPENAI_API_KEY" | foundry secrets encrypt --public-key ~/.foundry/keys/public.pem
    # -> paste the output into the config:  api_key_encrypted = "..."

The gateway decrypts ``api_key_encrypted`` with the private key (:mod:`serve.secrets`).
Failures print one ``error: ...`` line on stderr and exit 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from control.config import foundry_home
from serve.secrets import DEFAULT_BITS, PRIVATE_KEY_PATH_ENV, SecretError, encrypt, generate_keypair


def register(app: typer.Typer) -> None:
    secrets = typer.Typer(help="Encrypt provider API keys for api_key_encrypted.", no_args_is_help=True)
    secrets.command("keygen")(keygen)
    secrets.command("encrypt")(encrypt_value)
    app.add_typer(secrets, name="secrets")


def keygen(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Where to write private.pem and public.pem (default: $FOUNDRY_HOME/keys)."),
    ] = None,
    bits: Annotated[int, typer.Option("--bits", min=2048, help="RSA key size.")] = DEFAULT_BITS,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
) -> None:
    """Make an RSA key pair: the private key (mode 0600) for the gateway, the public one for encrypt."""
    directory = (out_dir or foundry_home() / "keys").expanduser().resolve()
    private_path, public_path = directory / "private.pem", directory / "public.pem"
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                _fail(f"{path} exists; use --force to replace the key pair")
    private_pem, public_pem = generate_keypair(bits)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write(private_path, private_pem, 0o600)
        _write(public_path, public_pem, 0o644)
    except OSError as exc:
        _fail(f"cannot write the key pair to {directory}: {exc.strerror}")
    typer.echo(f"private key: {private_path}")
    typer.echo(f"public key:  {public_path}")
    typer.echo(f"Give the gateway the private key:\n  export {PRIVATE_KEY_PATH_ENV}={private_path}")
    typer.echo(f"Encrypt a provider key:\n  foundry secrets encrypt --public-key {public_path} < key.txt")


def encrypt_value(
    public_key: Annotated[Path, typer.Option("--public-key", help="The public key PEM file (from keygen).")],
    value: Annotated[
        str | None,
        typer.Option("--value", help="The secret (default: read from stdin; prompted for at a terminal)."),
    ] = None,
) -> None:
    """Print the RSA-OAEP ciphertext (base64) of an API key, for api_key_encrypted."""
    try:
        public_pem = public_key.expanduser().read_bytes()
    except OSError as exc:
        _fail(f"cannot read {public_key}: {exc.strerror}")
    if value is None:
        value = typer.prompt("Value", hide_input=True) if sys.stdin.isatty() else sys.stdin.read()
        value = value.strip()
    if not value:
        _fail("nothing to encrypt: give --value or the secret on stdin")
    try:
        typer.echo(encrypt(public_pem, value))
    except SecretError as exc:
        _fail(exc.message)


def _write(path: Path, text: str, mode: int) -> None:
    """Write with ``mode`` from the first byte (a private key is never briefly world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)  # the umask may have taken bits away


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
