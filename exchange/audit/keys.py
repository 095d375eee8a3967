"""The audit log's signing key: an Ed25519 key outside the metadata store, so that someone who
can rewrite the store cannot sign new checkpoints.

The private key comes from the variable ``$EXCHANGE_AUDIT_KEY_ENV`` names (a PEM), else from a
file (``$EXCHANGE_AUDIT_KEY_FILE``, by default ``$EXCHANGE_HOME/audit-signing.key``: PKCS8 PEM,
0600), made on first need like the gateway key. Its public half lies beside it
(``<key file>.pub``, SubjectPublicKeyInfo PEM) for auditors. A key file that disappears after
checkpoints were signed is refused, not made anew: a new key would sign a history the old one
never saw. The key's id is the first 16 hex digits of sha256 of its raw 32-byte public key.
Errors name the file or the variable, never a key's bytes.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.audit.checkpoints import key_id_of
from exchange.audit.settings import AuditSettings
from exchange.kernel.errors import BadInput
from exchange.kernel.modes import publish_once, read_private, write_new


@dataclass(frozen=True)
class SigningKey:
    """The private key and where it came from (a file path or a variable's name)."""

    private: Ed25519PrivateKey
    source: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)


@dataclass(frozen=True)
class NewKey:
    """What ``keygen`` wrote."""

    path: Path
    public_path: Path
    key_id: str


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of sha256 of the raw 32-byte public key."""
    return key_id_of(public)


def public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def keygen(path: Path) -> NewKey:
    """Write a new key pair at ``path`` and ``path.pub``; refused if ``path`` exists."""
    if path.exists():
        raise BadInput(
            f"{path} exists: a new key would not replace it (move it away first; the "
            "checkpoints it signed verify only with its public half)"
        )
    private = Ed25519PrivateKey.generate()
    if not _make(path, private):
        raise BadInput(f"{path} was created by another process at the same time; keep that one")
    return NewKey(path, public_path(path), key_id(private.public_key()))


def signing_key(config: AuditSettings, *, may_create: bool) -> SigningKey:
    """The private key: from the variable ``config.key_env`` names, else the key file, made
    now if missing and ``may_create`` (the caller says whether no checkpoint exists yet)."""
    if config.key_env:
        return SigningKey(_from_env(config.key_env), f"${config.key_env}")
    path = config.key_file
    if not path.exists():
        if not may_create:
            raise BadInput(
                f"the audit signing key {path} is missing but the store holds checkpoints "
                "signed with it: restore the file from a backup (or name the key's variable "
                "in EXCHANGE_AUDIT_KEY_ENV); a new key would sign a history the old one never saw"
            )
        _make(path, Ed25519PrivateKey.generate())
    return SigningKey(_read_file(path), str(path))


def trusted_public_key(config: AuditSettings, *, required: bool) -> Ed25519PublicKey | None:
    """The public key verifiers trust (``public_key``); None when there is none and it is not
    ``required`` (a store without checkpoints has nothing signed to check)."""
    if not required and not config.key_env:
        if not public_path(config.key_file).exists() and not config.key_file.exists():
            return None
    return public_key(config)


def public_key(config: AuditSettings) -> Ed25519PublicKey:
    """The public key verifiers use: the ``.pub`` file beside the key file if there is one,
    else derived from the private key (the variable or the file)."""
    if not config.key_env:
        pub = public_path(config.key_file)
        if pub.exists():
            return load_public(pub)
    return signing_key(config, may_create=False).public


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key")
    return key


def _from_env(name: str) -> Ed25519PrivateKey:
    pem = os.environ.get(name)
    if not pem:
        raise BadInput(
            f"EXCHANGE_AUDIT_KEY_ENV names the variable {name}, which is not set (or empty): "
            "set it to the audit signing key's PEM"
        )
    return _parse(pem.encode(), f"the variable {name} (named by EXCHANGE_AUDIT_KEY_ENV)")


def _read_file(path: Path) -> Ed25519PrivateKey:
    pem = read_private(path, "the audit signing key", "engine user")
    return _parse(pem, f"the audit signing key {path}")


def _parse(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's message could quote the input: say only where it came from.
        raise BadInput(f"{where} is not a PEM private key without a passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{where} is not an Ed25519 private key")
    return key


def _make(path: Path, private: Ed25519PrivateKey) -> bool:
    """Write ``private`` (and its public half) unless another process has just made a key
    there (the first one made wins); whether this one won."""
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not publish_once(path, pem):
        return False
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = public_path(path)
    pub_tmp = pub_path.with_name(f"{pub_path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    write_new(pub_tmp, pub, 0o644)
    os.replace(pub_tmp, pub_path)  # the private key just made is the one this half belongs to
    return True
