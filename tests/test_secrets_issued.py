"""Secrets the platform issues (exchange/accounts/secrets.py): passwords per policy, SSH key
pairs, and sealing to a contact's public key."""

from __future__ import annotations

import io
import string

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from connectors.provision.files import authorized_keys_entry
from exchange.accounts.secrets import (
    CLASSES,
    PasswordPolicy,
    generate_contact_key,
    generate_password,
    generate_ssh_key,
    seal,
    unseal,
)
from exchange.kernel.errors import BadInput


def test_a_default_password_is_long_and_draws_on_every_class() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    for p in passwords:
        assert len(p) == 20
        assert all(any(ch in CLASSES[c] for ch in p) for c in CLASSES)
        assert not set(p) & set("'\"\\ /:@?&$`")  # survives a URL and a shell


def test_a_policy_sets_length_and_classes() -> None:
    p = generate_password(PasswordPolicy(length=32, classes=("lower", "digits")))
    assert len(p) == 32 and set(p) <= set(string.ascii_lowercase + string.digits)


@pytest.mark.parametrize(
    ("length", "classes", "says"),
    [(8, ("lower",), "below 12"), (16, ("emoji",), "choose from"), (16, (), "choose from")],
)
def test_a_weak_or_unknown_policy_is_refused(
    length: int, classes: tuple[str, ...], says: str
) -> None:
    with pytest.raises(BadInput, match=says):
        PasswordPolicy(length=length, classes=classes)


def test_an_ssh_key_pair_is_ed25519_in_openssh_form() -> None:
    pair = generate_ssh_key(comment="d_x@fe_files")
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh))
    kind, body, comment = pair.public_openssh.split()
    assert (kind, comment) == ("ssh-ed25519", "d_x@fe_files")
    assert body == key.get_base64()
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_the_authorized_keys_entry_starts_with_restrict() -> None:
    pair = generate_ssh_key(comment="d_x@fe_files")
    assert authorized_keys_entry(pair.public_openssh) == f"restrict {pair.public_openssh}\n"
    for bad in ["ssh-ed25519", 'command="sh" ssh-ed25519 AAAA', "a\nb"]:
        with pytest.raises(BadInput):
            authorized_keys_entry(bad)


def test_a_sealed_secret_opens_with_the_contacts_key_alone() -> None:
    key, public = generate_contact_key()
    sealed = seal("Zq9-s3cr3t", public)
    assert sealed.startswith("cx1:") and "Zq9-s3cr3t" not in sealed
    assert unseal(sealed, key) == "Zq9-s3cr3t"
    assert seal("Zq9-s3cr3t", public) != sealed  # a fresh ephemeral key each time
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        unseal(sealed, X25519PrivateKey.generate())


def test_a_contact_key_may_be_pem() -> None:
    key = X25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert unseal(seal("pw", pem.decode()), key) == "pw"
    with pytest.raises(BadInput, match="X25519"):
        seal("pw", "not a key")
