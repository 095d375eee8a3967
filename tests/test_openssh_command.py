"""The ssh command line under SFTP: the platform's known_hosts only, nothing of the user's own
SSH set-up, no secret on it, and no way for ssh to stop and ask on a terminal."""

from __future__ import annotations

from connectors.files.openssh import classify, ssh_command


def options(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    return dict(p.split("=", 1) for p in pairs)


def test_host_keys_come_from_the_platforms_known_hosts_only() -> None:
    argv = ssh_command(
        "/usr/bin/ssh", host="10.1.2.3", port=2222, username="exchange",
        known_hosts="/etc/exchange/known_hosts", key_file="/etc/exchange/id_ed25519",
        askpass=False, cipher="aes128-gcm@openssh.com", timeout=30,
    )  # fmt: skip
    o = options(argv)
    assert argv[1:3] == ["-F", "/dev/null"]  # no ~/.ssh/config
    assert o["StrictHostKeyChecking"] == "yes"  # an unknown key is refused, never added
    assert o["UserKnownHostsFile"] == "/etc/exchange/known_hosts"
    assert o["GlobalKnownHostsFile"] == "/dev/null"
    assert o["UpdateHostKeys"] == "no"
    assert o["IdentityAgent"] == "none" and o["IdentitiesOnly"] == "yes"
    assert o["BatchMode"] == "yes"  # a key without passphrase: ssh never asks for anything
    assert o["Ciphers"] == "^aes128-gcm@openssh.com"  # first, OpenSSH's others after it
    assert argv[-4:] == ["-s", "--", "10.1.2.3", "sftp"]  # a host can never be read as an option


def test_a_password_node_asks_through_askpass_and_the_password_is_not_on_the_line() -> None:
    argv = ssh_command(
        "ssh", host="h", port=22, username="u", known_hosts="/k", key_file=None,
        askpass=True, cipher=None, timeout=5,
    )  # fmt: skip
    o = options(argv)
    assert o["BatchMode"] == "no" and o["PubkeyAuthentication"] == "no"
    assert o["NumberOfPasswordPrompts"] == "1"
    assert "-i" not in argv
    assert "Ciphers" not in o  # OpenSSH's own order


def test_what_ssh_printed_names_the_kind_of_failure() -> None:
    changed = (
        "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        "The fingerprint for the ED25519 key sent by the remote host is\n"
        "SHA256:abcDEF123+/xyz.\nHost key verification failed.\n"
    )
    assert classify(changed) == ("hostkey", "SHA256:abcDEF123+/xyz")
    assert classify("u@h: Permission denied (publickey,password).\n") == ("auth", "")
    assert classify("ssh: connect to host h port 22: Connection refused\n") == ("connect", "")
