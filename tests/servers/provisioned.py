"""The test FTP and SFTP servers with the accounts the engine provisions, many logins each.

Each reads the files a provisioner writes (``connectors/provision/files.py``) on every login,
as the real servers do:

- ``ProvisionedSFTPServer(root, keys)``: a login authenticates with a key in ``keys/<login>``
  (an entry without ``restrict`` is not accepted: the engine must write it), and sees
  ``root/<login>`` as its whole file system, like sshd's ``ChrootDirectory <root>/%u``.
- ``provisioned_ftp(root, accounts)``: the FTP test server whose authorizer checks the
  virtual-users file and confines each login to ``root/<area>``.
"""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from typing import Any

import paramiko
from paramiko import SFTPServer
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer

from connectors.provision.files import read_accounts, scrypt_verify
from tests.servers import sftp as base_sftp
from tests.servers.ftp import FTPTestServer


class _KeyAuth(base_sftp._Auth):
    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED  # provisioned SFTP logins use keys alone

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        srv = self.srv
        assert isinstance(srv, ProvisionedSFTPServer)
        path = srv.keys / username
        if not username.isidentifier() or not path.exists():
            return paramiko.AUTH_FAILED
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "restrict":
                if fields[1] == key.get_name() and base64.b64decode(fields[2]) == key.asbytes():
                    return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


class _ChrootFS(base_sftp._FS):
    def _real(self, path: str) -> Path:
        user = self.conn.get_username()
        assert user is not None
        return self.srv.root / user / self._rel(path)


class ProvisionedSFTPServer(base_sftp.SFTPTestServer):
    """The SFTP test server with a chroot and a key file per login (see the module)."""

    def __init__(self, root: Path, keys: Path):
        super().__init__(root)
        self.keys = Path(keys)

    def _serve_one(self, conn: socket.socket) -> None:
        t = paramiko.Transport(conn)
        with self.lock:
            self._transports.append(t)
        t.add_server_key(self.host_key)
        auth = _KeyAuth(self)
        auth.transport = t
        t.set_subsystem_handler("sftp", SFTPServer, _ChrootFS, srv=self)
        try:
            t.start_server(server=auth)
        except (paramiko.SSHException, EOFError, OSError):
            return
        chan = t.accept(10)
        while t.is_active() and not self._stopped.is_set():
            self._stopped.wait(0.05)
        del chan
        t.close()


class _AccountsAuthorizer(DummyAuthorizer):  # type: ignore[misc]
    """pyftpdlib's authorizer over the engine's virtual-users file, read on every login."""

    def __init__(self, root: Path, accounts: Path):
        super().__init__()
        self.root, self.accounts = root, accounts

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        entry = read_accounts(self.accounts).get(username)
        if entry is None or not scrypt_verify(password, entry[0]):
            raise AuthenticationFailed("Authentication failed.")
        home = os.path.realpath(self.root / entry[1])
        self.user_table[username] = {
            "pwd": "",
            "home": home,
            "perm": "elradfmwMT",
            "operms": {},
            "msg_login": "Login successful.",
            "msg_quit": "Goodbye.",
        }

    def get_home_dir(self, username: str) -> str:
        return str(self.user_table[username]["home"])


def provisioned_ftp(root: Path, accounts: Path) -> FTPTestServer:
    """The FTP test server authenticating against the engine's virtual-users file."""
    srv = FTPTestServer(root)
    srv.server.handler.authorizer = _AccountsAuthorizer(Path(root), Path(accounts))
    return srv
