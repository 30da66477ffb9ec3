"""Provider credentials: from the environment, or stored encrypted in the config file.

A config may hold a provider's key as ``api_key_encrypted``: RSA-OAEP ciphertext (SHA-256,
MGF1 with SHA-256), hex or base64, of the key's UTF-8 text. The gateway decrypts it with the
private key in ``$FOUNDRY_RSA_PRIVATE_KEY`` (PEM text; ``\\n`` escapes allowed, as some secret
stores flatten newlines) or in the file named by ``$FOUNDRY_RSA_PRIVATE_KEY_PATH``; the first
wins when both are set. ``foundry secrets keygen`` makes a key pair, ``foundry secrets encrypt``
the ciphertext.

Example::

    private_pem, public_pem = generate_keypair()
    token = encrypt(public_pem, "sk-...")
    assert decrypt(token, private_pem=private_pem) == "sk-..."

Values longer than RSA-OAEP holds (a kubeconfig) are sealed in an envelope: a fresh AES-256-GCM
key encrypts the text and RSA-OAEP (the same scheme) encrypts that key. ``seal`` / ``unseal``;
the stored form is ``env1:<base64 wrapped key>:<base64 nonce + ciphertext>``.

Errors (messages name config keys, variables and paths; never a plaintext or key material)::

    SecretError               base
    ├── PrivateKeyUnavailable  no private key configured, or it cannot be read or parsed
    ├── DecryptionFailed       not hex/base64 of the key's size, wrong key, corrupted value
    ├── MissingCredential      api_key_env names a variable that is not set
    └── EncryptionFailed       the public key is unusable or the value too long for it
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_KEY_ENV = "FOUNDRY_RSA_PRIVATE_KEY"
PRIVATE_KEY_PATH_ENV = "FOUNDRY_RSA_PRIVATE_KEY_PATH"
DEFAULT_BITS = 3072

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_HEX = frozenset(string.hexdigits)


class SecretError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PrivateKeyUnavailable(SecretError):
    pass


class DecryptionFailed(SecretError):
    pass


class MissingCredential(SecretError):
    pass


class EncryptionFailed(SecretError):
    pass


class CredentialConfig(Protocol):
    """What :func:`resolve_api_key` reads from a provider's config table."""

    api_key_env: str | None
    api_key_encrypted: str | None


def generate_keypair(bits: int = DEFAULT_BITS) -> tuple[str, str]:
    """A new RSA key pair as (private PEM in PKCS #8, unencrypted; public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem.decode(), public_pem.decode()


def encrypt(public_pem: str | bytes, plaintext: str) -> str:
    """``plaintext`` encrypted for the holder of the private key, base64."""
    try:
        key = serialization.load_pem_public_key(_as_bytes(public_pem))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise EncryptionFailed("the public key is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise EncryptionFailed("the public key is not an RSA key")
    data = plaintext.encode()
    limit = key.key_size // 8 - 2 * hashes.SHA256.digest_size - 2
    if len(data) > limit:
        raise EncryptionFailed(
            f"the value is {len(data)} bytes; RSA-OAEP with a {key.key_size}-bit key holds at most {limit}"
        )
    return base64.b64encode(key.encrypt(data, _OAEP)).decode()


def decrypt(ciphertext: str, *, private_pem: str | bytes | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The plaintext of ``ciphertext`` (hex or base64). The private key is ``private_pem``, else
    the one ``$FOUNDRY_RSA_PRIVATE_KEY`` or ``$FOUNDRY_RSA_PRIVATE_KEY_PATH`` gives."""
    if private_pem:
        key, source = _parse_private_key(private_pem, "the private key"), "the private key"
    else:
        key, source = _env_private_key(environ)
    size = key.key_size // 8
    raw = _decode(ciphertext, size)
    if raw is None:
        raise DecryptionFailed(
            f"not hex or base64 of {size} bytes (the size of {source}): was it encrypted with a "
            f"{key.key_size}-bit key?"
        )
    try:
        data = key.decrypt(raw, _OAEP)
    except ValueError:
        raise DecryptionFailed(f"could not be decrypted with {source}: wrong key or corrupted value") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise DecryptionFailed("decrypted to bytes that are not UTF-8 text") from None


def resolve_api_key(cfg: CredentialConfig, *, where: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API key of the provider table at ``where`` (e.g. ``models.chat-main.providers.primary``).

    - ``api_key_encrypted``: decrypted (see :func:`decrypt`);
    - ``api_key_env``: that variable, which must be set and not empty;
    - neither: the type's ``default_api_key_env`` (``OPENAI_API_KEY``, ...) if set, else None.

    Raises :class:`SecretError` with ``where`` and the key named.
    """
    if cfg.api_key_encrypted:
        try:
            return decrypt(cfg.api_key_encrypted, environ=environ)
        except SecretError as exc:
            raise type(exc)(f"{where}.api_key_encrypted: {exc.message}") from None
    if cfg.api_key_env:
        value = environ.get(cfg.api_key_env, "")
        if not value:
            raise MissingCredential(f"{where}.api_key_env names ${cfg.api_key_env}, which is not set")
        return value
    default_env: str | None = getattr(cfg, "default_api_key_env", None)
    return (environ.get(default_env) or None) if default_env else None


ENVELOPE_PREFIX = "env1:"


def seal(public_pem: str | bytes, plaintext: str) -> str:
    """``plaintext`` of any length, for the holder of the private key (see the module docstring)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    body = AESGCM(data_key).encrypt(nonce, plaintext.encode(), None)
    wrapped = encrypt(public_pem, data_key.hex())
    return f"{ENVELOPE_PREFIX}{wrapped}:{base64.b64encode(nonce + body).decode()}"


def unseal(sealed: str, *, private_pem: str | bytes | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The plaintext of a :func:`seal` envelope (:class:`DecryptionFailed` if it is not one)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    parts = sealed.split(":")
    if len(parts) != 3 or f"{parts[0]}:" != ENVELOPE_PREFIX:
        raise DecryptionFailed("not a sealed value (expected env1:<key>:<data>)")
    try:
        data_key = bytes.fromhex(decrypt(parts[1], private_pem=private_pem, environ=environ))
        blob = base64.b64decode(parts[2], validate=True)
        return AESGCM(data_key).decrypt(blob[:12], blob[12:], None).decode()
    except (ValueError, binascii.Error, InvalidTag, UnicodeDecodeError):
        raise DecryptionFailed("the sealed value is corrupted or was sealed for another key") from None


def public_key_of(private_pem: str | bytes) -> str:
    """The PEM public key of a private key."""
    key = _parse_private_key(private_pem, "the private key")
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _env_private_key(environ: Mapping[str, str]) -> tuple[rsa.RSAPrivateKey, str]:
    inline = environ.get(PRIVATE_KEY_ENV, "").strip()
    if inline:
        if "\n" not in inline:
            inline = inline.replace("\\n", "\n")
        return _parse_private_key(inline, f"${PRIVATE_KEY_ENV}"), f"${PRIVATE_KEY_ENV}"
    path = environ.get(PRIVATE_KEY_PATH_ENV, "").strip()
    if not path:
        raise PrivateKeyUnavailable(
            f"an encrypted credential needs the private key: set ${PRIVATE_KEY_PATH_ENV} to its PEM file "
            f"(or ${PRIVATE_KEY_ENV} to its PEM text)"
        )
    try:
        pem = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise PrivateKeyUnavailable(f"cannot read ${PRIVATE_KEY_PATH_ENV}={path}: {exc.strerror}") from None
    source = f"the private key in {path}"
    return _parse_private_key(pem, source), source


def _parse_private_key(pem: str | bytes, source: str) -> rsa.RSAPrivateKey:
    key = _load_private_key(_as_bytes(pem))
    if key is None:
        raise PrivateKeyUnavailable(f"{source} is not an unencrypted PEM private key")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PrivateKeyUnavailable(f"{source} is not an RSA key")
    return key


@functools.lru_cache(maxsize=8)
def _load_private_key(pem: bytes) -> PrivateKeyTypes | None:
    """Parsed once per key: loading checks the key's primes, a fraction of a second for 3072 bits,
    and a gateway decrypts one credential per provider."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _decode(ciphertext: str, size: int) -> bytes | None:
    """The ``size`` bytes that ``ciphertext`` spells in hex or base64 (standard or URL-safe)."""
    text = "".join(ciphertext.split())
    if len(text) == 2 * size and _HEX.issuperset(text):
        return bytes.fromhex(text)
    padded = text + "=" * (-len(text) % 4)
    for alphabet in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == size:
            return raw
    return None


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
