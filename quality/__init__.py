"""Data quality: rules evaluated on Arrow batches (vectorised), never touching a database."""

from quality.compile import rules_for_resource
from quality.evaluate import Verdict, evaluate
from quality.rules import MaxLength, Required, Rule, rules_for_fields

__all__ = [
    "MaxLength",
    "Required",
    "Rule",
    "Verdict",
    "evaluate",
    "rules_for_fields",
    "rules_for_resource",
]
