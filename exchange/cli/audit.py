"""``exchange audit ...``: the audit log's signing key, its seals and its verification
(``exchange.audit``); its export and who-received-what live in ``exchange.cli.audit_trail``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exchange.cli.options import store
from exchange.cli.render import console, errors

if TYPE_CHECKING:  # only annotations: importing the CLI must not load the engine
    from exchange.audit.verify import Report
    from exchange.store import Store

app = typer.Typer(name="audit", no_args_is_help=True, help="The signed, hash-chained audit log.")


@app.command("keygen")
def audit_keygen(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the private key here (default: the configured key file); the public "
            "key goes beside it, with .pub appended.",
        ),
    ] = None,
) -> None:
    """Make a new Ed25519 signing key for the audit log's checkpoints (never overwrites one)."""
    from exchange.audit import keys
    from exchange.audit.settings import AuditSettings
    from exchange.kernel.settings import Settings

    made = keys.keygen(out or AuditSettings.from_env(Settings.from_env()).key_file)
    console.print(f"private key: {made.path}", markup=False, highlight=False)
    console.print(f"public key:  {made.public_path}", markup=False, highlight=False)
    console.print(f"key id:      {made.key_id}", markup=False, highlight=False)


@app.command("seal")
def audit_seal() -> None:
    """Chain the pending events and sign a checkpoint over them now, in the store and in the
    witness."""
    from exchange.audit.seal import seal
    from exchange.audit.settings import AuditSettings
    from exchange.kernel.settings import Settings

    witness = AuditSettings.from_env(Settings.from_env()).witness
    with store() as st:
        result = seal(st, force=True)
        cp = result.checkpoint
        number = _checkpoint_number(st, cp.seq_from) if cp is not None else 0
    chained = f"chained {_plural(result.chained, 'pending event')}; " if result.chained else ""
    if cp is None:
        console.print(f"{chained}nothing new to seal since the last checkpoint")
        return
    console.print(
        f"{chained}checkpoint {number} ({_span(cp.seq_from, cp.seq_to)}, "
        f"{_plural(cp.count, 'event')}): head hash {cp.head_hash}, signed by key {cp.key_id}, "
        f"witnessed in {witness}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _checkpoint_number(st: Store, seq_from: int) -> int:
    """The checkpoint's number as ``verify`` names it: its place in sequence order."""
    import sqlalchemy as sa

    from exchange.store.models import AuditCheckpoint

    with st.session() as s:
        query = sa.select(sa.func.count()).where(AuditCheckpoint.seq_from <= seq_from)
        return int(s.execute(query).scalar_one())


@app.command("verify")
def audit_verify(
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Check signatures under this public key (PEM), an auditor's own copy, instead "
            "of the configured key's public half.",
        ),
    ] = None,
) -> None:
    """Check the hash chain, every checkpoint's signature and the witness against the store;
    name everything found and where (exit 1 if anything was)."""
    from exchange.audit.keys import load_public
    from exchange.audit.settings import AuditSettings
    from exchange.audit.verify import verify
    from exchange.kernel.errors import BadInput
    from exchange.kernel.settings import Settings

    settings = AuditSettings.from_env(Settings.from_env())
    if public_key is not None and not public_key.is_file():
        raise BadInput(f"--public-key {public_key}: no such file")
    key = load_public(public_key) if public_key is not None else None
    with store() as st:
        report = verify(st, settings, key)
    for finding in report.findings:
        errors.print(finding.message, markup=False, highlight=False, soft_wrap=True)
    for note in _notes(report):
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    for warning in report.warnings:
        errors.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if report.findings:
        unreadable = any(f.kind in ("table-missing", "table-unreadable") for f in report.findings)
        checked = (
            ": the audit tables could not be read"
            if unreadable
            else f" in {_plural(report.events, 'event')} and "
            f"{_plural(report.checkpoints, 'checkpoint')}"
        )
        errors.print(
            f"audit log NOT intact: {_plural(len(report.findings), 'finding')}{checked}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(_summary(report), markup=False, highlight=False, soft_wrap=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _span(first: int, last: int) -> str:
    """``event 7`` or ``events 7-9``, as ``verify`` names ranges."""
    return f"event {first:,}" if first == last else f"events {first:,}-{last:,}"


def _summary(report: Report) -> str:
    """The one line an intact log gets."""
    events = _plural(report.events, "event")
    if not report.checkpoints:
        sealed = "no checkpoint yet"
    else:
        sealed = (
            f"{_plural(report.checkpoints, 'checkpoint')} signed by key {report.key_id}, "
            f"witnessed in {report.witness}"
        )
    tail = f"{_plural(report.unsealed, 'event')} after the last checkpoint"
    return f"audit log intact: {events}, {sealed}; {tail}"


def _notes(report: Report) -> list[str]:
    """What is not yet sealed: not tampering, said so."""
    notes = []
    if report.unchained:
        notes.append(
            f"{_plural(report.unchained, 'event')} pending: appended, not yet chained (the "
            "next seal chains them)"
        )
    if report.unwitnessed:
        notes.append(
            f"{_plural(report.unwitnessed, 'checkpoint')} in the store not yet witnessed: a "
            "seal was interrupted before writing the witness (the next seal writes it)"
        )
    return notes


def _register_trail() -> None:
    from exchange.cli import audit_trail

    audit_trail.register(app)


_register_trail()
