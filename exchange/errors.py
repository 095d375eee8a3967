"""One exception hierarchy, grouped by what the caller should do about it.

* ``BadInput``: fix the catalog, the command line or the data; retrying will not help (exit 2).
* ``Retriable``: a front-end node or the metadata store was unreachable; retry later.
* ``DeliveryFailed``: one subscriber could not be served; the others went on (exit 1).

Messages never carry secrets: connection errors are built from the node name and the
driver's message with every credential removed (see ``connectors.secrets``).
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every error the engine raises on purpose."""


class BadInput(ExchangeError):
    """The input is wrong: a catalog, a command-line argument or a source value."""


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


class Retriable(ExchangeError):
    """A transient failure; the same call may succeed later."""


class ConnectionFailed(Retriable):
    """A front-end node could not be reached (the message names the node, never a password)."""


class RunInProgress(Retriable):
    """Another run of the same resource holds the lock."""


class DeliveryFailed(ExchangeError):
    """At least one subscriber of a run was not served; ``failures`` maps subscription to reason."""

    def __init__(self, failures: dict[int, str]):
        self.failures = failures
        lines = [f"subscription {sid}: {why}" for sid, why in sorted(failures.items())]
        super().__init__("delivery failed for " + "; ".join(lines))
