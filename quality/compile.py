"""Compile a catalog resource's declared rules into rules on Arrow batches."""

from __future__ import annotations

import datetime as dt

from exchange.catalog.model import Resource
from quality.rules import (
    Between,
    Compare,
    InSet,
    NotFuture,
    Pattern,
    Rule,
    Unique,
    Validator,
    rules_for_fields,
)

# Source clocks drift: a timestamp this far ahead of ours is not yet "in the future".
CLOCK_TOLERANCE = dt.timedelta(minutes=10)


def rules_for_resource(resource: Resource, now: dt.datetime) -> list[Rule]:
    """Every row-level rule of ``resource``: declared schema, field rules, comparisons.

    ``now`` is the local (Asia/Shanghai) wall-clock time the run judges "the future" by;
    source timestamps are local times without a zone, as government databases keep them.
    """
    rules = rules_for_fields(resource.fields, resource.primary_key)
    for f in resource.fields:
        r = f.rules
        if r.validator:
            rules.append(Validator(field=f.name, kind=r.validator, today=now.date()))
        if r.regex:
            rules.append(Pattern(field=f.name, pattern=r.regex))
        if r.enum is not None:
            rules.append(InSet(field=f.name, values=r.enum))
        if r.min is not None or r.max is not None:
            rules.append(Between(field=f.name, low=r.min, high=r.max))
        if r.not_future:
            rules.append(NotFuture(field=f.name, now=now + CLOCK_TOLERANCE))
        if r.unique and (f.name,) != tuple(resource.primary_key):
            rules.append(Unique(field=f.name))  # a one-field key is duplicate_key's already
    for c in resource.quality.compare:
        rules.append(Compare(field=c.left, op=c.op, other=c.right))
    return rules
