"""One claimed execution advanced to its next suspension, as a generator of store writes and step calls.

A ``Transition`` never touches the store's write side or runs a step itself: it yields a ``Commit``
(and receives the execution as written, or has the store's error thrown in) or a ``RunStep`` (and
receives its ``StepOutcome``). Whoever drives it decides how: ``Runner.advance`` one at a time, the
``Worker`` many at once, with their commits grouped into one transaction and their steps on a pool.

A generator program is advanced in the calling thread (``next``/``send``/``throw``). An async program is
advanced by its ``Pump`` on the runner's event loop (``Runner.event_loop``): the transition yields an
``Advance`` and gets the outcome back. ``drive`` (the runner, the test kit) runs it at once, the loop
turning in the calling thread for the length of that advance; the Worker's scheduler starts it as a task
on the loop it keeps turning, so that the transient awaits of many programs overlap, and resumes the
transition when the task is done. Either way program code, snapshots, detaches and commits stay in the
driver's thread, one at a time.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator

from ..compat import PointMismatchError
from ..migrations import MigrationCancelled
from ..errors import (CorruptSnapshotError, IncompatibleCodeError, SignatureError, SnapshotError,
                      SnapshotFormatTooNewError, UnserializableValueError)
from ..snapshot import detach, restore, snapshot
from ..values import dump_value, load_value, seals, settings
from . import capability, program_names, versions
from . import requests as rq
from .combinators import All, Combinator
from .composite import CompositeFlow, NextOutcome, spec_problem
from .loading import ProgramError, import_program_module, load_function
from .pump import LoopError, Outcome, Pump, await_step
from .records import (SET_ASIDE, Program, dump_or_none, error_text, execution_parts, restore_stored, step_call,
                      step_indices, step_parts, steps_mac, text_of, to_json)
from .store.base import (CANCELLED, FAILED, FINISHED, PENDING, SLEEPING, TERMINAL, WAITING, Change, ConflictError,
                         Execution, StepRecord, StoreError, call_of)

if TYPE_CHECKING:
    from .runner import Runner


@dataclass
class Commit:
    """Write ``change``; the transition gets the execution as written, or the StoreError thrown in."""

    change: Change


@dataclass
class StepOutcome:
    """What a step call did: its return value, or the exception it raised."""

    value: Any = None
    error: Exception | None = None


@dataclass
class RunStep:
    """Call a step's function (it may block); the transition gets a ``StepOutcome``."""

    record: StepRecord
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def call(self, loop: Callable[[], asyncio.AbstractEventLoop] | None = None) -> StepOutcome:
        """Run it here, with ``current_step()`` set; never raises what the step raises. An ``async def`` step
        is awaited on ``loop()`` (a loop of its own when None), in this thread."""
        context = rq.StepContext(self.record.execution_id, self.record.index, self.record.attempts + 1)
        token = rq._CURRENT.set(context)
        try:
            value = self.fn(*self.args, **self.kwargs)
            if type(value) is types.CoroutineType:
                value = await_step(value, loop)
            return StepOutcome(value=value)
        except Exception as exc:
            return StepOutcome(error=exc)
        except asyncio.CancelledError as exc:  # an async step cancelled (by itself): a failed attempt
            return StepOutcome(error=RuntimeError(f"the step was cancelled: {exc!r}"))
        finally:
            rq._CURRENT.reset(token)

    @property
    def is_async(self) -> bool:
        """The step is an ``async def`` function (``call_async`` runs it on a loop; ``call`` would make a loop
        of its own)."""
        return inspect.iscoroutinefunction(self.fn)

    async def call_async(self) -> StepOutcome:
        """Run it as the coroutine of a task on the running loop, with ``current_step()`` set in the task's
        context (so also in the tasks the step starts); never raises what the step raises."""
        context = rq.StepContext(self.record.execution_id, self.record.index, self.record.attempts + 1)
        token = rq._CURRENT.set(context)
        try:
            value = self.fn(*self.args, **self.kwargs)
            if inspect.isawaitable(value):
                value = await value
            return StepOutcome(value=value)
        except Exception as exc:
            return StepOutcome(error=exc)
        except asyncio.CancelledError as exc:  # cancelled (by itself): a failed attempt
            return StepOutcome(error=RuntimeError(f"the step was cancelled: {exc!r}"))
        finally:
            rq._CURRENT.reset(token)


@dataclass
class Advance:
    """Advance an async program's coroutine with ``action`` (see ``Pump.resume``) to its next durable await,
    return or exception; the transition gets the ``Outcome``: ``("yield", request)``, ``("return", value)``
    or ``("raise", exception)``. A driver that stops meanwhile may throw ``Interrupted`` in instead."""

    pump: Pump
    action: tuple[str, Any]

    def run(self) -> Outcome:
        """Run it here, the loop turning in this thread until it is done (LoopError when it cannot)."""
        return self.pump.resume(self.action)


class Interrupted(Exception):
    """Thrown into a transition by a driver that stops while its async program is between two durable awaits
    (an ``Advance`` not done, in a transient await): the run gives its lease up and continues elsewhere from
    its last commit; the program is detached here (its durable frames run no finally block)."""


Flow = Generator[Any, Any, Any]
"""A generator of Commit/RunStep/Advance instructions (what every method below that may write returns)."""


class _Stop(Exception):
    """Internal: the transition ends (the program suspended, finished, or we lost it)."""


class Transition(CompositeFlow):
    """Advances one claimed execution until it suspends (sleep, wait, step retry), finishes, fails or is
    cancelled — one commit per request. ``run()`` is the generator; its return value is the execution
    as last written (or as claimed, when nothing could be written)."""

    def __init__(self, runner: Runner, execution: Execution) -> None:
        self.runner = runner
        self.store = runner.store
        self.clock = runner.clock
        self.owner = runner.owner
        self.on_event = runner.on_event
        self._execution = execution
        self._consume: int | None = None  # a signal delivered to the program, consumed by the next commit
        self._steps: dict[int, StepRecord] = {}  # the steps the execution's request names, as last committed
        self._running: dict[int, RunStep] = {}  # the steps of a composite request started and not answered yet
        self._frames: list[tuple[Any, int]] = []  # the frames of the last snapshot (versions.frames_of)
        self._carried: tuple[bytes, list[dict[str, Any]]] | None = None  # see _carry
        self._pump: Pump | None = None  # what advances the program, when it is a coroutine

    @property
    def execution(self) -> Execution:
        return self._execution

    def run(self) -> Flow:
        execution = self._execution
        gen: Program | None = None
        try:
            if execution.taken_from is not None:
                self.on_event(execution.id, "takeover", f"took over from {execution.taken_from} (its lease lapsed)")
            if execution.damage is not None:
                yield from self._fail_text(f"its store row is damaged ({execution.damage}): it cannot run")
            if execution.cancel_requested:
                yield from self._cancel(None)
            gen, action = yield from self._resume(execution)
            if type(gen) is types.CoroutineType:
                self._pump = self._new_pump(gen)
            while True:
                request = yield from self._drive(gen, action)
                action = yield from self._handle(gen, request)
        except _Stop:
            pass
        except Interrupted:  # its driver stops, the program in a transient await: it continues elsewhere
            self.on_event(execution.id, "detached", "the worker is stopping while the program is in a transient await: "
                                                    "it continues elsewhere from its last commit")
            yield from self._give_up(self._release, "stopping")
        except ConflictError as exc:
            self.on_event(execution.id, "conflict", f"another worker advanced it: {exc}")
        except StoreError as exc:  # the store failed under us: leave it to a later claim, not in a tight loop
            yield from self._give_up(self._set_aside, f"the store refused a transition: {text_of(exc)}")
        except LoopError as exc:  # an async program run where its loop cannot run: not the program's fault
            yield from self._give_up(self._set_aside, text_of(exc))
        except Exception as exc:  # we could not record a transition (or a bug): record that, never retry it forever
            yield from self._give_up(self._fail_text, f"the worker could not record the program's next transition: "
                                                      f"{type(exc).__name__}: {text_of(exc)}")
        finally:
            if self._pump is not None:
                self._leave(self._pump)
            elif gen is not None and gen.gi_frame is not None:
                detach(gen)  # persisted (or lost to another worker): its finally blocks must not run here
        return self._execution

    def _new_pump(self, program: types.CoroutineType) -> Pump:  # type: ignore[type-arg]
        return Pump(program, self.runner.event_loop(), settle=self.runner.settle_tasks)

    @staticmethod
    def _leave(pump: Pump) -> None:
        """An async program leaves the transition: detached (when suspended), its left-over tasks cancelled."""
        try:
            if pump.program.cr_frame is not None:
                detach(pump.program)
        finally:
            pump.close()

    # ------------------------------------------------------------------ resuming

    def _resume(self, ex: Execution) -> Flow:
        """The program's generator and what to do with it first: ("next", None), ("send", value) or
        ("throw", exception)."""
        yield from self._verify(ex)
        function = yield from self._load(ex)
        if ex.snapshot is None:
            args, kwargs = call_of(ex.args)
            try:
                gen = function(*args, **kwargs)
            except TypeError as exc:
                yield from self._fail_text(f"cannot start {ex.function}: {exc}")
            return gen, ("next", None)
        applied: list[dict[str, Any]] = []
        try:
            gen = restore(ex.snapshot, report=applied)
        except SnapshotFormatTooNewError as exc:  # a newer worker wrote it (a rolling deploy): leave it to one
            yield from self._set_aside(f"cannot restore: {text_of(exc)}")
        except CorruptSnapshotError as exc:  # its bytes can never be read: a permanent failure, recorded
            yield from self._fail_text(f"its snapshot cannot be read: {text_of(exc)}")
        except MigrationCancelled as exc:
            yield from self._cancelled_by_migration(exc)
        except IncompatibleCodeError as exc:  # a deploy changed its code: left for a worker that can run it
            yield from self._block(exc)
        except SnapshotError as exc:
            # the code changed under the snapshot, or it names what this process does not allow: leave it
            # for a fixed deploy
            yield from self._set_aside(f"cannot restore: {type(exc).__name__}: {text_of(exc)}")
        if applied:
            yield from self._carry(gen, applied)
        try:
            action = yield from self._first_action(ex)
        except BaseException:
            detach(gen)  # suspended again before we return it (a retry, a wait): its finally blocks must not run
            raise
        return gen, action

    def _first_action(self, ex: Execution) -> Flow:
        """What the restored program gets first, from the request it is suspended on (sealed with the
        snapshot: a status or timer changed in the store cannot wake a program early)."""
        request = ex.request or {}
        kind = request.get("kind")
        if kind == "wait":
            signal = yield from self._next_signal(request["signal"])
            return (yield from self._deliver(request, signal, resumed=True))
        if kind == "step":
            step = self._steps.get(request.get("index"))  # type: ignore[arg-type]
            if step is None:
                yield from self._fail_text(f"step {request.get('index')} of {ex.id} is missing from the store")
            return (yield from self._step_outcome(step))  # type: ignore[arg-type]
        if kind == "all":
            return (yield from self._answer(request))
        wake_at = request.get("wake_at") if kind == "sleep" else None
        if wake_at is not None and wake_at > self.clock.now():  # claimed before its time: sleep on
            yield from self._commit(status=SLEEPING, wake_at=wake_at, release=True)
            raise _Stop
        return "send", None

    def _verify(self, ex: Execution) -> Flow:
        """Check the seals of what we are about to act on: the execution (program, arguments, snapshot,
        request, steps asked for) and the step its request names. A signature that does not match is
        set aside (the right key may come); a checksum that does not match fails it (damaged)."""
        request = ex.request if isinstance(ex.request, dict) else {}
        steps: dict[int, StepRecord] = {}
        if request.get("kind") == "all":
            problem = spec_problem(request)
            if problem is not None:
                yield from self._fail_text(f"its store row is damaged ({problem}): it cannot run")
        try:
            for index in step_indices(request):
                step = self.store.step(ex.id, index)
                if step is None:
                    continue
                if step.damage is not None:
                    yield from self._fail_text(f"the store row of its step {step.index} is damaged ({step.damage})")
                seals.verify(step.mac, "step", step_parts(step), f"step {step.index} of execution {ex.id}")
                steps[index] = step
            seals.verify(ex.mac, "execution", execution_parts(ex.id, ex.function, ex.args, ex.snapshot, ex.request,
                                                              ex.steps_started, steps_mac(request, steps)),
                         f"execution {ex.id}")
            if settings.current.verify_keys and self.store.step(ex.id, ex.steps_started) is not None:
                raise SignatureError(f"execution {ex.id} has a step past the ones its signed state asked for: its row "
                                     "was put back from an earlier point of its run")
        except SignatureError as exc:
            yield from self._set_aside(text_of(exc))
        except CorruptSnapshotError as exc:
            yield from self._fail_text(text_of(exc))
        if request.get("kind") == "all" and any(index not in steps for index in step_indices(request)):
            yield from self._fail_text("a step its composite request names is missing from the store")
        self._steps = steps

    def _load(self, ex: Execution) -> Flow:
        try:
            return load_function(ex.function)
        except ProgramError as exc:
            yield from self._set_aside(str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _set_aside(self, problem: str) -> Flow:
        """The program cannot be resumed here and now (its module is missing, its code changed under
        the snapshot): keep everything, hold it for ``SET_ASIDE`` seconds with the problem noted, and
        release it, so that deploying a fix lets it continue and no worker claims it meanwhile —
        whatever is queued for it (a signal, a cancel) or due (a timer)."""
        ex = self._execution
        self.on_event(ex.id, "error", f"{problem}; set aside, trying again in {SET_ASIDE:g} s")
        yield from self._commit(held_until=self.clock.now() + SET_ASIDE,
                                error=f"{problem} (set aside: trying again every {SET_ASIDE:g} s)", release=True)
        raise _Stop

    def _carry(self, gen: Program, applied: list[dict[str, Any]]) -> Flow:
        """Restore moved frames to the code loaded now (upgrades, migrations): the first commit carries the
        run's snapshot under the new code and records the migrations, so that they apply once."""
        ex = self._execution
        now = self.clock.now()
        migrated = [{**entry, "at": now} for entry in applied if "migration" in entry]
        for entry in applied:
            what = (f"migrated by {entry['migration']} from {entry['from_point']!r} to {entry['to_point']!r}"
                    if "migration" in entry else f"upgraded {entry['upgrade']} from version {entry['from_version']} "
                                                 f"to {entry['to_version']}")
            self.on_event(ex.id, "deploy", what)
        data = yield from self._snapshot(gen)
        self._carried = (data, migrated)

    def _cancelled_by_migration(self, exc: MigrationCancelled) -> Flow:
        ex = self._execution
        note = (f"cancelled by migration {exc.migration}: {exc.reason} (its finally blocks did not run: the code "
                "that suspended it is gone)")
        entry = {"migration": exc.migration, "function": exc.function, "cancel": exc.reason, "at": self.clock.now()}
        yield from self._commit(status=CANCELLED, error=note, snapshot=None, request=None, wake_at=None,
                                waiting_for=None, release=True, migrations=[*(ex.migrations or []), entry])
        self.on_event(ex.id, "cancelled", note)
        raise _Stop

    def _block(self, exc: IncompatibleCodeError) -> Flow:
        """The code loaded here cannot resume the run (a deploy changed it): keep everything and record
        this process's code key in ``blocked_on``, so that no worker with this code claims it again. A
        worker with its version, or with code or migrations that can take it, has another key."""
        ex = self._execution
        function = exc.function if isinstance(exc, PointMismatchError) else ex.function
        key = capability.key_for(function.partition(":")[0])
        blocked = list(ex.blocked_on or [])
        if key in blocked:  # a process that had not loaded the module when it claimed: nothing new to say
            self.store.release(self.owner, [ex.id])
            raise _Stop
        blocked.append(key)
        self.on_event(ex.id, "blocked", f"{text_of(exc)}; left for a worker that can resume it")
        yield from self._commit(blocked_on=blocked, held_until=None, release=True,
                                error=f"cannot resume: {text_of(exc)} (blocked: left for a worker with the code "
                                      "that suspended it, or for a deploy or migration that can take it)")
        raise _Stop

    # ------------------------------------------------------------------ driving

    def _drive(self, gen: Program, action: tuple[str, Any]) -> Flow:
        """Run the program to its next request; a return or an exception ends the execution."""
        if self.runner.stop.is_set():
            yield from self._release()
        if self._pump is not None:
            outcome, result = yield Advance(self._pump, action)
        else:
            kind, value = action
            try:
                if kind == "next":
                    outcome, result = "yield", next(gen)
                elif kind == "send":
                    outcome, result = "yield", gen.send(value)
                else:
                    outcome, result = "yield", gen.throw(value)
            except StopIteration as stop:
                outcome, result = "return", stop.value
            except Exception as exc:  # the program failed: recorded below
                outcome, result = "raise", exc
        if self.runner.tracer is not None:
            self.runner.tracer(self._execution.id, action, outcome, result)
        if outcome == "yield":
            return result
        if outcome == "return":
            yield from self._finish(result)
        yield from self._fail(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, _why: str = "") -> Flow:
        """Give the run up as last committed: another worker continues from there."""
        self._consume = None  # the program has not received it (or that is lost with it): it stays queued
        yield from self._commit(release=True)
        raise _Stop

    def _handle(self, gen: Program, request: Any) -> Flow:
        """Persist the program at ``request`` and work out what it gets back."""
        if isinstance(request, rq.Step):
            return (yield from self._begin_step(gen, request))
        if isinstance(request, All):
            return (yield from self._all(gen, request))
        if isinstance(request, Combinator):  # yielded by a generator program
            return "throw", TypeError(f"{request.request} is for async def programs (await it); a generator program "
                                      "yields one request at a time")
        if isinstance(request, rq.Wait):
            return (yield from self._wait(gen, request))
        if isinstance(request, rq.Sleep):
            return (yield from self._sleep(gen, request))
        if isinstance(request, rq.Checkpoint):
            yield from self._checkpoint(gen, {"kind": "checkpoint"})
            return "send", None
        progress = to_json(request)
        yield from self._checkpoint(gen, {"kind": "progress"}, progress=progress)
        self.on_event(self._execution.id, "progress", json.dumps(progress))
        return "send", None

    def _snapshot(self, gen: Program) -> Flow:
        self._frames = versions.frames_of(gen)  # where it is suspended, recorded with the snapshot
        try:
            return snapshot(gen)
        except UnserializableValueError as exc:
            yield from self._fail_text(f"cannot persist the program: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkpoint(self, gen: Program, request: dict[str, Any], **fields: Any) -> Flow:
        data = yield from self._snapshot(gen)
        yield from self._commit(snapshot=data, request=request, status=PENDING, wake_at=None, waiting_for=None,
                                **fields)

    def _sleep(self, gen: Program, request: rq.Sleep) -> Flow:
        now = self.clock.now()
        wake_at = request.wake_at(now)
        if wake_at <= now:
            yield from self._checkpoint(gen, {"kind": "sleep"})
            return "send", None
        data = yield from self._snapshot(gen)
        yield from self._commit(snapshot=data, request={"kind": "sleep", "wake_at": wake_at}, status=SLEEPING,
                                wake_at=wake_at, waiting_for=None, release=True)
        self.on_event(self._execution.id, "sleep", f"sleeping {wake_at - now:g} s")
        raise _Stop

    def _wait(self, gen: Program, request: rq.Wait) -> Flow:
        now = self.clock.now()
        timeout_at = None if request.timeout is None else now + request.timeout
        spec = {"kind": "wait", "signal": request.signal, "timeout": request.timeout, "timeout_at": timeout_at}
        data = yield from self._snapshot(gen)
        signal = yield from self._next_signal(request.signal)
        if signal is None and (timeout_at is None or timeout_at > now):
            yield from self._commit(snapshot=data, request=spec, status=WAITING, waiting_for=request.signal,
                                    wake_at=timeout_at, release=True)
            self.on_event(self._execution.id, "wait", f"waiting for signal {request.signal!r}"
                          + (f" (timeout {request.timeout:g} s)" if request.timeout is not None else ""))
            raise _Stop
        yield from self._commit(snapshot=data, request=spec, status=PENDING, waiting_for=None, wake_at=None)
        return (yield from self._deliver(spec, signal, resumed=False))

    def _next_signal(self, name: str) -> Flow:
        """The next signal ``name`` to deliver; a damaged one is consumed with a note, never delivered."""
        while True:
            signal = self.store.next_signal(self._execution.id, name, exclude=self._consume)
            if signal is None or signal.damage is None:
                return signal
            pending, self._consume = self._consume, signal.id
            note = f"signal {signal.id} {name!r} was damaged in the store ({signal.damage}) and was skipped"
            self.on_event(self._execution.id, "error", note)
            yield from self._commit(error=note)
            self._consume = pending

    def _deliver(self, spec: dict[str, Any], signal: Any, *, resumed: bool) -> Flow:
        """What a program waiting as ``spec`` gets: ``signal``'s payload, or SignalTimeout when its
        time is up; else (``resumed``: claimed for nothing) it waits again."""
        if signal is not None:
            self._consume = signal.id  # consumed by the next commit, when the program has moved on
            self.on_event(self._execution.id, "signal", f"signal {signal.name!r} received")
            return "send", signal.payload
        if spec.get("timeout_at") is not None and spec["timeout_at"] <= self.clock.now():
            self.on_event(self._execution.id, "timeout", f"no signal {spec['signal']!r} in time")
            return "throw", rq.SignalTimeout(spec["signal"], spec.get("timeout"))
        if resumed:  # claimed, yet nothing to deliver (the signal went to an earlier wait): wait again
            yield from self._commit(status=WAITING, waiting_for=spec["signal"], wake_at=spec.get("timeout_at"),
                                    release=True)
            raise _Stop
        raise AssertionError("a wait with neither signal nor timeout")  # pragma: no cover

    # ------------------------------------------------------------------ steps

    def _begin_step(self, gen: Program, request: rq.Step) -> Flow:
        try:
            ref = program_names.step_ref(request.fn)
            call = step_call(ref, gen, request.args, request.kwargs)
        except (TypeError, SnapshotError) as exc:
            return "throw", exc  # a mistake in the program: raised where it yielded the step
        index = self._execution.steps_started
        record = StepRecord(self._execution.id, index, ref, call, request.policy.to_json(), "pending",
                            started_at=self.clock.now())
        data = yield from self._snapshot(gen)
        yield from self._commit(snapshot=data, request={"kind": "step", "index": index, "function": ref},
                                status=PENDING, wake_at=None, waiting_for=None, steps_started=index + 1,
                                new_step=record)
        return (yield from self._run_step(record, request.fn, request.args, request.kwargs))

    def _step_outcome(self, record: StepRecord) -> Flow:
        """On resuming at a step: its recorded result, its recorded failure, or run it (again)."""
        if record.status == "done":
            return "send", load_value(record.result) if record.result is not None else None
        if record.status == "failed":
            return "throw", self._recorded_error(record)
        try:
            fn = program_names.step_function(record.function, import_program_module)
        except program_names.NameError_ as exc:
            yield from self._set_aside(str(exc))
        args, kwargs = load_value(record.call)
        return (yield from self._run_step(record, fn, tuple(args), kwargs))

    def _run_step(self, record: StepRecord, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Flow:
        attempt = record.attempts + 1
        self.on_event(record.execution_id, "step", f"step {record.index} {record.function} attempt {attempt}")
        outcome: StepOutcome = yield RunStep(record, fn, args, kwargs)
        if outcome.error is not None:
            return (yield from self._step_failed(record, attempt, outcome.error))
        try:
            encoded = dump_value(outcome.value, f"the result of step {record.function}")
        except SnapshotError as exc:
            return (yield from self._step_failed(record, attempt, exc, final=True))
        yield from self._commit(step_update=(record.index, {"status": "done", "attempts": attempt, "result": encoded,
                                                            "finished_at": self.clock.now()}))
        return "send", outcome.value

    def _step_failed(self, record: StepRecord, attempt: int, exc: Exception, *, final: bool = False) -> Flow:
        update, retry_in, thrown, event = self._failure(record, attempt, exc, final)
        if retry_in is not None:
            wake_at = self.clock.now() + retry_in
            yield from self._commit(step_update=(record.index, update), status=SLEEPING, wake_at=wake_at, release=True)
            self.on_event(record.execution_id, *event)
            raise _Stop
        yield from self._commit(step_update=(record.index, update))
        self.on_event(record.execution_id, *event)
        return "throw", thrown

    def _failure(self, record: StepRecord, attempt: int, exc: Exception,
                 final: bool) -> tuple[dict[str, Any], float | None, BaseException, tuple[str, str]]:
        """A failed attempt of a step: its step update, the seconds until it runs again (None: it failed for
        good), what the program gets then, and the event to report once that is committed."""
        policy = rq.RetryPolicy.from_json(record.policy)
        text = f"{type(exc).__name__}: {text_of(exc)}"
        update = {"attempts": attempt, "error": text, "error_value": dump_or_none(exc)}
        if not final and attempt < policy.attempts:
            return update, policy.delay(attempt), exc, (
                "retry", f"step {record.index} failed ({text}); attempt {attempt + 1} of {policy.attempts} in "
                         f"{policy.delay(attempt):g} s")
        update.update(status="failed", finished_at=self.clock.now())
        event = ("step-failed", f"step {record.index} failed for good: {text}")
        if update["error_value"] is None:  # what a resumed run would see too: the same exception type
            return update, None, rq.StepFailed(record.function, type(exc).__name__, text_of(exc)), event
        return update, None, exc, event

    def _recorded_error(self, record: StepRecord) -> BaseException:
        if record.error_value is not None:
            try:
                error = load_value(record.error_value)
                if isinstance(error, BaseException):
                    return error
            except SnapshotError:
                pass
        type_name, _, message = (record.error or "Exception: ").partition(": ")
        return rq.StepFailed(record.function, type_name, message)

    # ------------------------------------------------------------------ endings

    def _finish(self, value: Any) -> Flow:
        try:
            encoded = dump_value(value, "the program's return value")
        except SnapshotError as exc:
            yield from self._fail_text(f"the program returned a value that cannot be stored: {exc}")
        yield from self._commit(status=FINISHED, result=encoded, snapshot=None, request=None, wake_at=None,
                                waiting_for=None, release=True)
        self.on_event(self._execution.id, "finished", json.dumps(to_json(value)))
        raise _Stop

    def _fail(self, exc: BaseException) -> Flow:
        yield from self._commit(status=FAILED, error=error_text(exc), error_value=dump_or_none(exc), snapshot=None,
                                request=None, wake_at=None, waiting_for=None, release=True)
        self.on_event(self._execution.id, "failed", f"{type(exc).__name__}: {text_of(exc)}")
        raise _Stop

    def _fail_text(self, text: str) -> Flow:
        yield from self._commit(status=FAILED, error=text, wake_at=None, waiting_for=None, release=True)
        self.on_event(self._execution.id, "failed", text)
        raise _Stop

    def _cancel(self, gen: Program | None) -> Flow:
        ex = self._execution
        note = "cancelled"
        if gen is None and ex.snapshot is not None:
            try:
                gen = restore_stored(self.store, ex)
            except (ProgramError, SnapshotError) as exc:
                note = f"cancelled (its finally blocks could not run: {type(exc).__name__}: {text_of(exc)})"
        if type(gen) is types.CoroutineType:
            note = (yield from self._cancel_coroutine(gen)) or note
        elif gen is not None:
            try:
                gen.close()  # runs the program's finally blocks and __exit__ methods
            except Exception as exc:
                note = f"cancelled; closing it raised {type(exc).__name__}: {text_of(exc)}"
        yield from self._commit(status=CANCELLED, error=note, snapshot=None, request=None, wake_at=None,
                                waiting_for=None, release=True)
        self.on_event(ex.id, "cancelled", note)
        raise _Stop

    def _cancel_coroutine(self, program: types.CoroutineType) -> Flow:  # type: ignore[type-arg]
        """Cancel an async program as asyncio cancels a task (``CancelledError`` thrown in, its ``finally``
        blocks may await transient work); a durable await meanwhile is refused with RuntimeError, as a
        generator that yields while it is closed. A note when it ended with another exception."""
        pump = self._new_pump(program)
        try:
            outcome, value = yield from self._advance_through(pump, pump.cancellation(lambda: RuntimeError(
                "a durable await (step/sleep/wait/checkpoint) while the program is being cancelled: its clean-up may "
                "await transient work only")))
        finally:
            self._leave(pump)
        if outcome == "raise" and not isinstance(value, asyncio.CancelledError):
            return f"cancelled; cancelling it raised {type(value).__name__}: {text_of(value)}"
        return None

    @staticmethod
    def _advance_through(pump: Pump, actions: Generator[tuple[str, Any], Outcome, Outcome]) -> Flow:
        """Advance ``pump``'s program with each action ``actions`` yields (sent back each outcome); what
        ``actions`` returns."""
        action = next(actions)
        while True:
            outcome = yield Advance(pump, action)
            try:
                action = actions.send(outcome)
            except StopIteration as end:
                return end.value

    # ------------------------------------------------------------------ the one place that writes

    def _commit(self, *, release: bool = False, new_step: StepRecord | None = None,
                step_update: tuple[int, dict[str, Any]] | None = None, new_steps: list[StepRecord] | None = None,
                step_updates: list[tuple[int, dict[str, Any]]] | None = None, **fields: Any) -> Flow:
        """Write one transition (compare-and-swap on the version we hold). What a worker acts on later —
        the snapshot, the request, the steps asked for and the step the request names — is sealed
        (``values.seals``) in the same write."""
        ex = self._execution
        if ex.held_until is not None and "held_until" not in fields:
            fields["held_until"] = None  # it could be resumed after all: the hold and its note are over
            fields.setdefault("error", None)
        if fields.get("snapshot") is not None and ex.error is not None:
            fields.setdefault("error", None)  # resumed again: a note left by _set_aside is out of date
        if "waiting_for" in fields and "waits" not in fields and getattr(ex, "waits", None):
            fields["waits"] = None  # no longer waiting for the names of a composite request
        if ex.blocked_on and "blocked_on" not in fields:
            fields["blocked_on"] = None  # resumed after all (a new deploy or migration): no longer blocked
        if self._carried is not None:  # the first commit after an upgrade or a migration
            carried, migrated = self._carried
            self._carried = None
            if "snapshot" not in fields:
                fields["snapshot"] = carried
            if migrated:
                fields["migrations"] = [*(ex.migrations or []), *migrated]
        recorded: list[versions.CodeVersion] = []
        if fields.get("snapshot") is not None and self._frames:
            fields.update(versions.describe(self._frames))
            recorded = versions.new_versions(self._frames, self.runner.recorded, self.clock.now())
        if "request" in fields:
            step_updates = [*(step_updates or []), *self._abandoned(fields["request"])]
        steps = dict(self._steps)
        inserted = [new_step] if new_step is not None else []
        inserted += new_steps or []
        for record in inserted:
            record.mac = seals.seal("step", step_parts(record))
            steps[record.index] = record
        updated = [step_update] if step_update is not None else []
        updated += step_updates or []
        for index, updates in updated:
            assert index in steps, "a step update for a step the runner does not hold"
            step = steps[index] = dataclasses.replace(steps[index], **updates)
            updates["mac"] = step.mac = seals.seal("step", step_parts(step))
        request = fields.get("request", ex.request)
        steps = {index: steps[index] for index in step_indices(request) if index in steps}
        if inserted or updated or fields.keys() & _SEALED:
            fields["mac"] = seals.seal("execution", execution_parts(
                ex.id, ex.function, ex.args, fields.get("snapshot", ex.snapshot), request,
                fields.get("steps_started", ex.steps_started), steps_mac(request, steps)))
        if len(inserted) + len(updated) > 1 or new_steps or step_updates:  # (the plural fields, all of them)
            written: dict[str, Any] = {"new_steps": tuple(inserted), "step_updates": tuple(updated)}
        else:
            written = {"new_step": new_step, "step_update": step_update}
        change = Change(ex.id, ex.version, owner=self.owner, fields=fields, consume_signal=self._consume,
                        release=release, lease_until=self.clock.now() + self.runner.lease, base=ex,
                        versions=recorded, **written)
        self._execution = yield Commit(change)
        self.runner.recorded.update((v.function, v.version, v.source_digest) for v in recorded)
        self._steps = steps
        self._consume = None
        if self._execution.cancel_requested and not release and self._execution.status not in TERMINAL:
            yield from self._cancel(None)
        return self._execution

    def _give_up(self, record: Callable[[str], Flow], problem: str) -> Flow:
        """After an exception nothing expected: record ``problem`` with ``record`` (set aside, or failed)."""
        ex = self._execution
        try:
            yield from record(problem)
        except _Stop:
            pass
        except Exception as again:  # the store is gone too: the lease lapses and a later claim retries
            self.on_event(ex.id, "error", f"could not record it either: {type(again).__name__}: {text_of(again)}")


_SEALED = frozenset({"snapshot", "request", "steps_started"})


def drive(flow: Flow, commit: Callable[[Change], Execution], run_step: Callable[[RunStep], StepOutcome],
          pick: Callable[[list[RunStep]], RunStep] | None = None) -> Any:
    """Run a transition to its end here, one instruction at a time: ``commit`` writes (what it raises is
    thrown into the transition, which records or reports it), ``run_step`` calls a step, an ``Advance``
    runs here. A ``NextOutcome`` (the steps of a composite request) runs one of its steps to its end: the one
    ``pick`` chooses among them (the test kit draws it from its seed), or by default the lowest index.
    Returns what the flow returns."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                instruction = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(instruction, Commit):
                try:
                    value = commit(instruction.change)
                except Exception as exc:
                    error = exc
            elif isinstance(instruction, Advance):
                try:
                    value = instruction.run()
                except LoopError as exc:  # the transition sets the run aside
                    error = exc
            elif isinstance(instruction, NextOutcome):  # the steps of a composite, one after another
                step = pick(instruction.steps) if pick is not None else \
                    min(instruction.steps, key=lambda s: s.record.index)
                value = (step, run_step(step))
            else:
                value = run_step(instruction)
    finally:
        flow.close()
