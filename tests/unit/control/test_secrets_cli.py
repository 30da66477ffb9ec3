"""``foundry secrets keygen`` and ``foundry secrets encrypt``, and the gateway reading the result."""

from __future__ import annotations

import stat

import pytest
import typer
from typer.testing import CliRunner

from control.cli.secrets import register
from serve.config import OpenAIProvider
from serve.secrets import decrypt, resolve_api_key

SECRET = "sk-cli-4f7Gm2SECRET"


@pytest.fixture(scope="module")
def foundry() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def keydir(foundry, tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    result = CliRunner().invoke(foundry, ["secrets", "keygen", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_keygen_writes_a_private_key_only_its_owner_reads(keydir):
    out, output = keydir
    private, public = out / "private.pem", out / "public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert f"export FOUNDRY_RSA_PRIVATE_KEY_PATH={private}" in output
    assert "BEGIN" not in output  # the key itself is never printed


def test_keygen_does_not_overwrite_a_key_pair(foundry, keydir):
    out, _ = keydir
    before = (out / "private.pem").read_bytes()
    result = CliRunner().invoke(foundry, ["secrets", "keygen", "--out-dir", str(out)])
    assert result.exit_code == 1
    assert "exists; use --force" in result.stderr
    assert (out / "private.pem").read_bytes() == before


def test_encrypt_from_an_option_or_stdin_round_trips(foundry, keydir):
    out, _ = keydir
    private = (out / "private.pem").read_text()
    base = ["secrets", "encrypt", "--public-key", str(out / "public.pem")]
    by_option = CliRunner().invoke(foundry, [*base, "--value", SECRET])
    by_stdin = CliRunner().invoke(foundry, base, input=SECRET + "\n")
    for result in (by_option, by_stdin):
        assert result.exit_code == 0, result.output
        token = result.stdout.strip()
        assert "\n" not in token and SECRET not in result.output
        assert decrypt(token, private_pem=private) == SECRET


def test_the_gateway_resolves_what_the_cli_encrypted(foundry, keydir):
    out, _ = keydir
    token = CliRunner().invoke(foundry, ["secrets", "encrypt", "--public-key", str(out / "public.pem")], input=SECRET)
    cfg = OpenAIProvider(type="openai", api_key_encrypted=token.stdout.strip())
    env = {"FOUNDRY_RSA_PRIVATE_KEY_PATH": str(out / "private.pem")}
    assert resolve_api_key(cfg, where="models.m.providers.p", environ=env) == SECRET


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--value", SECRET], None, "cannot read"),
        ([], "\n", "nothing to encrypt"),
    ],
)
def test_encrypt_failures_are_one_line_errors(foundry, keydir, args, stdin, message):
    out, _ = keydir
    public = out / ("missing.pem" if message == "cannot read" else "public.pem")
    result = CliRunner().invoke(foundry, ["secrets", "encrypt", "--public-key", str(public), *args], input=stdin)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert SECRET not in result.output


def test_encrypt_with_a_private_key_by_mistake_fails(foundry, keydir):
    out, _ = keydir
    result = CliRunner().invoke(foundry, ["secrets", "encrypt", "--public-key", str(out / "private.pem"), "--value", SECRET])
    assert result.exit_code == 1 and "not a PEM public key" in result.stderr
