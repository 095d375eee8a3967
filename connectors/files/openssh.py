"""OpenSSH's ``ssh`` client as the SSH layer under paramiko's SFTP client.

This is how OpenSSH's own ``sftp`` works (and lftp's): ``ssh -s host sftp`` does the SSH
protocol (key exchange, ciphers, one packet per 32 KiB) in C, in a process of its own, and
the SFTP protocol goes over its stdin/stdout. Here paramiko's ``SFTPClient`` speaks SFTP over a
socketpair to that process. Measured on loopback (``bench/sftp_fanout.py``, 1 GiB): paramiko's
own SSH layer moved files at 0.34-0.70x OpenSSH's ``sftp``, mostly CPU spent framing and
encrypting packets in Python; carried by ``ssh`` the same SFTP client uploads at 0.86-1.1x.

The platform's rules hold as with paramiko: the host key is checked against the configured
known_hosts only (``StrictHostKeyChecking=yes``, nothing added or updated), nothing of the
user's own SSH set-up is read (no ~/.ssh/config, agent, default keys), a password reaches
``ssh`` through ``SSH_ASKPASS`` from the child's environment, never its command line.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO

_ASKPASS = "#!/bin/sh\nprintf '%s\\n' \"$EXCHANGE_SSH_SECRET\"\n"
_askpass_lock = threading.Lock()
_askpass_path: Path | None = None


def ssh_binary(name: str = "ssh") -> str | None:
    """The path of OpenSSH's client, or None where it is not installed."""
    return shutil.which(name)


def _askpass() -> Path:
    """A private helper that prints the secret ssh asks for (from the child's environment)."""
    global _askpass_path
    with _askpass_lock:
        if _askpass_path is None or not _askpass_path.exists():
            folder = Path(tempfile.mkdtemp(prefix="exchange-askpass-"))  # mode 0700
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = folder / "askpass"
            path.write_text(_ASKPASS, encoding="ascii")
            path.chmod(0o700)
            _askpass_path = path
        return _askpass_path


def ssh_command(
    ssh: str,
    *,
    host: str,
    port: int,
    username: str,
    known_hosts: str,
    key_file: str | None,
    askpass: bool,
    cipher: str | None,
    timeout: float,
) -> list[str]:
    """The ``ssh -s … sftp`` command line for one node (no secret in it).

    ``askpass``: a password or key passphrase will come from SSH_ASKPASS (BatchMode would
    refuse to ask for it); without it ssh never asks for anything. ``cipher`` goes first in
    OpenSSH's own list (a server that lacks it still gets one of OpenSSH's defaults).
    """
    options = {
        "BatchMode": "no" if askpass else "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "IdentityAgent": "none",
        "IdentitiesOnly": "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
        "Compression": "no",
        "ConnectTimeout": str(max(1, int(timeout))),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "NumberOfPasswordPrompts": "1",
        "LogLevel": "ERROR",
    }
    if cipher:
        options["Ciphers"] = f"^{cipher}"
    if key_file is None:
        options["PubkeyAuthentication"] = "no"
        options["PreferredAuthentications"] = "password,keyboard-interactive"
    else:
        options["PreferredAuthentications"] = "publickey"
        options["PasswordAuthentication"] = "no"
        options["KbdInteractiveAuthentication"] = "no"
    argv = [ssh, "-F", "/dev/null", "-T", "-x", "-a", "-p", str(port)]
    if username:
        argv += ["-l", username]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    if key_file is not None:
        argv += ["-i", key_file]
    return [*argv, "-s", "--", host, "sftp"]


class SSHProcess:
    """A running ``ssh -s … sftp``; its socket end behaves as the channel paramiko expects."""

    def __init__(self, argv: list[str], secret: str | None):
        ours, theirs = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "DISPLAY"))}
        if secret is not None:
            env.update(
                SSH_ASKPASS=str(_askpass()), SSH_ASKPASS_REQUIRE="force", EXCHANGE_SSH_SECRET=secret
            )
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed in close()
        try:
            # A session of its own: no terminal for ssh to prompt on, whatever happens.
            self.proc = subprocess.Popen(  # noqa: S603  # argv built by ssh_command, no shell
                argv,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self.stderr,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            self.stderr.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.errors = ""  # what ssh printed, once closed

    # -- what paramiko's SFTPClient and SFTPFile call on their channel ---------------------
    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def recv_ready(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def get_name(self) -> str:
        return f"ssh pid {self.proc.pid}"

    # -- ours ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop ssh (it exits at the end of its input) and keep what it printed."""
        if self.stderr.closed:
            return
        try:
            self.sock.close()  # ssh sees the end of its input and exits
        finally:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.stderr.seek(0)
            self.errors = self.stderr.read().decode(errors="replace")
            self.stderr.close()


_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/=]+)")


def classify(stderr: str) -> tuple[str, str]:
    """What kind of failure ssh reported: (kind, detail); kind is hostkey|auth|connect."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "verification failed" in stderr:
        m = _FINGERPRINT.search(stderr)
        return "hostkey", (m.group(1) if m else "")
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return "auth", ""
    return "connect", ""
