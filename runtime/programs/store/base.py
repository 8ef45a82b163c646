"""The store interface: what the runner needs from a database of executions (SQLite, PostgreSQL)."""
from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

# Execution statuses. RUNNABLE ones are picked up by workers when due.
PENDING = "pending"      # ready to run now (new, after a checkpoint or a recorded step, or a step to run)
SLEEPING = "sleeping"    # runnable at wake_at (a sleep, or a step's retry backoff)
WAITING = "waiting"      # runnable when a signal named waiting_for (or one in waits) arrives, or at wake_at if set
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (PENDING, SLEEPING, WAITING, FINISHED, FAILED, CANCELLED)
TERMINAL = (FINISHED, FAILED, CANCELLED)


class StoreError(Exception):
    """Base of the store's errors; the message says what to do."""


class SchemaTooNewError(StoreError):
    """The store was written by a newer version (its schema number is higher than this code knows)."""


class NotFoundError(StoreError):
    """No execution with that id."""


class ConflictError(StoreError):
    """The execution changed under us (another worker advanced it, or our lease lapsed): the
    compare-and-swap on its version failed and nothing was written."""


class InvalidStateError(StoreError):
    """The operation does not fit the execution's status (a signal for a finished execution, ...)."""


@dataclass
class Execution:
    """One row of ``executions``: a durable program's current state."""

    id: str
    function: str                 # "module:qualname" of the durable function started
    args: Any                     # JSON: the positional arguments, or {"args": [...], "kwargs": {...}}
    status: str
    version: int                  # incremented on every write; writes name the version they read
    created_at: float
    updated_at: float
    snapshot: bytes | None = None  # None until the program first suspends
    request: dict[str, Any] | None = None  # JSON: what the program is suspended on (see runtime.programs.requests)
    wake_at: float | None = None   # a timer: when SLEEPING/WAITING becomes runnable
    waiting_for: str | None = None  # the signal name a WAITING execution waits for
    steps_started: int = 0         # how many steps the program has asked for (the next step's index)
    progress: Any = None           # JSON: the last value the program yielded as progress
    result: bytes | None = None    # the return value (runtime value encoding) when FINISHED
    error: str | None = None       # a readable error when FAILED, or the reason when CANCELLED
    error_value: bytes | None = None  # the exception itself (value encoding) when it could be encoded
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_until: float | None = None
    mac: bytes | None = None       # the runner's signature of the row (opaque to the store)
    held_until: float | None = None  # set aside (it could not be resumed): claim skips it until then, whatever
                                     # else would make it runnable (a queued signal, a due timer) — except a
                                     # requested cancel, which is served at once
    code_version: str | None = None  # the version (hex) of the outermost frame's function, as last committed
    point: str | None = None       # the display label of the innermost frame's suspension point
    frames: list[Any] | None = None  # JSON: one description (a list, opaque to the store) per frame, outermost first
    blocked_on: list[str] | None = None  # JSON: the code keys of workers that could not run it: a claim given any
                                         # of them as skip_keys passes it over (unless a cancel was requested)
    migrations: list[Any] | None = None  # JSON: the migrations applied to the run (objects, opaque to the store)
    waits: list[str] | None = None  # JSON: more signal names a WAITING execution waits for (any one wakes it),
                                    # besides waiting_for (which a wait for several names may leave None)
    damage: str | None = None      # not a column: set when a cell of the row could not be read (which, and
                                   # why); that field is then None (False for flags) and the rest is read
    taken_from: str | None = None  # not a column: set by claim when it took the execution over from another
                                   # owner whose lease had lapsed (that owner's name)


@dataclass
class StepRecord:
    """One row of ``steps``: a step the program asked for, identified by (execution, index)."""

    execution_id: str
    index: int
    function: str                 # "module:qualname" of the ordinary function the step runs
    call: bytes                   # (args, kwargs) in the runtime value encoding
    policy: dict[str, Any]        # JSON: the retry policy (attempts, backoff, max_backoff, factor)
    status: str                   # "pending", "done", "failed" (retries exhausted) or "abandoned" (a race lost)
    attempts: int = 0             # attempts started so far
    result: bytes | None = None   # value encoding of the return value when done
    error: str | None = None      # readable last error
    error_value: bytes | None = None  # value encoding of the last exception, when it could be encoded
    started_at: float | None = None
    finished_at: float | None = None
    mac: bytes | None = None      # the runner's signature of the row (opaque to the store)
    damage: str | None = None     # not a column: see Execution.damage


@dataclass
class Signal:
    id: int
    execution_id: str
    name: str
    payload: Any                  # JSON
    created_at: float
    consumed: bool = False
    damage: str | None = None     # not a column: see Execution.damage


@dataclass
class CodeVersion:
    """One row of ``code_versions``: a version of a durable function's code, per distinct text of it (a
    version ignores comments and blank lines, so one version may have several texts, told by their digest).
    Recorded the first time a run commits under it; later writers of the same key leave it as it is."""

    function: str                 # "module:qualname"
    version: str                  # the function's version (hex)
    source_digest: str            # digest of the exact source text
    first_line: int | None        # the line of the source's first line in its file
    source: str | None            # the function's source text, when it was known
    manifest: str                 # JSON text of the version's manifest (opaque to the store)
    recorded_at: float
    damage: str | None = None     # not a column: see Execution.damage


@dataclass
class Change:
    """Everything one transition writes, applied in one transaction, only if the execution's version
    is still ``expected_version`` (and, when ``owner`` is set, its lease is still ours).

    Its steps: ``new_step`` then ``new_steps`` are inserted, then ``step_update`` then ``step_updates`` are
    applied (an update may set a step inserted by the same change), all or nothing: a step that cannot be
    written (an index taken, a step missing, a NOT NULL column) fails the whole change, and nothing of it is
    written. ``new_step`` with ``step_update`` and neither plural field is refused (ValueError), as it always
    was; a change that inserts and updates gives its inserts in ``new_steps`` or its updates in ``step_updates``."""

    execution_id: str
    expected_version: int
    owner: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # Execution attributes to set
    new_step: StepRecord | None = None                     # insert
    step_update: tuple[int, dict[str, Any]] | None = None  # (index, StepRecord attributes to set)
    new_steps: tuple[StepRecord, ...] = ()                 # more inserts, after new_step (in this order)
    step_updates: tuple[tuple[int, dict[str, Any]], ...] = ()  # more updates, after step_update (index, attributes)
    consume_signal: int | None = None                      # mark this signal consumed
    release: bool = False                                  # clear the lease
    lease_until: float | None = None                       # else extend our lease to this time
    base: Execution | None = None  # the execution as the writer holds it (version expected_version): a store may
                                   # build what commit returns from it and the change instead of reading the
                                   # row back, reading only what others may change (cancel_requested, lease)
    versions: list[CodeVersion] = field(default_factory=list)  # code versions to record, in the same
                                   # transaction, only if the change applies; a version already recorded
                                   # (same function, version and source_digest) is left as it is



def taken_over(execution: Execution, previous_owner: str | None, owner: str) -> Execution:
    """The execution as a claim by ``owner`` returns it: ``taken_from`` the lease holder it took over."""
    execution.taken_from = previous_owner if previous_owner != owner else None
    return execution


_S = TypeVar("_S", bound="Store")


class Store(abc.ABC):
    """A durable store of executions. Every method is one transaction. Implementations must make
    ``commit`` a compare-and-swap on ``Execution.version``, so two workers never both advance an
    execution; ``claim`` gives one worker a time-limited lease on a runnable execution.

    Reads never raise because of one row's cells: a row whose cells cannot be decoded (text that is
    not JSON, a cell of the wrong type, an unknown status) is returned with ``damage`` saying which
    cell and why, that field set to None. ``claim`` returns such an execution too, so the runner can
    fail it instead of a worker retrying it forever."""

    url: str

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def create(self, function: str, args: Sequence[Any], *, now: float, execution_id: str | None = None,
               mac: bytes | None = None, kwargs: dict[str, Any] | None = None) -> Execution:
        """A new PENDING execution (``mac``: the runner's seal of it, stored as it is; with ``kwargs``
        its ``args`` column holds ``{"args": [...], "kwargs": {...}}``)."""

    @abc.abstractmethod
    def get(self, execution_id: str) -> Execution:
        """Raises NotFoundError."""

    @abc.abstractmethod
    def list(self, status: str | None = None, limit: int | None = None) -> list[Execution]:
        """Executions, oldest first (snapshots and results left out: ``snapshot``/``result`` None)."""

    def claim(self, owner: str, *, now: float, lease: float, execution_id: str | None = None,
              skip_keys: Sequence[str] = ()) -> Execution | None:
        """Lease one runnable execution to ``owner`` (the given one, or the most overdue one): runnable
        means PENDING; SLEEPING with wake_at <= now; WAITING with an unconsumed signal named
        ``waiting_for`` or any name in ``waits``, or wake_at <= now; or any non-terminal one with
        cancel_requested (a ``waits`` cell that is not a JSON list wakes it for no signal, and its
        elements that are not strings match none). Only
        executions with no lease or a lapsed one (lease_until <= now) are claimed, and none whose
        ``blocked_on`` shares a key with ``skip_keys`` (the claimer's code could not run it) unless a
        cancel was requested. A ``blocked_on`` cell that is not a JSON list blocks no one (the claim
        returns the run with its ``damage``); its elements that are not strings block no one. Increments
        the version. Returns None when there is nothing to claim; raises NotFoundError when the
        ``execution_id`` asked for does not exist."""
        claimed = self._checked_lease(owner, now, lease, 1, execution_id, skip_keys)
        return claimed[0] if claimed else None

    def claim_many(self, owner: str, *, now: float, lease: float, limit: int,
                   skip_keys: Sequence[str] = ()) -> list[Execution]:
        """Lease up to ``limit`` runnable executions to ``owner`` in one transaction (as ``claim`` picks
        one, most overdue first, passing over those blocked on ``skip_keys``); an empty list when there
        is nothing to claim."""
        return self._checked_lease(owner, now, lease, limit, None, skip_keys)

    def _checked_lease(self, owner: str, now: float, lease: float, limit: int, execution_id: str | None,
                       skip_keys: Sequence[str]) -> list[Execution]:
        check_claim(owner, lease)
        keys = claim_keys(skip_keys)
        if limit < 1:
            return []
        return self._lease(owner, now=now, lease=lease, limit=limit, execution_id=execution_id, keys=keys)

    @abc.abstractmethod
    def _lease(self, owner: str, *, now: float, lease: float, limit: int, execution_id: str | None,
               keys: list[str]) -> list[Execution]:
        """What ``claim`` and ``claim_many`` do, in one transaction, with their arguments checked: lease up to
        ``limit`` (>= 1) runnable executions (only ``execution_id`` when given), passing over those blocked on
        one of the distinct ``keys``."""

    @abc.abstractmethod
    def renew(self, owner: str, execution_ids: Sequence[str], *, until: float) -> list[str]:
        """Extend our leases; returns the ids whose lease we no longer hold. A lease that lapsed but
        that nobody else claimed is still ours (the version has not moved, so our next commit is still
        valid): it is extended too."""

    @abc.abstractmethod
    def commit(self, change: Change, *, now: float) -> Execution:
        """Apply ``change`` atomically; raises ConflictError (nothing written) when the version moved
        or the lease is not ``change.owner``'s. Returns the execution as written."""

    @abc.abstractmethod
    def commit_many(self, changes: Sequence[Change], *, now: float) -> list[Execution | StoreError]:
        """Group commit: apply each change as ``commit`` would, all in one transaction (one fsync), and
        return, in order, each change's execution as written or the StoreError (ConflictError, ...)
        that change alone met (nothing of it written; the others are). A failure of the transaction
        itself raises, and then nothing at all was written. At most one change per execution."""

    @abc.abstractmethod
    def release(self, owner: str, execution_ids: Sequence[str] | None = None) -> int:
        """Give up our leases (on those executions, or all of ``owner``'s) without a transition, so
        another worker may claim them at once; the version is not bumped. Returns how many."""

    @abc.abstractmethod
    def next_wake(self, now: float) -> float | None:
        """The earliest time after ``now`` at which a timer (a sleep, a wait's timeout, a step's retry,
        the end of a set-aside) or a lapsing lease may make something runnable; None when there is
        none. Served by an index."""

    @abc.abstractmethod
    def prune(self, *, finished_before: float, batch: int = 1000) -> int:
        """Delete executions that ended (finished, failed, cancelled) before ``finished_before`` (their
        ``updated_at``), with their steps and signals, ``batch`` executions per transaction, so a
        prune never holds the store for long. Returns how many executions were deleted."""

    def wait_for_work(self, timeout: float, stop: threading.Event) -> None:
        """Block until there may be new work (a new execution, a signal, a cancel, a commit that made
        something runnable sooner), ``timeout`` seconds pass, or ``stop`` is set. A store with
        notifications (PostgreSQL: LISTEN/NOTIFY) returns early when one arrives; this default just
        waits. Correctness never depends on it: workers poll after ``timeout`` anyway."""
        stop.wait(timeout)

    def code_version(self, function: str, version: str, source_digest: str | None = None) -> CodeVersion | None:
        """The recorded code version with that key; with ``source_digest`` None, the earliest recorded text
        of that function and version. None when there is none (or the store predates code versions). A row
        whose cells cannot be read is returned with ``damage`` set, as executions are."""
        found = self._code_versions(function, version, source_digest, limit=1)
        return found[0] if found else None

    def code_versions(self, function: str) -> list[CodeVersion]:
        """Every recorded version and text of ``function``, in the order they were recorded."""
        return self._code_versions(function)

    @abc.abstractmethod
    def _code_versions(self, function: str, version: str | None = None, source_digest: str | None = None,
                       limit: int | None = None) -> list[CodeVersion]:
        """The rows of ``code_versions`` of ``function`` (of that version and text), as recorded, up to ``limit``."""

    @abc.abstractmethod
    def steps(self, execution_id: str) -> list[StepRecord]:
        """The execution's steps by index."""

    @abc.abstractmethod
    def step(self, execution_id: str, index: int) -> StepRecord | None: ...

    @abc.abstractmethod
    def send_signal(self, execution_id: str, name: str, payload: Any, *, now: float) -> Signal:
        """Queue a signal. Raises NotFoundError, or InvalidStateError when the execution is terminal."""

    @abc.abstractmethod
    def next_signal(self, execution_id: str, name: str, exclude: int | None = None) -> Signal | None:
        """The oldest unconsumed signal of that name, other than the signal ``exclude`` (one delivered
        and not yet committed as consumed)."""

    @abc.abstractmethod
    def signals(self, execution_id: str) -> list[Signal]: ...

    @abc.abstractmethod
    def request_cancel(self, execution_id: str, *, now: float) -> Execution:
        """Set cancel_requested (a worker, or ``durable cancel``, then closes the program). Raises
        NotFoundError or InvalidStateError (terminal). Only sets the flag: the version stays, so a
        worker holding the lease can still commit its transition (and sees cancel_requested in what
        commit returns)."""

    @abc.abstractmethod
    def close(self) -> None: ...


def check_claim(owner: str, lease: float) -> None:
    """Refuse a claim without an owner or with a lease that is not positive (ValueError)."""
    if not owner:
        raise ValueError("owner must be a non-empty string")
    if lease <= 0:
        raise ValueError(f"lease must be positive, not {lease!r}")


def claim_keys(skip_keys: Sequence[str]) -> list[str]:
    """The distinct keys a claim passes over runs blocked on, checked (TypeError for a bare string or a
    key that is not a string)."""
    if isinstance(skip_keys, (str, bytes)):
        raise TypeError(f"skip_keys must be a sequence of code keys, not a single {type(skip_keys).__name__}")
    keys: list[str] = []
    for key in skip_keys:
        if not isinstance(key, str):
            raise TypeError(f"skip_keys must hold strings, not {type(key).__name__} ({key!r})")
        if key not in keys:
            keys.append(key)
    return keys


def call_record(args: Sequence[Any], kwargs: dict[str, Any] | None) -> Any:
    """What ``Execution.args`` holds for a call: the positional arguments, or both kinds."""
    return list(args) if not kwargs else {"args": list(args), "kwargs": dict(kwargs)}


def call_of(args: Any) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments an ``Execution.args`` holds."""
    if isinstance(args, dict):
        return list(args["args"]), dict(args["kwargs"])
    return list(args), {}
