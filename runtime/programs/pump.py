"""The pump: an async program coroutine stepped from an asyncio task, its durable awaits handed to the transition.

``asyncio.Task`` refuses what a program yields at a durable await (``Task got bad yield``), so a program
coroutine never is a task's coroutine. A ``Pump`` advances it instead: each ``resume(action)`` runs one
``PumpTask`` (a real asyncio task, so inside the program ``current_task()``, ``asyncio.sleep``,
``asyncio.timeout`` and tasks of transient coroutines work) that sends or throws into the program, passes
every other yield (None, a Future, anything else) to the task as if the program had yielded it, and ends
at the program's next durable await, return or exception. A durable await is recognised when it is made:
``requests.Awaiting`` calls ``_durable_await`` (the guard), which refuses it outside a pump task (inside
``asyncio.gather``, ``create_task`` ...) and otherwise marks the pump.

A task per advance rather than one parked task per program: between two durable awaits nothing of the pump
is pending, so a transition that ends in any way (a crash of the test kit, a lost lease) leaves no task to
end; transient asyncio state cannot span a durable await anyway, since every one is a snapshot.

Two ways to run an advance: ``resume`` runs the loop here until it ends (the runner and the test kit, whose
loop runs only then); ``start`` only makes its task, for a driver that keeps the loop turning (the worker's
scheduler, which runs the advances of many programs at once and collects each with ``outcome``).
"""
from __future__ import annotations

import asyncio
import types
import weakref
from asyncio.events import _get_running_loop
from typing import Any, Callable, Coroutine, Generator, Iterable

from .. import registry
from . import requests as rq

Outcome = tuple[str, Any]
"""What one advance of a program did: ``("yield", request)``, ``("return", value)`` or ``("raise", exception)``."""

CLEANUP = 10.0
"""Seconds the tasks a program left running get to finish once cancelled (their ``finally`` blocks)."""

_ONE_BY_ONE = ("a durable await (step/sleep/wait/checkpoint or a durable coroutine) must be awaited by the program "
               "itself, not inside asyncio.gather/create_task/wait_for/shield: use runtime.gather(...) or "
               "runtime.race(...) to await several at once, or await them one after another")


class LoopError(RuntimeError):
    """The program's event loop cannot run here (another loop runs in this thread): the runner's mistake, not the
    program's."""


class PumpTask(asyncio.Task):  # type: ignore[type-arg]
    """The asyncio task a program runs in for one advance (``current_task()`` inside the program)."""

    pump: "Pump"


class _Spawned(asyncio.Task):  # type: ignore[type-arg]
    """A task made on a program loop (by a program, a step, the loop's owner); ``pump`` is the program whose
    code (or whose task's code) created it, None for the others."""

    pump: "Pump | None"


class Pump:
    """Drives one program coroutine on ``loop`` (which ``new_loop`` made), one advance at a time."""

    def __init__(self, program: types.CoroutineType, loop: asyncio.AbstractEventLoop, *,  # type: ignore[type-arg]
                 settle: bool = True) -> None:
        self.program = program
        self.loop = loop
        self.settle = settle  # close() waits for the tasks it cancels (False: the loop's driver keeps it turning)
        self.durable = False  # set by the guard: the program's last yield came from a durable await
        self.task: PumpTask | None = None  # the task of the last advance
        self.spawned: set[asyncio.Task[Any]] = set()  # tasks the program started, not done yet

    def resume(self, action: tuple[str, Any]) -> Outcome:
        """Send (``("send", value)``, ``("next", None)``) or throw (``("throw", exc)``) into the program and run
        the loop until it makes its next durable await, returns or raises. A KeyboardInterrupt or SystemExit
        from the program is raised here; LoopError when the loop cannot run in this thread."""
        if _get_running_loop() is not None:
            raise LoopError("an async program cannot be advanced from inside a running event loop (a Runner called "
                            "from async code): run the runner in a thread of its own (asyncio.to_thread)")
        task = self.start(action)
        try:
            self.loop.run_until_complete(task)
        except RuntimeError:
            if task.done():
                raise
            return "raise", RuntimeError("the program stopped the event loop it runs on (loop.stop()) before its "
                                         "next durable await")
        return self.outcome(task)

    def start(self, action: tuple[str, Any]) -> PumpTask:
        """The task of one advance (``resume``'s action), made on the loop without running it: whoever turns
        the loop collects it with ``outcome`` once it is done."""
        task = self.task = PumpTask(self._advance(*action), loop=self.loop, name=f"program {self.program.__qualname__}")
        task.pump = self
        return task

    def outcome(self, task: PumpTask) -> Outcome:
        """What the advance of ``task`` (done) did; a KeyboardInterrupt or SystemExit from the program is raised."""
        if task.cancelled():  # cancelled before it first ran (its transition ended meanwhile)
            return "raise", asyncio.CancelledError()
        kind, value = task.result()
        if kind == "raise" and not isinstance(value, (Exception, asyncio.CancelledError)):
            raise value
        return kind, value

    async def _advance(self, kind: str, value: Any) -> Outcome:
        program = self.program
        while True:
            self.durable = False
            try:
                out = program.throw(value) if kind == "throw" else program.send(value)
            except StopIteration as stop:
                return "return", stop.value
            except BaseException as exc:  # noqa: BLE001 - the program's own ending, whatever it is
                return "raise", exc
            if self.durable:
                return "yield", out
            try:  # the task handles it as it would the program's own yield: a loop turn, a Future, a bad yield
                value, kind = await _pass(out), "send"
            except BaseException as exc:  # noqa: BLE001 - what the task throws back (the Future's error, a cancel)
                if program.cr_frame is None:  # detached while the task waited (its transition ended): nothing to do
                    return "raise", exc
                value, kind = exc, "throw"

    def cancellation(self, refuse: Callable[[], BaseException],
                     limit: int = 100) -> Generator[tuple[str, Any], Outcome, Outcome]:
        """Cancel the program: throw ``asyncio.CancelledError`` in and drive it to its end (its ``finally``
        blocks may await transient work); a durable await meanwhile gets ``refuse()`` thrown back (at most
        ``limit`` times, then the coroutine is closed). A generator of the actions to advance the program with
        (it is sent each one's outcome); it returns how the program ended."""
        outcome = yield "throw", asyncio.CancelledError()
        for _ in range(limit):
            if outcome[0] != "yield":
                return outcome
            outcome = yield "throw", refuse()
        try:
            self.program.close()
        except Exception as exc:  # noqa: BLE001 - it went on awaiting durably: report how closing it ended
            return "raise", exc
        return "raise", refuse()

    def close(self) -> None:
        """End what is left of the pump when its program leaves the transition: its task, were it still
        pending (a loop stopped under it, or a transient await its worker did not wait for), and the tasks
        the program started and left running: cancelled, and (``settle``) given ``CLEANUP`` seconds to
        finish; else they finish as the loop's driver turns it. Detach or finish the program first."""
        pending = [t for t in self.spawned if not t.done()]
        if self.task is not None and not self.task.done():
            pending.append(self.task)
        self.spawned.clear()
        if self.settle:
            finish(self.loop, pending)
            return
        for task in pending:
            task.cancel()
            task.add_done_callback(_retrieve)


@types.coroutine
def _pass(value: Any) -> Any:
    return (yield value)


def finish(loop: asyncio.AbstractEventLoop, tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and run ``loop`` until they are done (at most ``CLEANUP`` seconds), when it can run."""
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    for task in pending:
        task.cancel()
    if loop.is_closed() or loop.is_running():
        return
    loop.run_until_complete(asyncio.wait(pending, timeout=CLEANUP))
    for task in pending:  # retrieved: a task that failed as it ended is not reported at exit
        if task.done():
            _retrieve(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark what a task that ended after its program left raised as seen (asyncio would log it)."""
    if not task.cancelled():
        task.exception()


# ---------------------------------------------------------------------- the loop


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop for programs: its task factory refuses durable coroutines and keeps track of the tasks
    each program starts."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(_task_factory)
    return loop


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop`` (tasks, async generators, the default executor) and close it."""
    if loop.is_closed() or loop.is_running():
        return
    try:
        finish(loop, asyncio.all_tasks(loop))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def close_with(owner: object, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Close ``loop`` when ``owner`` is collected or at exit; call the returned function to close it now."""
    return weakref.finalize(owner, close_loop, loop)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
    code = getattr(coro, "cr_code", None)
    if code is not None and id(code) in registry.BY_CODE:
        name = getattr(coro, "__qualname__", "?")
        coro.close()  # refused: it is not "never awaited"
        raise TypeError(f"a durable coroutine ({name}) cannot run in an asyncio task (asyncio.gather, create_task, "
                        f"ensure_future, TaskGroup): {_ONE_BY_ONE}")
    task = _Spawned(coro, loop=loop, **kwargs)
    owner = getattr(asyncio.current_task(loop), "pump", None) if loop.is_running() else None
    task.pump = owner
    if owner is not None:
        owner.spawned.add(task)
        task.add_done_callback(owner.spawned.discard)
    return task


def _durable_await(awaiting: rq.Awaiting) -> None:
    """The guard (``requests.Awaiting`` calls it at each durable await): on a program loop, a durable await made
    by a program marks its pump; one made in any other task is refused with TypeError."""
    loop = _get_running_loop()
    if loop is None or loop.get_task_factory() is not _task_factory:
        return  # driven by hand (no loop, or a loop of someone else's)
    task = asyncio.current_task(loop)
    if type(task) is PumpTask:
        task.pump.durable = True
        return
    where = f"inside asyncio task {task.get_name()!r}" if task is not None else "outside any asyncio task"
    raise TypeError(f"{_what(awaiting.request)} awaited {where}: {_ONE_BY_ONE}")


def _what(request: Any) -> str:
    if isinstance(request, rq.Step):
        return f"step({getattr(request.fn, '__qualname__', type(request.fn).__name__)})"
    if isinstance(request, rq.Request):
        return f"{type(request).__name__.lower()}()"
    if isinstance(request, str):  # a runtime.gather/race names itself
        return request
    return "suspend()"


def await_step(coro: Coroutine[Any, Any, Any], loop: Callable[[], asyncio.AbstractEventLoop] | None) -> Any:
    """The value of an async step's coroutine, run on ``loop()`` (in this thread, so that its task inherits
    this context: ``current_step()``), or on a loop of its own when no loop is given."""
    if loop is None:
        return asyncio.run(coro)
    return loop().run_until_complete(coro)


rq._guard = _durable_await
