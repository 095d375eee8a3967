"""Secrets the platform issues: generated passwords, SSH key pairs, and sealing either to a
contact's public key.

A secret made here is shown once to the applicant (the CLI or the console prints it, nothing
stores it) or sealed to the contact's X25519 public key, so that what travels by e-mail is
ciphertext only the contact can open. Nothing here logs or keeps what it makes.

The sealing scheme (``cx1``), an ECIES in the manner of age's X25519 recipients: an ephemeral
X25519 key agrees a shared secret with the recipient's key; HKDF-SHA256 (salt: the ephemeral
public key then the recipient's, info ``city-exchange sealed secret v1``) derives a 32-byte
key; ChaCha20-Poly1305 with a zero nonce (the key is never used twice) encrypts the secret,
the two public keys as associated data. The sealed text is ``cx1:`` and the URL-safe base64 of
the ephemeral public key (32 bytes) followed by the ciphertext and its tag. A contact's public
key is given as the base64 of its 32 raw bytes, or as a PEM ``PUBLIC KEY``.
"""

from __future__ import annotations

import base64
import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from exchange.kernel.errors import BadInput

#: The alphabet classes a policy may require; punctuation leaves out quotes, backslash and
#: the characters URLs and shells treat specially, so that a password survives being typed
#: into a connection URL or a terminal.
CLASSES: dict[str, str] = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": "!#%+,-.=^_~",
}


@dataclass(frozen=True)
class PasswordPolicy:
    """How long a generated password is and which alphabet classes it draws from (one
    character of each, at least). The default answers the rule against weak passwords:
    20 characters of all four classes (about 124 bits)."""

    length: int = 20
    classes: tuple[str, ...] = ("lower", "upper", "digits", "symbols")

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown or not self.classes:
            raise BadInput(
                f"password policy: classes {list(self.classes)!r}: choose from {list(CLASSES)}"
            )
        if self.length < max(12, len(self.classes)):
            raise BadInput(f"password policy: length {self.length} is below 12")


def generate_password(policy: PasswordPolicy | None = None) -> str:
    """A random password per ``policy`` (``secrets``: the operating system's CSPRNG)."""
    policy = policy or PasswordPolicy()
    alphabet = "".join(CLASSES[c] for c in policy.classes)
    while True:  # redraw rather than force a class in (a forced position is guessable)
        password = "".join(secrets.choice(alphabet) for _ in range(policy.length))
        if all(any(ch in CLASSES[c] for ch in password) for c in policy.classes):
            return password


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 SSH key pair: the private key (OpenSSH PEM, the secret shown once) and the
    public key line (``ssh-ed25519 AAAA... comment``) the server's authorized_keys holds."""

    private_openssh: str
    public_openssh: str


def generate_ssh_key(comment: str = "") -> KeyPair:
    """A fresh Ed25519 key pair in OpenSSH's formats, the public line ending in ``comment``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = public.decode() + (f" {comment}" if comment else "")
    return KeyPair(private, line)


_INFO = b"city-exchange sealed secret v1"
_PREFIX = "cx1:"


def generate_contact_key() -> tuple[X25519PrivateKey, str]:
    """A contact's key pair for sealing: the private key and the public key as base64 (what
    the contact registers with the platform)."""
    key = X25519PrivateKey.generate()
    return key, base64.b64encode(_raw(key.public_key())).decode()


def seal(secret: str, public_key: str) -> str:
    """``secret`` encrypted to a contact's X25519 public key (see the module's scheme)."""
    recipient = _public_key(public_key)
    ephemeral = X25519PrivateKey.generate()
    eph_raw, rcp_raw = _raw(ephemeral.public_key()), _raw(recipient)
    key = _derive(ephemeral.exchange(recipient), eph_raw, rcp_raw)
    sealed = ChaCha20Poly1305(key).encrypt(bytes(12), secret.encode(), eph_raw + rcp_raw)
    return _PREFIX + base64.urlsafe_b64encode(eph_raw + sealed).decode()


def unseal(sealed: str, private_key: X25519PrivateKey) -> str:
    """What ``seal`` sealed, opened with the contact's private key (the contact's side)."""
    if not sealed.startswith(_PREFIX):
        raise BadInput("sealed secret: not a cx1 text")
    blob = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
    eph_raw, body = blob[:32], blob[32:]
    rcp_raw = _raw(private_key.public_key())
    key = _derive(
        private_key.exchange(X25519PublicKey.from_public_bytes(eph_raw)), eph_raw, rcp_raw
    )
    return ChaCha20Poly1305(key).decrypt(bytes(12), body, eph_raw + rcp_raw).decode()


def _derive(shared: bytes, eph_raw: bytes, rcp_raw: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_raw + rcp_raw, info=_INFO)
    return hkdf.derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _public_key(text: str) -> X25519PublicKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, X25519PublicKey):
                raise ValueError("not X25519")
            return key
        return X25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise BadInput(
            "contact public key: expected an X25519 key (base64 of 32 bytes or PEM)"
        ) from None
