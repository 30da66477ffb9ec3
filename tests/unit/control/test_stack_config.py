"""The stack's TOML config: the default loads, mistakes fail at load time naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.config import ConfigError, default_config, default_config_text, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]


def parse(text: str):
    return parse_config(text, source="test.toml", base_dir=Path("/cfg"))


def test_default_config_serves_two_models():
    cfg = default_config()
    assert set(cfg.models) == {"foundry-tiny", "all-minilm-l6-v2"}
    assert cfg.runtimes["foundry-tiny"].task == "generate"
    assert cfg.runtimes["all-minilm-l6-v2"].task == "embed"
    assert cfg.server.port == 8000
    assert cfg.metrics.backend == "embedded"


def test_default_text_is_documented():
    text = default_config_text()
    assert text.count("#") > 10  # every section explains itself


@pytest.mark.parametrize("path", sorted((REPO / "cluster_configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ('[runtimes.a]\nmodel = "x"\nreplicas = "many"\n', "runtimes.a.replicas"),
        ('[models.m.providers.p]\ntype = "nope"\n', "models.m.providers.p.type: unknown provider type 'nope'"),
        ('[models.m.providers.p]\nfoo = 1\n', "models.m.providers.p: missing key 'type'"),
        (
            '[runtimes.m]\nmodel = "x"\n[models.m.providers.p]\ntype = "local"\ncolour = 1\n',
            "models.m.providers.p.colour: unknown key",
        ),
        ('[models.m.providers.p]\ntype = "local"\n', "no [runtimes.'m'] table"),
        ("[server\n", "invalid TOML"),
        ('[metrics]\nbackend = "mongo"\n', "metrics.backend"),
        ('[database]\nurl = "mysql://db/x"\n', "database.url: unsupported database URL"),
        (
            '[models.m]\nrouting = ["a", "ghost"]\n[models.m.providers.a]\ntype = "openai"\n',
            "models.m: routing names provider 'ghost'",
        ),
        (
            '[models.m.providers.a]\ntype = "openai"\napi_key_env = "K"\napi_key_encrypted = "00"\n',
            "models.m.providers.a: give api_key_env or api_key_encrypted, not both",
        ),
        ('[models.m]\nfallback_models = ["nope"]\n[models.m.providers.a]\ntype = "openai"\n', "fallback_models names 'nope'"),
    ],
)
def test_errors_name_the_file_and_key(text, expected):
    with pytest.raises(ConfigError) as exc:
        parse(text)
    assert str(exc.value).startswith("test.toml: ")
    assert expected in str(exc.value)


def test_relative_model_paths_resolve_against_the_config_file():
    cfg = parse('[runtimes.m]\nmodel = "weights/llama"\n[runtimes.b]\nmodel = "builtin:foundry-tiny"\n')
    assert cfg.runtimes["m"].model == "/cfg/weights/llama"
    assert cfg.runtimes["b"].model == "builtin:foundry-tiny"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_auth_table_enables_oidc_sign_in_with_defaults():
    assert parse("").auth is None  # API keys only, as without [auth]
    auth = parse('[auth]\noidc_issuer = "https://kc.example.com/realms/ml"\noidc_audience = "foundry"\n').auth
    assert (auth.roles_claim, auth.admin_roles, auth.email_claim) == ("roles", ["foundry-admin"], "email")
    assert auth.jwks_refresh_s > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[auth]\noidc_issuer = "https://kc"\noidc_audience = "f"\nroles = "x"\n', "auth.roles: unknown key"),
        ('[auth]\noidc_audience = "f"\n', "auth.oidc_issuer: Field required"),
        ('[auth]\noidc_issuer = "kc.example.com"\noidc_audience = "f"\n', "auth.oidc_issuer"),
        ('[auth]\noidc_issuer = "https://kc"\noidc_audience = "f"\njwks_refresh_s = 0\n', "auth.jwks_refresh_s"),
    ],
)
def test_auth_mistakes_name_the_key(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse(text)
