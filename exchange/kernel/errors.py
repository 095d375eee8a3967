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


class RunBusy(RunInProgress):
    """A live holder has the resource's run lease: nothing was touched. Not terminal: the
    holder will finish, so a scheduler retries later (the CLI exits 1). ``holder`` is its name
    (``pid N@host`` for a CLI process, the Airflow DAG run otherwise)."""

    def __init__(
        self, resource: str, holder: str, run_id: str | None, who: str, since: str, timeout: str
    ):
        self.resource, self.holder, self.run_id = resource, holder, run_id
        super().__init__(
            f"resource {resource} is running: {holder} holds it (run {run_id or 'being planned'}"
            f", {who}, since {since}); nothing was touched. Wait for it to finish "
            f"(`exchange runs {resource}` shows it); a holder whose process is gone is taken "
            f"over by the next run, one that went silent {timeout} after its last heartbeat"
        )


class LeaseLost(ExchangeError):
    """This process's holder lost the resource's run lease to another one (its heartbeat went
    stale and the other took over): it stops, so that two processes never work on one run.
    Terminal: the run is the new holder's now."""

    terminal = True

    def __init__(self, resource: str, to: str, at: str, done: str):
        self.resource, self.to = resource, to
        super().__init__(
            f"lost the lease of resource {resource} to {to} at {at}: stopping; nothing after "
            f"{done} was done by this process"
        )


class RunFailed(ExchangeError):
    """A step of the run raised earlier (its error is kept on the run, which stays unfinished
    and is resumed by the next run); closing it now would hide that. Terminal."""

    terminal = True

    def __init__(self, resource: str, run_id: str, error: str):
        self.resource, self.run_id, self.error = resource, run_id, error
        super().__init__(
            f"resource {resource} run {run_id}: {error}. Not closed: the next run resumes it "
            f"(`exchange run {resource}` or the next DAG run); `exchange run {resource} "
            f"--restart` abandons it and starts a new one"
        )


class RunDirGone(NotFound):
    """An unfinished run's staging directory is no longer where the store says it is."""

    def __init__(self, run_id: str, resource: str, directory: str):
        self.run_id, self.resource, self.directory = run_id, resource, directory
        super().__init__(
            f"run {run_id} of resource {resource}: its directory {directory} is gone (moved or "
            f"deleted); the next `exchange run {resource}` (or DAG run) abandons it and starts "
            f"a new run"
        )


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
