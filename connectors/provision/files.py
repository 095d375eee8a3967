"""FTP and SFTP: a department's area is a directory on the platform's file node; its login a
credential whose reach is that directory.

Both work on the file node's own disk, through an admin "connection" that is a ``file://`` URL
of the file server's root directory (the machine itself, or a mount of it), with where the
server reads its accounts in the query:

- SFTP (``file:///srv/sftp?keys=/etc/ssh/exchange_keys``), for OpenSSH: the department's
  directory ``<root>/<area>`` is the login's chroot (mode 0755, as sshd requires of a
  ``ChrootDirectory``), with ``files/`` inside it for the department to write in; the login's
  ``<keys>/<login>`` holds its one ``authorized_keys`` entry, ``restrict`` first (no shell, no
  forwarding, no pty). sshd is configured once (docs/provisioning.md): ``AuthorizedKeysFile
  <keys>/%u``, ``ChrootDirectory <root>/%u``, ``ForceCommand internal-sftp``. The area is the
  login's name (``%u``). A reset replaces the entry: the old key stops working.
- FTP (``file:///srv/ftp?accounts=/etc/exchange/ftp-accounts``): the directory ``<root>/<area>``
  and a line ``login:hash:area`` in the virtual-users file the FTP server authenticates against
  (scrypt, ``$scrypt$n=16384,r=8,p=1$salt$hash``, base64), written whole to a temporary file
  and renamed over the old one (mode 0600), so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.provision.base import AccountProvisioner, Credential, Reach, checked_name
from exchange.kernel.errors import BadInput

#: The options every entry starts with: OpenSSH's ``restrict`` turns off port, agent and X11
#: forwarding, the pty and ~/.ssh/rc (sshd's ForceCommand keeps the login to internal-sftp).
KEY_OPTIONS = "restrict"


def _admin_paths(node: str, url: str, key: str) -> tuple[Path, Path]:
    parts = urlsplit(url)
    if parts.scheme != "file" or not parts.path:
        raise BadInput(
            f"node {node!r}: the admin connection of a file node is a file:// URL of the "
            f"server's root with ?{key}=<path>"
        )
    option = parse_qs(parts.query).get(key)
    if not option:
        raise BadInput(f"node {node!r}: the admin URL names no {key}= path")
    return Path(unquote(parts.path)), Path(option[0])


def _write_private(path: Path, text: str, mode: int) -> None:
    """``text`` into ``path`` through a temporary file renamed over it (mode ``mode``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def authorized_keys_entry(public_key: str) -> str:
    """The one line of a login's authorized_keys: ``restrict`` and the public key."""
    fields = public_key.strip().split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-", "sk-")) or "\n" in public_key:
        raise BadInput("an SFTP credential is one OpenSSH public key line")
    return f"{KEY_OPTIONS} {' '.join(fields)}\n"


class SFTPProvisioner(AccountProvisioner):
    kind = "sftp"
    area_word = "directory"
    takes = "public_key"

    def __init__(self, node: str, admin_url: str) -> None:
        super().__init__(node, admin_url)
        self.root, self.keys = _admin_paths(node, admin_url, "keys")

    def ensure_area(self, area: str) -> bool:
        chroot = self.root / checked_name(area, "directory")
        made = not chroot.exists()
        chroot.mkdir(mode=0o755, parents=True, exist_ok=True)
        (chroot / "files").mkdir(mode=0o770, exist_ok=True)
        return made

    def set_login(self, login: str, area: str, credential: Credential) -> None:
        checked_name(login, "login")
        if area != login:
            raise BadInput(
                f"node {self.node!r}: an SFTP login's directory is named after it "
                f"(ChrootDirectory %u): {area!r} is not {login!r}"
            )
        _write_private(
            self.keys / login, authorized_keys_entry(self._credential(credential)), 0o644
        )

    def revoke(self, login: str) -> None:
        (self.keys / checked_name(login, "login")).unlink(missing_ok=True)

    def reach(self, login: str) -> Reach | None:
        if not (self.keys / checked_name(login, "login")).exists():
            return None
        return Reach(login, (login,) if (self.root / login).is_dir() else ())


def scrypt_hash(password: str) -> str:
    """The virtual-users file's form of a password."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"$scrypt$n=16384,r=8,p=1${b64(salt).decode()}${b64(digest).decode()}"


def scrypt_verify(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (``scrypt_hash``'s form) was made from."""
    try:
        _, scheme, params, salt, digest = stored.split("$")
        opts = dict(p.split("=") for p in params.split(","))
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(opts["n"]),
            r=int(opts["r"]),
            p=int(opts["p"]),
            dklen=32,
        )
    except (ValueError, KeyError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(got, base64.b64decode(digest))


def read_accounts(path: Path) -> dict[str, tuple[str, str]]:
    """The virtual-users file: login -> (password hash, area)."""
    if not path.exists():
        return {}
    accounts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            login, stored, area = line.split(":")
            accounts[login] = (stored, area)
    return accounts


class FTPProvisioner(AccountProvisioner):
    kind = "ftp"
    area_word = "directory"

    def __init__(self, node: str, admin_url: str) -> None:
        super().__init__(node, admin_url)
        self.root, self.accounts = _admin_paths(node, admin_url, "accounts")

    def ensure_area(self, area: str) -> bool:
        path = self.root / checked_name(area, "directory")
        made = not path.exists()
        path.mkdir(mode=0o770, parents=True, exist_ok=True)
        return made

    def _write(self, accounts: dict[str, tuple[str, str]]) -> None:
        lines = [f"{login}:{stored}:{area}\n" for login, (stored, area) in sorted(accounts.items())]
        _write_private(self.accounts, "".join(lines), 0o600)

    def set_login(self, login: str, area: str, credential: Credential) -> None:
        checked_name(login, "login")
        checked_name(area, "directory")
        accounts = read_accounts(self.accounts)
        accounts[login] = (scrypt_hash(self._credential(credential)), area)
        self._write(accounts)

    def revoke(self, login: str) -> None:
        accounts = read_accounts(self.accounts)
        if accounts.pop(checked_name(login, "login"), None) is not None:
            self._write(accounts)

    def reach(self, login: str) -> Reach | None:
        entry = read_accounts(self.accounts).get(checked_name(login, "login"))
        return None if entry is None else Reach(login, (entry[1],))
