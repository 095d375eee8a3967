"""Fan one file out to 3 SFTP subscribers on loopback; compare with OpenSSH's ``sftp`` client.

    .venv/bin/python -m bench.sftp_fanout                 # 1 GiB
    .venv/bin/python -m bench.sftp_fanout --mib 256 --knobs

Needs OpenSSH's server and client (``sshd``, ``sftp``, ``ssh-keygen``). If they are missing:

    apt-get update && apt-get install -y openssh-server openssh-client

The script starts its own ``sshd`` on a free loopback port with a config, host key and client
key in a temporary directory (nothing system-wide is touched), serving ``internal-sftp``. The
provider's directory and three subscribers' directories live on that one server.

Measured, in this process: the engine's real steps (plan → pull once → push to each of the
3 subscribers with verification → record) and OpenSSH's ``sftp`` moving the same file up and
down on the same server with the same cipher; printed as MB/s and ratios, with the peak RSS
of this process. Dirty pages are flushed (``sync``) before every timed transfer so that no
transfer pays for the writeback of the one before. The engine's SSH layer is its default:
OpenSSH's ``ssh`` under paramiko's SFTP client (connectors/files/openssh.py). ``--knobs``
also times one upload and one download through the transport for each setting the defaults
were chosen from (SSH layer, cipher, request size, read window, reads in flight).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

OPENSSH = {"sshd": "/usr/sbin/sshd", "sftp": "sftp", "ssh-keygen": "ssh-keygen"}
INSTALL = "apt-get update && apt-get install -y openssh-server openssh-client"
CIPHER = "aes128-gcm@openssh.com"
CODE = "BENCH-FILES-0001"


def _which(name: str) -> str | None:
    path = OPENSSH[name]
    return path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SSHD:
    """A private sshd on 127.0.0.1 (key authentication, internal-sftp)."""

    def __init__(self, work: Path):
        self.work = work
        self.port = _free_port()
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        keygen = _which("ssh-keygen")
        assert keygen
        for name in ("host_key", "client_key"):
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True
            )
        (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
        host_pub = (work / "host_key.pub").read_text().split()
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (work / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {work / "host_key"}
PidFile {work / "sshd.pid"}
AuthorizedKeysFile {work / "authorized_keys"}
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
Ciphers {CIPHER},aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr
LogLevel ERROR
"""
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        sshd = _which("sshd")
        assert sshd
        self.log = open(work / "sshd.log", "wb")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(work / "sshd_config")], stderr=self.log
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("sshd did not start")

    def url(self, base: str) -> str:
        return (
            f"sftp://{self.user}@127.0.0.1:{self.port}{base}"
            f"?key_file={self.work / 'client_key'}&known_hosts={self.known_hosts}"
        )

    def sftp(self, command: str, durable: Path | None = None) -> float:
        """Seconds for OpenSSH's sftp client to run one batch command (+ fsync ``durable``)."""
        batch = self.work / "batch"
        batch.write_text(command + "\n")
        args = [
            _which("sftp") or "sftp", "-q", "-b", str(batch), "-P", str(self.port),
            "-i", str(self.work / "client_key"), "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"Ciphers={CIPHER}", "-o", "BatchMode=yes", f"{self.user}@127.0.0.1",
        ]  # fmt: skip
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        if durable is not None:
            with open(durable, "rb") as fh:
                os.fsync(fh.fileno())
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def make_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 << 20)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
            block = block[1:] + block[:1]  # not one repeated block: defeats dedup and caches


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _TransferClock:
    """Seconds spent in the transfers themselves (download/upload), apart from each step's
    bookkeeping: metadata store, ledger, done-files made durable with fsync."""

    def __init__(self) -> None:
        import exchange.files.pull as pull_mod
        import exchange.files.push as push_mod

        self.spent: list[float] = []
        self.patched = [(pull_mod, "download"), (push_mod, "upload")]
        self.saved = [getattr(m, n) for m, n in self.patched]

    def __enter__(self) -> _TransferClock:
        for (mod, name), fn in zip(self.patched, self.saved, strict=True):
            setattr(mod, name, self._timed(fn))
        return self

    def _timed(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent.append(time.perf_counter() - t0)

        return timed

    def __exit__(self, *exc: object) -> None:
        for (mod, name), fn in zip(self.patched, self.saved, strict=True):
            setattr(mod, name, fn)

    def take(self) -> float:
        total, self.spent = sum(self.spent), []
        return total


def engine_fanout(
    sshd: SSHD, work: Path, size: int, verify: str, baseline: bool = False
) -> dict[str, float]:
    """The engine's own steps, timed one by one (with ``baseline``: each right after OpenSSH
    moved the same file the same way, so that both meet the same page cache and disk)."""
    from exchange import flow
    from exchange.kernel.settings import Settings
    from exchange.workflow.grants import add_subscription
    from exchange.workspace import Workspace

    home = work / f"home-{verify}"
    shutil.rmtree(home, ignore_errors=True)  # the last round's
    home.mkdir()
    nodes = "\n".join(
        f"  - {{name: {n}, kind: sftp, connection: {{env: BENCH_{n.upper()}}}}}"
        for n in ("provider", "sub1", "sub2", "sub3")
    )
    (home / "catalog.yaml").write_text(
        f"""version: 1
nodes:
{nodes}
resources:
  - code: {CODE}
    name: bench
    kind: file
    provider: provider
    share: unconditional
    files: {{path: big.bin, verify: {verify}}}
""",
        encoding="utf-8",
    )
    os.environ["BENCH_PROVIDER"] = sshd.url(str(work / "provider"))
    for i in (1, 2, 3):
        target = work / f"sub{i}-{verify}"
        target.mkdir(exist_ok=True)
        os.environ[f"BENCH_SUB{i}"] = sshd.url(str(target))
    ws = Workspace.open(
        home / "catalog.yaml", Settings(home=home, db_url=f"sqlite:///{home / 'x.db'}")
    )
    until = dt.date.today() + dt.timedelta(days=30)
    for i in (1, 2, 3):
        add_subscription(ws, CODE, f"sub{i}", [], until, target_dir="in")
    out: dict[str, float] = {}
    run = flow.plan(ws, CODE)
    src = work / "provider/big.bin"
    if baseline:  # OpenSSH on the same file, right before the engine, on the same disk state
        out["pull:openssh"] = sshd.sftp(f"get {src} {work}/openssh-down.bin")
        (work / "openssh-down.bin").unlink()
        out["pull:openssh+fsync"] = sshd.sftp(
            f"get {src} {work}/openssh-down.bin", durable=work / "openssh-down.bin"
        )
        (work / "openssh-down.bin").unlink()
    with _TransferClock() as clock:
        os.sync()
        t0 = time.perf_counter()
        flow.extract(ws, run)
        out["pull"] = time.perf_counter() - t0
        out["pull:transfer"] = clock.take()
        for d in run.plan.deliveries:
            node = d.node
            if baseline:
                there = work / f"{node}-{verify}"
                out[f"{node}:openssh"] = sshd.sftp(f"put {src} {there}/openssh-up.bin")
                (there / "openssh-up.bin").unlink()
            os.sync()
            t0 = time.perf_counter()
            result = flow.deliver(ws, run, d.subscription_id)
            out[node] = time.perf_counter() - t0
            out[f"{node}:transfer"] = clock.take()
            assert result.status == "delivered", result.error
    summary = flow.record(ws, run)
    assert summary.status == "succeeded"
    ws.close()
    shutil.rmtree(home, ignore_errors=True)
    for i in (1, 2, 3):
        shutil.rmtree(work / f"sub{i}-{verify}", ignore_errors=True)
    return out


def knobs(sshd: SSHD, work: Path, size: int) -> None:
    """One upload and one download through the transport per setting."""
    from connectors.files import open_transport
    from connectors.files.sftp import SFTPTransport
    from connectors.files.transfer import Session, download, upload

    base = open_transport("k", "sftp", sshd.url(str(work)))
    assert isinstance(base, SFTPTransport)
    defaults = base.opts
    base.close()
    src = work / "provider/big.bin"
    settings = [
        ("defaults", {}),
        ("client paramiko", {"client": "paramiko"}),
        ("cipher aes128-ctr", {"cipher": "aes128-ctr"}),
        ("cipher chacha20", {"cipher": "chacha20-poly1305@openssh.com"}),
        ("request 32 KiB", {"request_size": 32 << 10}),
        ("request 128 KiB", {"request_size": 128 << 10}),
        ("read window 2 MiB", {"read_window": 2 << 20}),
        ("read window 32 MiB", {"read_window": 32 << 20}),
        ("max requests 8", {"max_requests": 8}),
        ("max requests 64", {"max_requests": 64}),
    ]  # fmt: skip
    d = defaults
    print(
        f"\nknobs ({size >> 20} MiB, one transfer each; defaults: client {d.client}, cipher "
        f"{d.cipher}, request {d.request_size >> 10} KiB, read window {d.read_window >> 20} MiB "
        f"x 2, {d.max_requests} reads in flight per window)"
    )
    print(f"{'setting':<20} {'upload MB/s':>12} {'download MB/s':>14}")
    digest = ""  # uploads here are timed without the hash check
    for label, change in settings:
        opts = replace(defaults, **change)  # type: ignore[arg-type]
        sess = Session(functools.partial(SFTPTransport, "k", opts))
        t0 = time.perf_counter()
        upload(sess, src, "knob.part", "knob.bin", sha256=digest, verify_hash=False)
        up = time.perf_counter() - t0
        local = work / "knob-down.bin"
        local.unlink(missing_ok=True)
        t0 = time.perf_counter()
        download(sess, "knob.bin", local)
        down = time.perf_counter() - t0
        sess.close()
        local.unlink()
        (work / "knob.bin").unlink()
        print(f"{label:<20} {mbps(size, up):>12.0f} {mbps(size, down):>14.0f}", flush=True)


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}" if len(xs) > 1 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, medians printed (default 3)")
    ap.add_argument("--knobs", action="store_true", help="also time each transport setting")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default /tmp)")
    args = ap.parse_args()
    missing = [n for n in OPENSSH if not _which(n)]
    if missing:
        print(f"missing {', '.join(missing)}; install OpenSSH with:\n    {INSTALL}")
        raise SystemExit(2)
    size = args.mib << 20
    work = Path(tempfile.mkdtemp(prefix="sftp-fanout-", dir=args.work))
    sshd = SSHD(work)
    subs = ("sub1", "sub2", "sub3")
    try:
        make_file(work / "provider/big.bin", size)
        print(
            f"file {size >> 20} MiB on loopback sshd :{sshd.port}, cipher {CIPHER}, "
            f"{args.repeat} rounds (OpenSSH and the engine take turns in each)"
        )
        t: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for verify in ("size", "sha256"):
                for step, secs in engine_fanout(
                    sshd, work, size, verify, baseline=verify == "size"
                ).items():
                    t.setdefault(f"{verify}:{step}", []).append(secs)
        m = {k: _median(v) for k, v in t.items()}
        head = f"{'(median of rounds)':<48} {'s':>6} {'MB/s':>6} {'ratio':>6}  {'to':<15} range s"
        print(f"\n{head}")
        rows = [
            ("OpenSSH sftp get", "size:pull:openssh", "", ""),
            ("OpenSSH sftp get, then fsync the file", "size:pull:openssh+fsync", "", ""),
            ("engine pull: transfer (download+sha256)", "sha256:pull:transfer",
             "size:pull:openssh", "get"),
            ("engine pull: step (+ manifest, done-file fsync)", "sha256:pull",
             "size:pull:openssh+fsync", "get+fsync"),
        ]  # fmt: skip
        for n in subs:
            rows += [
                (f"OpenSSH sftp put to {n}", f"size:{n}:openssh", "", ""),
                (f"engine push {n}: transfer (upload+size+rename)", f"size:{n}:transfer",
                 f"size:{n}:openssh", "put just before"),
                (f"engine push {n}: step (+ ledger, fsync)", f"size:{n}", f"size:{n}:openssh",
                 "put just before"),
                (f"engine push {n}: step, sha256 read back", f"sha256:{n}", f"size:{n}:openssh",
                 "put"),
            ]  # fmt: skip
        for label, key, base, to in rows:
            secs = m[key]
            ratio = f"{m[base] / secs:>6.2f}" if base else f"{'':>6}"
            print(
                f"{label:<48} {secs:>6.2f} {mbps(size, secs):>6.0f} {ratio}  {to:<15} "
                f"{_spread(t[key])}"
            )
        ups = [m[f"size:{n}:openssh"] for n in subs]
        total = m["sha256:pull"] + sum(m[f"sha256:{n}"] for n in subs)
        print(f"\nfan-out to 3, verified, end to end: {total:.2f} s "
              f"(OpenSSH: 1 get + 3 puts {m['size:pull:openssh'] + sum(ups):.2f} s, "
              "unverified)")  # fmt: skip
        # The engine's transfers run on a connected session; OpenSSH's times include starting
        # sftp and its handshake. The steps include connecting, so they are the fair ratios.
        worst_step = min(m[f"size:{n}:openssh"] / m[f"size:{n}"] for n in subs)
        worst_up = min(m[f"size:{n}:openssh"] / m[f"size:{n}:transfer"] for n in subs)
        print(f"targets: each upload >= 0.8x OpenSSH: {worst_step:.2f}x as a whole step "
              f"({worst_up:.2f}x the transfer alone); pull >= 0.6x OpenSSH: "
              f"{m['size:pull:openssh+fsync'] / m['sha256:pull']:.2f}x as a whole step "
              f"against get+fsync ({m['size:pull:openssh'] / m['sha256:pull:transfer']:.2f}x "
              f"the transfer against get, {m['size:pull:openssh'] / m['sha256:pull']:.2f}x the "
              f"step against plain get); peak RSS <= 200 MB: {peak_rss_mb():.0f} MB")  # fmt: skip
        if args.knobs:
            knobs(sshd, work, size)
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
