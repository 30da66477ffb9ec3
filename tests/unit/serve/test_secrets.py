"""Encrypted provider credentials (RSA-OAEP, SHA-256) and where API keys come from."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from serve.config import AnthropicProvider, OpenAIProvider
from serve.secrets import (
    DecryptionFailed,
    EncryptionFailed,
    MissingCredential,
    PrivateKeyUnavailable,
    SecretError,
    decrypt,
    encrypt,
    generate_keypair,
    resolve_api_key,
)

PLAINTEXT = "sk-live-Zq81vNsecretVALUE-0099"
WHERE = "models.chat-main.providers.primary"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_keypair()  # the default size, 3072 bits


@pytest.fixture(scope="module")
def other_keys() -> tuple[str, str]:
    return generate_keypair(2048)


def _leaks(error: SecretError, *secrets: str) -> list[str]:
    text = f"{error} {error!r} {error.message}"
    pieces = [PLAINTEXT]
    for pem in secrets:  # every line of key material
        pieces += [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return [p for p in pieces if p in text]


def test_round_trip_base64_and_hex(keys):
    private_pem, public_pem = keys
    token = encrypt(public_pem, PLAINTEXT)
    raw = base64.b64decode(token)
    assert len(raw) == 3072 // 8
    assert decrypt(token, private_pem=private_pem) == PLAINTEXT
    assert decrypt(raw.hex(), private_pem=private_pem) == PLAINTEXT
    assert decrypt(raw.hex().upper(), private_pem=private_pem) == PLAINTEXT
    unpadded_urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decrypt(unpadded_urlsafe, private_pem=private_pem) == PLAINTEXT
    wrapped = "\n".join(token[i : i + 64] for i in range(0, len(token), 64))  # as pasted from a terminal
    assert decrypt(wrapped, private_pem=private_pem) == PLAINTEXT


def test_encryption_is_randomised(keys):
    assert encrypt(keys[1], PLAINTEXT) != encrypt(keys[1], PLAINTEXT)


def test_a_wrong_key_fails_without_leaking(keys, other_keys):
    private_pem, public_pem = keys
    token = encrypt(public_pem, PLAINTEXT)
    other_private, other_public = other_keys
    with pytest.raises(DecryptionFailed) as caught:  # another 3072-bit key would say "wrong key"
        decrypt(token, private_pem=other_private)
    assert "2048-bit" in caught.value.message
    assert not _leaks(caught.value, private_pem, other_private)
    same_size = generate_keypair()[0]
    with pytest.raises(DecryptionFailed, match="wrong key or corrupted") as caught:
        decrypt(token, private_pem=same_size)
    assert not _leaks(caught.value, private_pem, same_size)


@pytest.mark.parametrize("garbage", ["", "not base64 at all!", "abcd" * 10, "zz" * 384])
def test_garbage_is_a_decryption_error(keys, garbage):
    with pytest.raises(DecryptionFailed) as caught:
        decrypt(garbage, private_pem=keys[0])
    assert not _leaks(caught.value, keys[0])


def test_a_corrupted_ciphertext_of_the_right_size_fails(keys):
    raw = bytearray(base64.b64decode(encrypt(keys[1], PLAINTEXT)))
    raw[10] ^= 0xFF
    with pytest.raises(DecryptionFailed, match="wrong key or corrupted"):
        decrypt(base64.b64encode(raw).decode(), private_pem=keys[0])


def test_a_value_too_long_for_the_key_is_refused_without_echo(other_keys):
    long_value = PLAINTEXT * 20
    with pytest.raises(EncryptionFailed) as caught:
        encrypt(other_keys[1], long_value)
    assert "at most 190" in caught.value.message and PLAINTEXT not in str(caught.value)


def test_a_public_key_that_is_not_pem_is_refused():
    with pytest.raises(EncryptionFailed, match="not a PEM public key"):
        encrypt("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", PLAINTEXT)


# --- the private key from the environment ------------------------------------------------------------


def test_private_key_from_pem_text_or_file(keys, tmp_path):
    private_pem, public_pem = keys
    token = encrypt(public_pem, PLAINTEXT)
    assert decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY": private_pem}) == PLAINTEXT
    flattened = private_pem.strip().replace("\n", "\\n")  # how some secret stores pass newlines
    assert decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY": flattened}) == PLAINTEXT
    path = tmp_path / "private.pem"
    path.write_text(private_pem)
    assert decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY_PATH": str(path)}) == PLAINTEXT


def test_no_private_key_names_both_variables(keys):
    with pytest.raises(PrivateKeyUnavailable) as caught:
        decrypt(encrypt(keys[1], PLAINTEXT), environ={})
    assert "FOUNDRY_RSA_PRIVATE_KEY_PATH" in caught.value.message and "FOUNDRY_RSA_PRIVATE_KEY " in caught.value.message


def test_an_unreadable_or_invalid_private_key_is_named_not_shown(keys, tmp_path):
    token = encrypt(keys[1], PLAINTEXT)
    missing = tmp_path / "nope.pem"
    with pytest.raises(PrivateKeyUnavailable, match="nope.pem: No such file"):
        decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY_PATH": str(missing)})
    broken = keys[0].replace("A", "B")
    with pytest.raises(PrivateKeyUnavailable) as caught:
        decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY": broken})
    assert "$FOUNDRY_RSA_PRIVATE_KEY is not" in caught.value.message
    assert not _leaks(caught.value, keys[0], broken)
    with pytest.raises(PrivateKeyUnavailable, match="not an unencrypted PEM private key"):
        decrypt(token, environ={"FOUNDRY_RSA_PRIVATE_KEY": keys[1]})  # the public key by mistake


# --- resolve_api_key ------------------------------------------------------------------------------


def test_an_encrypted_key_is_decrypted(keys):
    cfg = OpenAIProvider(type="openai", api_key_encrypted=encrypt(keys[1], PLAINTEXT))
    assert resolve_api_key(cfg, where=WHERE, environ={"FOUNDRY_RSA_PRIVATE_KEY": keys[0]}) == PLAINTEXT


def test_an_encrypted_key_that_fails_names_the_config_key(keys, other_keys):
    cfg = OpenAIProvider(type="openai", api_key_encrypted=encrypt(keys[1], PLAINTEXT))
    with pytest.raises(DecryptionFailed) as caught:
        resolve_api_key(cfg, where=WHERE, environ={"FOUNDRY_RSA_PRIVATE_KEY": other_keys[0]})
    assert caught.value.message.startswith(f"{WHERE}.api_key_encrypted: ")
    with pytest.raises(PrivateKeyUnavailable, match=rf"^{WHERE}\.api_key_encrypted: "):
        resolve_api_key(cfg, where=WHERE, environ={})


def test_a_named_variable_is_read_and_must_be_set():
    cfg = OpenAIProvider(type="openai", api_key_env="PRIMARY_API_KEY")
    env = {"PRIMARY_API_KEY": PLAINTEXT, "OPENAI_API_KEY": "the-default"}
    assert resolve_api_key(cfg, where=WHERE, environ=env) == PLAINTEXT
    for unset in ({}, {"PRIMARY_API_KEY": "", "OPENAI_API_KEY": "the-default"}):
        with pytest.raises(MissingCredential) as caught:
            resolve_api_key(cfg, where=WHERE, environ=unset)
        assert caught.value.message == f"{WHERE}.api_key_env names $PRIMARY_API_KEY, which is not set"


def test_without_a_setting_the_types_default_variable_is_optional():
    anthropic = AnthropicProvider(type="anthropic")
    assert resolve_api_key(anthropic, where=WHERE, environ={"ANTHROPIC_API_KEY": PLAINTEXT}) == PLAINTEXT
    assert resolve_api_key(anthropic, where=WHERE, environ={"OPENAI_API_KEY": PLAINTEXT}) is None
    assert resolve_api_key(OpenAIProvider(type="openai"), where=WHERE, environ={"OPENAI_API_KEY": ""}) is None


def test_the_process_environment_is_the_default(keys, monkeypatch, tmp_path: Path):
    path = tmp_path / "k.pem"
    path.write_text(keys[0])
    monkeypatch.delenv("FOUNDRY_RSA_PRIVATE_KEY", raising=False)
    monkeypatch.setenv("FOUNDRY_RSA_PRIVATE_KEY_PATH", str(path))
    cfg = OpenAIProvider(type="openai", api_key_encrypted=encrypt(keys[1], PLAINTEXT))
    assert resolve_api_key(cfg, where=WHERE) == PLAINTEXT


def test_seal_holds_text_longer_than_rsa_oaep_and_round_trips() -> None:
    from serve.secrets import public_key_of, seal, unseal

    private_pem, public_pem = generate_keypair(2048)
    kubeconfig = "apiVersion: v1\nusers:\n- name: u\n  user: {token: " + "t" * 5000 + "}\n"
    sealed = seal(public_pem, kubeconfig)
    assert "t" * 20 not in sealed
    assert unseal(sealed, private_pem=private_pem) == kubeconfig
    assert public_key_of(private_pem) == public_pem


def test_unseal_refuses_another_key_and_tampering_without_echoing_the_value() -> None:
    from serve.secrets import seal, unseal

    private_pem, public_pem = generate_keypair(2048)
    other_private, _ = generate_keypair(2048)
    sealed = seal(public_pem, "secret-token-123")
    with pytest.raises(DecryptionFailed) as wrong:
        unseal(sealed, private_pem=other_private)
    head, key, body = sealed.split(":")
    tampered = f"{head}:{key}:{body[:-4]}AAAA"
    with pytest.raises(DecryptionFailed) as bad:
        unseal(tampered, private_pem=private_pem)
    for exc in (wrong.value, bad.value):
        assert "secret-token-123" not in str(exc)
    with pytest.raises(DecryptionFailed, match="not a sealed value"):
        unseal("plain", private_pem=private_pem)
