"""``exchange code issue | rotate | revoke | list``: the authorization codes of API
subscriptions.

A code is printed once, when it is issued or rotated in; the store keeps only its prefix and
a keyed digest, so a lost code is replaced (``rotate``), never shown again. Each step is taken
as the user named by ``--as`` (or ``$EXCHANGE_USER``): a requester of the subscription's
department or a platform admin; without one the CLI acts as the platform admin. ``list``
shows how many calls each working code made today when Redis (``$EXCHANGE_REDIS_URL``, keys
under ``$EXCHANGE_REDIS_NAMESPACE``, as the gateway counts them) is reachable.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Annotated

import typer

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    AtOpt,
    CatalogOpt,
    IdArg,
    parse_time,
    principal,
    workspace,
)
from exchange.cli.render import console
from exchange.kernel.errors import BadInput

app = typer.Typer(
    name="code", no_args_is_help=True, help="Authorization codes of API subscriptions."
)

_GRACE = re.compile(r"^\s*(\d+)\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_grace(text: str) -> dt.timedelta:
    """``24h``, ``7d``, ``30m`` or ``0`` as a duration, at most ``codes.MAX_GRACE`` (7 days);
    anything else is bad input."""
    from exchange.gateway.codes import MAX_GRACE

    match = _GRACE.fullmatch(text.lower())
    if match is None or (match.group(2) == "" and match.group(1).strip("0")):
        raise BadInput(
            f"--grace {text!r} is not a duration: write days, hours or minutes (7d, 24h, 30m), "
            "or 0 to stop the old codes at once"
        )
    amount, unit = int(match.group(1)), match.group(2) or "h"
    if amount > MAX_GRACE / dt.timedelta(**{_UNITS[unit]: 1}):
        raise BadInput(
            f"--grace {text!r} is longer than {MAX_GRACE.days}d: a rotated-out code may go on "
            f"working for {MAX_GRACE.days} days at most (revoke stops a leaked one at once)"
        )
    return dt.timedelta(**{_UNITS[unit]: amount})


def _shown_once(prefix: str, code_id: int, subscription_id: int) -> None:
    console.print(
        f"authorization code {prefix} (code {code_id}) of subscription {subscription_id}: "
        "shown this once; only its digest is kept, so store it now",
        markup=False,
        highlight=False,
    )


@app.command("issue")
def code_issue(
    subscription: IdArg,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Issue an authorization code for an API subscription (printed once). The first one
    delivers the subscription (on to sign-off); a later one replaces the working codes at
    once (use rotate for a grace period)."""
    from exchange.gateway.codes import issue

    with workspace(catalog) as ws:
        issued = issue(ws, principal(ws, as_user), subscription, parse_time(at))
    print(issued.code)
    _shown_once(issued.prefix, issued.code_id, issued.subscription_id)


@app.command("rotate")
def code_rotate(
    subscription: IdArg,
    grace: Annotated[
        str,
        typer.Option(help="How long the old codes go on working: 24h, 7d (the most), 30m, or 0."),
    ] = "24h",
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Issue a new code (printed once); the working ones go on working for --grace."""
    from exchange.gateway.codes import rotate
    from exchange.kernel.clock import shown, utcnow

    period = parse_grace(grace)
    now = parse_time(at) or utcnow()
    with workspace(catalog) as ws:
        issued = rotate(ws, principal(ws, as_user), subscription, period, now)
    print(issued.code)
    _shown_once(issued.prefix, issued.code_id, issued.subscription_id)
    console.print(
        f"the codes it replaces work until {shown(now + period)} (Asia/Shanghai)" if period
        else "the codes it replaces stopped working now",
        markup=False, highlight=False,
    )  # fmt: skip


@app.command("revoke")
def code_revoke(
    subscription: IdArg,
    reason: Annotated[str, typer.Option(help="Why (kept with the codes and audited).")],
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Revoke every working code of a subscription (it takes effect in every gateway within
    its cache time, 1 s by default)."""
    from exchange.gateway.codes import revoke

    with workspace(catalog) as ws:
        n = revoke(ws, principal(ws, as_user), subscription, reason, parse_time(at))
    console.print(f"{n} code(s) of subscription {subscription} revoked", markup=False)


@app.command("list")
def code_list(
    subscription: Annotated[int | None, typer.Argument(help="Subscription id.")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Authorization codes (of one subscription, or all that --as may see): prefix, state,
    dates, and calls today. Never the codes themselves."""
    from rich.table import Table

    from exchange.gateway.codes import list_codes
    from exchange.kernel.clock import utcnow

    now = parse_time(at) or utcnow()
    with workspace(catalog) as ws:
        views = list_codes(ws, principal(ws, as_user), subscription, now)
        installation = ws.installation_id
    live = sorted({v.subscription_id for v in views if v.state in ("live", "grace")})
    used, note = _used_today(live, installation, now)
    t = Table(title="authorization codes")
    for col in ("id", "prefix", "subscription", "resource", "department", "state", "created",
                "until / revoked", "today"):  # fmt: skip
        t.add_column(col, overflow="fold")
    for v in views:
        if v.state == "revoked":
            end = f"{v.revoked_at} by {v.revoked_by}: {v.revoke_reason}"
        else:
            end = v.grace_until or ""
        t.add_row(
            str(v.code_id), v.prefix, str(v.subscription_id), v.resource_code,
            v.department_code or "", v.state, f"{v.created_at} by {v.created_by}", end,
            str(used[v.subscription_id]) if v.subscription_id in used else "",
        )  # fmt: skip
    console.print(t)
    if note:
        console.print(note, markup=False, highlight=False)


def _used_today(
    subscription_ids: list[int], installation: str, now: dt.datetime
) -> tuple[dict[int, int], str]:
    """Calls admitted today per subscription (its codes share the count), from Redis; none
    (and why) when it is unreachable."""
    from exchange.gateway.quota import DEFAULT_URL, Quota, QuotaUnavailable, counter_namespace

    if not subscription_ids:
        return {}, ""
    quota = Quota(
        os.environ.get("EXCHANGE_REDIS_URL") or DEFAULT_URL,
        counter_namespace(os.environ.get("EXCHANGE_REDIS_NAMESPACE") or "exchange", installation),
    )
    try:
        return {s: quota.used_today(s, now) for s in subscription_ids}, ""
    except QuotaUnavailable as exc:
        return {}, f"calls today not shown: {exc}"
