"""The runner: starts durable programs and advances one claimed execution at a time, committing each transition."""
from __future__ import annotations

import asyncio
import inspect
import os
import threading
import uuid
from typing import Any, Callable, Sequence

from ..values import seals
from . import capability, pump
from .clock import SYSTEM, Clock
from .loading import ProgramError, import_program_module, load_function
from .records import SET_ASIDE, call_text, execution_parts, to_json
from .store.base import Change, Execution, Store, call_record
from .transition import RunStep, StepOutcome, Transition, drive

__all__ = ["Runner", "ProgramError", "EventSink", "Tracer", "SET_ASIDE", "import_program_module", "load_function",
           "to_json"]

Tracer = Callable[[str, tuple[str, Any], str, Any], None]
"""``tracer(execution_id, action, outcome, value)``: called after each resumption of a program with what it
was given (``("next", None)``, ``("send", value)`` or ``("throw", exception)``) and what it did: ``"yield"``
and the request, ``"return"`` and the value, or ``"raise"`` and the exception (the test kit records runs).
"""

EventSink = Callable[[str, str, str], None]
"""``on_event(execution_id, kind, text)``: what the runner reports as it goes (``durable run`` prints it)."""


ENV_MIGRATIONS = "DURABLE_MIGRATIONS"


def import_migrations(modules: Sequence[str] | None = None) -> None:
    """Import the modules that register migrations (``runtime.migration``): ``modules``, else those named in
    ``$DURABLE_MIGRATIONS`` (comma-separated). Migrations in a program's own module need nothing: they are
    registered when the module is imported, before its runs are restored. Raises ProgramError."""
    if modules is None:
        modules = [m.strip() for m in os.environ.get(ENV_MIGRATIONS, "").split(",") if m.strip()]
    for module in modules:
        import_program_module(module)


class Runner:
    """Drives durable programs kept in ``store``, one at a time in the calling thread (the lease owner is
    the runner's): ``start`` records a new execution, ``advance`` runs a claimed one until it suspends
    (sleep, wait, step retry), finishes, fails or is cancelled — one committed transition per request.
    A ``Worker`` keeps many executions in flight with one runner's settings and groups their commits.

    Async programs (and ``async def`` steps) run on an event loop the runner makes when it first needs one
    (``event_loop()``), in the calling thread, turning only while it advances a program or awaits a step;
    ``close()`` (or leaving ``with Runner(...) as runner:``) closes it, as does collecting the runner or the
    end of the process. ``Worker.run`` turns the same loop continuously in its scheduler thread."""

    def __init__(self, store: Store, *, clock: Clock = SYSTEM, owner: str | None = None, lease: float = 30.0,
                 on_event: EventSink | None = None, stop: threading.Event | None = None,
                 migrations: Sequence[str] | None = None) -> None:
        import_migrations(migrations)
        self.store = store
        self.clock = clock
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.on_event = on_event or (lambda execution_id, kind, text: None)
        self.stop = stop or threading.Event()
        self.recorded: set[tuple[str, str, str]] = set()  # code versions this process knows the store has
        self.tracer: Tracer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._close_loop: Callable[[], None] | None = None
        # the tasks an async program leaves running are awaited once cancelled, when it leaves its transition
        # (False while a Worker's scheduler keeps the loop turning: they end as it turns)
        self.settle_tasks = True

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop async programs and steps run on (made on first use; never running between advances)."""
        if self._loop is None:
            self._loop = pump.new_loop()
            self._close_loop = pump.close_with(self, self._loop)
        return self._loop

    def close(self) -> None:
        """Close the event loop, if one was made (tasks still on it are cancelled first). The runner can go
        on: it makes a new loop when it needs one."""
        if self._close_loop is not None:
            close, self._loop, self._close_loop = self._close_loop, None, None
            close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self, ref: str, args: list[Any], kwargs: dict[str, Any] | None = None, *,
              execution_id: str | None = None) -> Execution:
        """Record a new execution of ``ref`` (``module:qualname``) with JSON ``args`` (and keyword
        arguments ``kwargs``), under ``execution_id`` when given (a test kit picks reproducible ids; the
        store raises StoreError when it is taken), else a new random id. Raises ProgramError (nothing
        written) for an unknown function or arguments that do not fit."""
        fn = load_function(ref, named_by_operator=True)
        if not isinstance(args, list) or not isinstance(kwargs or {}, dict):
            raise ProgramError("the arguments must be a JSON list of positional arguments (and an object of "
                               "keyword arguments)")
        try:
            inspect.signature(fn).bind(*args, **(kwargs or {}))
        except TypeError as exc:
            raise ProgramError(f"arguments {call_text(args, kwargs)} do not fit {ref}{inspect.signature(fn)}: "
                               f"{exc}") from None
        execution_id = execution_id or uuid.uuid4().hex[:12]
        call = call_record(args, kwargs)
        try:
            mac = seals.seal("execution", execution_parts(execution_id, ref, call, None, None, 0, None))
        except (TypeError, ValueError) as exc:
            raise ProgramError(f"the arguments cannot be stored as JSON: {exc}") from None
        execution = self.store.create(ref, args, kwargs=kwargs, now=self.clock.now(), execution_id=execution_id,
                                      mac=mac)
        self.on_event(execution.id, "created", f"{ref}({call_text(args, kwargs)})")
        return execution

    def claim_and_advance(self, execution_id: str | None = None) -> Execution | None:
        """Claim a runnable execution (that one, or any) and advance it; None when there was none."""
        execution = self.store.claim(self.owner, now=self.clock.now(), lease=self.lease, execution_id=execution_id,
                                     skip_keys=capability.keys())
        if execution is None:
            return None
        return self.advance(execution)

    def advance(self, execution: Execution) -> Execution:
        """Run a claimed execution until it suspends, ends, or the runner is asked to stop: each commit
        on its own, each step in this thread (with the lease renewed while it runs)."""
        transition = Transition(self, execution)
        result: Execution = drive(transition.run(), self._commit, self._run_step)
        return result

    def _commit(self, change: Change) -> Execution:
        return self.store.commit(change, now=self.clock.now())

    def _run_step(self, step: RunStep) -> StepOutcome:
        keeper = self._keep_lease(step.record.execution_id)
        try:
            return step.call(self.event_loop)
        finally:
            keeper.set()

    def _keep_lease(self, execution_id: str) -> threading.Event:
        """Renew our lease on one execution every third of its length while a step runs here (a step may
        take longer than the lease); set the returned event to stop."""
        done = threading.Event()
        interval = max(self.lease / 3, 0.05)

        def renew() -> None:
            while not done.wait(interval):
                try:
                    lost = self.store.renew(self.owner, [execution_id], until=self.clock.now() + self.lease)
                except Exception:  # the next commit finds out
                    return
                if lost:
                    return

        threading.Thread(target=renew, name=f"{self.owner}-lease", daemon=True).start()
        return done
