"""One exception hierarchy, grouped by what the caller should do about it.

* ``BadInput``: fix the catalog, the command line or the data; retrying will not help (exit 2).
* ``Retriable``: a front-end node or the metadata store was unreachable; retry later.
* ``DeliveryFailed``: one subscriber could not be served; the others went on (exit 1).
* ``RunHeld``: quality held the whole run back; nothing was delivered (exit 1).

``terminal`` says whether trying the same call again could change the outcome: a scheduler
retries only errors that are not terminal (bad input, a quality verdict, access denied, a
rejected host key or a missing file are the same on every try).

Messages never carry secrets: connection errors are built from the node name and the
driver's message with every credential removed (see ``connectors.secrets``).
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every error the engine raises on purpose."""

    #: A retry cannot change this outcome (Airflow fails the task without retrying).
    terminal: bool = False


def is_terminal(exc: BaseException) -> bool:
    """Whether retrying the call that raised ``exc`` is pointless."""
    return bool(getattr(exc, "terminal", False))


class BadInput(ExchangeError):
    """The input is wrong: a catalog, a command-line argument or a source value."""

    terminal = True


class CatalogError(BadInput):
    """The catalog file does not validate; ``problems`` lists every finding."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NotFound(BadInput):
    """A resource, node, subscription or run named by the caller does not exist."""


class IllegalTransition(BadInput):
    """A workflow action that the subscription's current state does not allow."""


class Unauthorized(ExchangeError):
    """No valid credentials: a missing, unknown or revoked API token, or an unknown user."""


class Forbidden(ExchangeError):
    """The user is known but its role or department may not do this."""


class DataError(BadInput):
    """A source value cannot be represented as the catalog says; names resource, field, row key."""


class TargetMismatch(BadInput):
    """A subscriber's existing table cannot hold what the catalog declares (a narrower or
    incompatible column, a key it cannot merge by, a column it lacks under
    ``target_columns: refuse``): that subscriber is refused before a row moves. Names node,
    table, column, declared vs found."""


class Retriable(ExchangeError):
    """A transient failure; the same call may succeed later."""


class ConnectionFailed(Retriable):
    """A front-end node could not be reached (the message names the node, never a password)."""


class RunInProgress(Retriable):
    """Another run of the same resource holds the lock."""


class RunHeld(ExchangeError):
    """Quality held a run back (too many bad rows, an implausible row count): no subscriber
    received anything, watermarks stayed. Terminal: a retry cannot change the verdict."""

    terminal = True

    def __init__(self, run_id: str, resource: str, why: str):
        self.run_id, self.resource, self.why = run_id, resource, why
        super().__init__(f"resource {resource} run {run_id} held back: {why}")


class DeliveryFailed(ExchangeError):
    """At least one subscriber of a run was not served; ``failures`` maps subscription to reason."""

    def __init__(self, failures: dict[int, str]):
        self.failures = failures
        lines = [f"subscription {sid}: {why}" for sid, why in sorted(failures.items())]
        super().__init__("delivery failed for " + "; ".join(lines))
