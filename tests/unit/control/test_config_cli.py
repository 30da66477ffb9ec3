"""`foundry config default` prints a configuration that loads; `foundry config check` says ok or
names the key."""

from __future__ import annotations

from typer.testing import CliRunner

from control.cli import app
from control.config import parse_config


def test_config_default_prints_the_default_that_loads(tmp_path):
    result = CliRunner().invoke(app, ["config", "default"])
    assert result.exit_code == 0
    cfg = parse_config(result.output, source="<default>", base_dir=tmp_path)
    assert {"foundry-tiny", "all-minilm-l6-v2"} <= set(cfg.models)
    assert "max_body_bytes" in result.output  # documented, key by key


def test_config_check_says_ok_or_names_the_key(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(CliRunner().invoke(app, ["config", "default"]).output)
    bad.write_text("[gateway]\nmax_body_bytez = 10\n")
    ok = CliRunner().invoke(app, ["config", "check", str(good)])
    assert ok.exit_code == 0 and "ok (2 models, 2 runtimes)" in ok.output
    refused = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert refused.exit_code == 2
    assert "gateway.max_body_bytez" in refused.output
