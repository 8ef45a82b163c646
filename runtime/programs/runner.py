"""The runner: advances one durable program from request to request, committing each transition."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import reprlib
import sys
import threading
import traceback
import types
import uuid
from typing import Any, Callable

from . import program_names
from . import requests as rq
from .clock import SYSTEM, Clock
from ..errors import CorruptSnapshotError, SignatureError, SnapshotError, UnserializableValueError
from ..snapshot import detach, restore, snapshot, suspended_at
from .store.base import (CANCELLED, FAILED, FINISHED, PENDING, SLEEPING, TERMINAL, WAITING, Change, ConflictError,
                         Execution, StepRecord, Store, StoreError, call_of, call_record)
from ..values import dump_value, load_value, seals, settings

EventSink = Callable[[str, str, str], None]
"""``on_event(execution_id, kind, text)``: what the runner reports as it goes (``durable run`` prints it)."""


SET_ASIDE = 60.0
"""Seconds before a program that could not be resumed (code changed, module missing) is tried again."""


class ProgramError(Exception):
    """The program cannot be started or resumed: an unknown function, arguments that do not fit, a
    module that cannot be imported, code that changed under a snapshot. Nothing was written."""


class _Stop(Exception):
    """Internal: the transition loop ends (the program suspended, finished, or we lost it)."""


def import_program_module(module_name: str) -> types.ModuleType:
    """Import a program's module as ``python -m`` would find it (the current directory first),
    compiling it with the import hook when the compiler is installed and the module is not compiled."""
    if not program_names.dotted(module_name):
        raise ProgramError(f"{module_name!r} is not a dotted module name (as python -m takes it, run from the "
                           "project's directory)")
    if module_name in sys.modules:
        return sys.modules[module_name]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        from transpiler import install_import_hook
    except ImportError:  # runtime-only install: the module must be compiled ahead of time
        pass
    else:
        _hooked(install_import_hook, module_name)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ProgramError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module does not compile, or raises while it runs: the user's code, not ours
        sys.modules.pop(module_name, None)
        detail = str(exc) if type(exc).__name__ == "CompileError" else f"{type(exc).__name__}: {exc}"
        raise ProgramError(f"cannot import module {module_name!r}:\n{detail}") from None


_HOOKED: set[str] = set()
_HOOK_LOCK = threading.Lock()


def _hooked(install: Callable[..., Any], module_name: str) -> None:
    top = module_name.split(".")[0]
    with _HOOK_LOCK:
        if top not in _HOOKED:
            _HOOKED.add(top)
            install([top])


def load_function(ref: str, *, named_by_operator: bool = False) -> Callable[..., Any]:
    """The durable generator function named ``module:qualname``; raises ProgramError.

    A name read from a store row is found only in a module a worker may import (``program_names``);
    ``named_by_operator`` (``durable run``, ``Runner.start``) also imports the module the command names.
    """
    try:
        module, qualname = program_names.split(ref, "program")
        if named_by_operator:
            import_program_module(module)
        else:
            program_names.import_module(module, f"program {ref}", import_program_module)
        obj = program_names.find(module, qualname, "function")
    except program_names.NameError_ as exc:
        raise ProgramError(str(exc)) from None
    if not getattr(obj, "__durable__", None) or not inspect.isgeneratorfunction(obj):
        raise ProgramError(f"{ref} is not a @durable generator function (mark it with @runtime.durable)")
    return obj  # type: ignore[no-any-return]


def to_json(value: Any) -> Any:
    """``value`` if JSON can carry it, else a short text naming it: how progress values and results are
    shown (never raises, whatever the value: huge ints, nesting too deep for JSON, a raising repr)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return reprlib.repr(value)
    except Exception:  # noqa: BLE001 - a user value's repr may raise anything
        return f"<{type(value).__qualname__} value>"


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def _dump_or_none(value: Any) -> bytes | None:
    try:
        return dump_value(value)
    except (SnapshotError, RecursionError):
        return None


class Runner:
    """Drives durable programs kept in ``store``. One runner per thread (the lease owner is the
    runner's): ``start`` records a new execution, ``advance`` runs a claimed one until it suspends
    (sleep, wait, step retry), finishes, fails or is cancelled — one committed transition per request."""

    def __init__(self, store: Store, *, clock: Clock = SYSTEM, owner: str | None = None, lease: float = 30.0,
                 on_event: EventSink | None = None, stop: threading.Event | None = None) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.on_event = on_event or (lambda execution_id, kind, text: None)
        self.stop = stop or threading.Event()
        self._consume: int | None = None  # a signal delivered to the program, consumed by the next commit
        self._step: StepRecord | None = None  # the step the execution's request names, as last committed

    # ------------------------------------------------------------------ entry points

    def start(self, ref: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Execution:
        """Record a new execution of ``ref`` (``module:qualname``) with JSON ``args`` (and keyword
        arguments ``kwargs``). Raises ProgramError (nothing written) for an unknown function or
        arguments that do not fit."""
        fn = load_function(ref, named_by_operator=True)
        if not isinstance(args, list) or not isinstance(kwargs or {}, dict):
            raise ProgramError("the arguments must be a JSON list of positional arguments (and an object of "
                               "keyword arguments)")
        try:
            inspect.signature(fn).bind(*args, **(kwargs or {}))
        except TypeError as exc:
            raise ProgramError(f"arguments {_call_text(args, kwargs)} do not fit {ref}{inspect.signature(fn)}: "
                               f"{exc}") from None
        execution_id = uuid.uuid4().hex[:12]
        call = call_record(args, kwargs)
        try:
            mac = seals.seal("execution", _execution_parts(execution_id, ref, call, None, None, 0, None))
        except (TypeError, ValueError) as exc:
            raise ProgramError(f"the arguments cannot be stored as JSON: {exc}") from None
        execution = self.store.create(ref, args, kwargs=kwargs, now=self.clock.now(), execution_id=execution_id,
                                      mac=mac)
        self.on_event(execution.id, "created", f"{ref}({_call_text(args, kwargs)})")
        return execution

    def claim_and_advance(self, execution_id: str | None = None) -> Execution | None:
        """Claim a runnable execution (that one, or any) and advance it; None when there was none."""
        execution = self.store.claim(self.owner, now=self.clock.now(), lease=self.lease, execution_id=execution_id)
        if execution is None:
            return None
        return self.advance(execution)

    def advance(self, execution: Execution) -> Execution:
        """Run a claimed execution until it suspends, ends, or the runner is asked to stop."""
        self._consume = None
        self._execution = execution
        self._step = None
        gen: types.GeneratorType | None = None
        try:
            if execution.damage is not None:
                self._fail_text(f"its store row is damaged ({execution.damage}): it cannot run")
            if execution.cancel_requested:
                self._cancel(None)
            gen, action = self._resume(execution)
            while True:
                request = self._drive(gen, action)
                action = self._handle(gen, request)
        except _Stop:
            pass
        except ConflictError as exc:
            self.on_event(execution.id, "conflict", f"another worker advanced it: {exc}")
        except StoreError as exc:  # the store failed under us: leave it to a later claim, not in a tight loop
            self._give_up(self._set_aside, f"the store refused a transition: {_text(exc)}")
        except Exception as exc:  # we could not record a transition (or a bug): record that, never retry it forever
            self._give_up(self._fail_text, f"the worker could not record the program's next transition: "
                                           f"{type(exc).__name__}: {_text(exc)}")
        finally:
            if gen is not None and gen.gi_frame is not None:
                detach(gen)  # persisted (or lost to another worker): its finally blocks must not run here
        return self._execution

    # ------------------------------------------------------------------ resuming

    def _resume(self, ex: Execution) -> tuple[types.GeneratorType, tuple[str, Any]]:
        """The program's generator and what to do with it first: ("next", None), ("send", value) or
        ("throw", exception)."""
        self._verify(ex)
        function = self._load(ex)
        if ex.snapshot is None:
            args, kwargs = call_of(ex.args)
            try:
                gen = function(*args, **kwargs)
            except TypeError as exc:
                self._fail_text(f"cannot start {ex.function}: {exc}")
            return gen, ("next", None)
        try:
            gen = restore(ex.snapshot)
        except CorruptSnapshotError as exc:  # its bytes can never be read: a permanent failure, recorded
            self._fail_text(f"its snapshot cannot be read: {_text(exc)}")
        except SnapshotError as exc:
            # the code changed under the snapshot, or it names what this process does not allow: leave it
            # for a fixed deploy
            self._set_aside(f"cannot restore: {type(exc).__name__}: {_text(exc)}")
        try:
            return gen, self._first_action(ex)
        except BaseException:
            detach(gen)  # suspended again before we return it (a retry, a wait): its finally blocks must not run
            raise

    def _first_action(self, ex: Execution) -> tuple[str, Any]:
        """What the restored program gets first, from the request it is suspended on (sealed with the
        snapshot: a status or timer changed in the store cannot wake a program early)."""
        request = ex.request or {}
        kind = request.get("kind")
        if kind == "wait":
            return self._deliver(request, self._next_signal(request["signal"]), resumed=True)
        if kind == "step":
            if self._step is None:
                self._fail_text(f"step {request.get('index')} of {ex.id} is missing from the store")
            return self._step_outcome(self._step)  # type: ignore[arg-type]
        wake_at = request.get("wake_at") if kind == "sleep" else None
        if wake_at is not None and wake_at > self.clock.now():  # claimed before its time: sleep on
            self._commit(status=SLEEPING, wake_at=wake_at, release=True)
            raise _Stop
        return "send", None

    def _verify(self, ex: Execution) -> None:
        """Check the seals of what we are about to act on: the execution (program, arguments, snapshot,
        request, steps asked for) and the step its request names. A signature that does not match is
        set aside (the right key may come); a checksum that does not match fails it (damaged)."""
        request = ex.request if isinstance(ex.request, dict) else {}
        step = None
        try:
            if request.get("kind") == "step" and type(request.get("index")) is int:
                step = self.store.step(ex.id, request["index"])
                if step is not None:
                    if step.damage is not None:
                        self._fail_text(f"the store row of its step {step.index} is damaged ({step.damage})")
                    seals.verify(step.mac, "step", _step_parts(step), f"step {step.index} of execution {ex.id}")
            seals.verify(ex.mac, "execution", _execution_parts(ex.id, ex.function, ex.args, ex.snapshot, ex.request,
                                                               ex.steps_started, step.mac if step else None),
                         f"execution {ex.id}")
            if settings.current.verify_keys and self.store.step(ex.id, ex.steps_started) is not None:
                raise SignatureError(f"execution {ex.id} has a step past the ones its signed state asked for: its row "
                                     "was put back from an earlier point of its run")
        except SignatureError as exc:
            self._set_aside(_text(exc))
        except CorruptSnapshotError as exc:
            self._fail_text(_text(exc))
        self._step = step

    def _load(self, ex: Execution) -> Callable[..., Any]:
        try:
            return load_function(ex.function)
        except ProgramError as exc:
            self._set_aside(str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _set_aside(self, problem: str) -> None:
        """The program cannot be resumed here and now (its module is missing, its code changed under
        the snapshot): keep everything, note the problem, and look again in ``SET_ASIDE`` seconds, so
        that deploying a fix lets it continue and no worker spins on it meanwhile."""
        ex = self._execution
        wake_at = self.clock.now() + SET_ASIDE
        status = ex.status if ex.status in (SLEEPING, WAITING) else SLEEPING
        self.on_event(ex.id, "error", f"{problem}; trying again in {SET_ASIDE:g} s")
        self._commit(status=status, wake_at=wake_at, error=f"{problem} (trying again every {SET_ASIDE:g} s)",
                     release=True)
        raise _Stop

    # ------------------------------------------------------------------ driving

    def _drive(self, gen: types.GeneratorType, action: tuple[str, Any]) -> Any:
        """Run the program to its next request; a return or an exception ends the execution."""
        if self.stop.is_set():
            self._consume = None  # the program has not received it: it stays queued
            self._commit(release=True)  # another worker continues from the last commit
            raise _Stop
        kind, value = action
        try:
            if kind == "next":
                return next(gen)
            if kind == "send":
                return gen.send(value)
            return gen.throw(value)
        except StopIteration as stop:
            self._finish(stop.value)
        except Exception as exc:  # the program failed: record it
            self._fail(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _handle(self, gen: types.GeneratorType, request: Any) -> tuple[str, Any]:
        """Persist the program at ``request`` and work out what it gets back."""
        if isinstance(request, rq.Step):
            return self._begin_step(gen, request)
        if isinstance(request, rq.Wait):
            return self._wait(gen, request)
        if isinstance(request, rq.Sleep):
            return self._sleep(gen, request)
        if isinstance(request, rq.Checkpoint):
            self._checkpoint(gen, {"kind": "checkpoint"})
            return "send", None
        progress = to_json(request)
        self._checkpoint(gen, {"kind": "progress"}, progress=progress)
        self.on_event(self._execution.id, "progress", json.dumps(progress))
        return "send", None

    def _snapshot(self, gen: types.GeneratorType) -> bytes:
        try:
            return snapshot(gen)
        except UnserializableValueError as exc:
            self._fail_text(f"cannot persist the program: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkpoint(self, gen: types.GeneratorType, request: dict[str, Any], **fields: Any) -> None:
        self._commit(snapshot=self._snapshot(gen), request=request, status=PENDING, wake_at=None,
                     waiting_for=None, **fields)

    def _sleep(self, gen: types.GeneratorType, request: rq.Sleep) -> tuple[str, Any]:
        now = self.clock.now()
        wake_at = request.wake_at(now)
        if wake_at <= now:
            self._checkpoint(gen, {"kind": "sleep"})
            return "send", None
        self._commit(snapshot=self._snapshot(gen), request={"kind": "sleep", "wake_at": wake_at}, status=SLEEPING,
                     wake_at=wake_at, waiting_for=None, release=True)
        self.on_event(self._execution.id, "sleep", f"sleeping {wake_at - now:g} s")
        raise _Stop

    def _wait(self, gen: types.GeneratorType, request: rq.Wait) -> tuple[str, Any]:
        now = self.clock.now()
        timeout_at = None if request.timeout is None else now + request.timeout
        spec = {"kind": "wait", "signal": request.signal, "timeout": request.timeout, "timeout_at": timeout_at}
        data = self._snapshot(gen)
        signal = self._next_signal(request.signal)
        if signal is None and (timeout_at is None or timeout_at > now):
            self._commit(snapshot=data, request=spec, status=WAITING, waiting_for=request.signal, wake_at=timeout_at,
                         release=True)
            self.on_event(self._execution.id, "wait", f"waiting for signal {request.signal!r}"
                          + (f" (timeout {request.timeout:g} s)" if request.timeout is not None else ""))
            raise _Stop
        self._commit(snapshot=data, request=spec, status=PENDING, waiting_for=None, wake_at=None)
        return self._deliver(spec, signal, resumed=False)

    def _next_signal(self, name: str) -> Any:
        """The next signal ``name`` to deliver; a damaged one is consumed with a note, never delivered."""
        while True:
            signal = self.store.next_signal(self._execution.id, name, exclude=self._consume)
            if signal is None or signal.damage is None:
                return signal
            pending, self._consume = self._consume, signal.id
            note = f"signal {signal.id} {name!r} was damaged in the store ({signal.damage}) and was skipped"
            self.on_event(self._execution.id, "error", note)
            self._commit(error=note)
            self._consume = pending

    def _deliver(self, spec: dict[str, Any], signal: Any, *, resumed: bool) -> tuple[str, Any]:
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
            self._commit(status=WAITING, waiting_for=spec["signal"], wake_at=spec.get("timeout_at"), release=True)
            raise _Stop
        raise AssertionError("a wait with neither signal nor timeout")  # pragma: no cover

    # ------------------------------------------------------------------ steps

    def _begin_step(self, gen: types.GeneratorType, request: rq.Step) -> tuple[str, Any]:
        try:
            ref = program_names.step_ref(request.fn)
            call = _step_call(ref, gen, request.args, request.kwargs)
        except (TypeError, SnapshotError) as exc:
            return "throw", exc  # a mistake in the program: raised where it yielded the step
        index = self._execution.steps_started
        record = StepRecord(self._execution.id, index, ref, call, request.policy.to_json(), "pending",
                            started_at=self.clock.now())
        self._commit(snapshot=self._snapshot(gen), request={"kind": "step", "index": index, "function": ref},
                     status=PENDING, wake_at=None, waiting_for=None, steps_started=index + 1, new_step=record)
        return self._run_step(record, request.fn, request.args, request.kwargs)

    def _step_outcome(self, record: StepRecord) -> tuple[str, Any]:
        """On resuming at a step: its recorded result, its recorded failure, or run it (again)."""
        if record.status == "done":
            return "send", load_value(record.result) if record.result is not None else None
        if record.status == "failed":
            return "throw", self._recorded_error(record)
        try:
            fn = program_names.step_function(record.function, import_program_module)
        except program_names.NameError_ as exc:
            self._set_aside(str(exc))
        args, kwargs = load_value(record.call)
        return self._run_step(record, fn, tuple(args), kwargs)

    def _run_step(self, record: StepRecord, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[str, Any]:
        attempt = record.attempts + 1
        context = rq.StepContext(record.execution_id, record.index, attempt)
        token = rq._CURRENT.set(context)
        self.on_event(record.execution_id, "step", f"step {record.index} {record.function} attempt {attempt}")
        keeper = self._keep_lease()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            return self._step_failed(record, attempt, exc)
        finally:
            keeper.set()
            rq._CURRENT.reset(token)
        try:
            encoded = dump_value(result, f"the result of step {record.function}")
        except SnapshotError as exc:
            return self._step_failed(record, attempt, exc, final=True)
        self._commit(step_update=(record.index, {"status": "done", "attempts": attempt, "result": encoded,
                                                 "finished_at": self.clock.now()}))
        return "send", result

    def _keep_lease(self) -> threading.Event:
        """Renew our lease every third of its length while a step runs (a step may take longer than
        the lease); set the returned event to stop."""
        done = threading.Event()
        execution_id, interval = self._execution.id, max(self.lease / 3, 0.05)

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

    def _step_failed(self, record: StepRecord, attempt: int, exc: Exception, *, final: bool = False
                     ) -> tuple[str, Any]:
        policy = rq.RetryPolicy.from_json(record.policy)
        text = f"{type(exc).__name__}: {_text(exc)}"
        update = {"attempts": attempt, "error": text, "error_value": _dump_or_none(exc)}
        if not final and attempt < policy.attempts:
            wake_at = self.clock.now() + policy.delay(attempt)
            self._commit(step_update=(record.index, update), status=SLEEPING, wake_at=wake_at, release=True)
            self.on_event(record.execution_id, "retry", f"step {record.index} failed ({text}); "
                          f"attempt {attempt + 1} of {policy.attempts} in {policy.delay(attempt):g} s")
            raise _Stop
        self._commit(step_update=(record.index, {**update, "status": "failed", "finished_at": self.clock.now()}))
        self.on_event(record.execution_id, "step-failed", f"step {record.index} failed for good: {text}")
        if update["error_value"] is None:  # what a resumed run would see too: the same exception type
            return "throw", rq.StepFailed(record.function, type(exc).__name__, _text(exc))
        return "throw", exc

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

    def _finish(self, value: Any) -> None:
        try:
            encoded = dump_value(value, "the program's return value")
        except SnapshotError as exc:
            self._fail_text(f"the program returned a value that cannot be stored: {exc}")
        self._commit(status=FINISHED, result=encoded, snapshot=None, request=None, wake_at=None, waiting_for=None,
                     release=True)
        self.on_event(self._execution.id, "finished", json.dumps(to_json(value)))
        raise _Stop

    def _fail(self, exc: BaseException) -> None:
        self._commit(status=FAILED, error=_error_text(exc), error_value=_dump_or_none(exc), snapshot=None,
                     request=None, wake_at=None, waiting_for=None, release=True)
        self.on_event(self._execution.id, "failed", f"{type(exc).__name__}: {_text(exc)}")
        raise _Stop

    def _fail_text(self, text: str) -> None:
        self._commit(status=FAILED, error=text, wake_at=None, waiting_for=None, release=True)
        self.on_event(self._execution.id, "failed", text)
        raise _Stop

    def _cancel(self, gen: types.GeneratorType | None) -> None:
        ex = self._execution
        note = "cancelled"
        if gen is None and ex.snapshot is not None:
            try:
                seals.verify(ex.mac, "execution", _execution_parts(ex.id, ex.function, ex.args, ex.snapshot, ex.request,
                                                                   ex.steps_started, _current_step_mac(self.store, ex)),
                             f"execution {ex.id}")
                load_function(ex.function)
                gen = restore(ex.snapshot)
            except (ProgramError, SnapshotError) as exc:
                note = f"cancelled (its finally blocks could not run: {type(exc).__name__}: {_text(exc)})"
        if gen is not None:
            try:
                gen.close()  # runs the program's finally blocks and __exit__ methods
            except Exception as exc:
                note = f"cancelled; closing it raised {type(exc).__name__}: {_text(exc)}"
        self._commit(status=CANCELLED, error=note, snapshot=None, request=None, wake_at=None, waiting_for=None,
                     release=True)
        self.on_event(ex.id, "cancelled", note)
        raise _Stop

    # ------------------------------------------------------------------ the one place that writes

    def _commit(self, *, release: bool = False, new_step: StepRecord | None = None,
                step_update: tuple[int, dict[str, Any]] | None = None, **fields: Any) -> Execution:
        """Write one transition (compare-and-swap on the version we hold). What a worker acts on later —
        the snapshot, the request, the steps asked for and the step the request names — is sealed
        (``values.seals``) in the same write."""
        ex = self._execution
        if fields.get("snapshot") is not None and ex.error is not None:
            fields.setdefault("error", None)  # resumed again: a note left by _set_aside is out of date
        step = self._step
        if new_step is not None:
            new_step.mac = seals.seal("step", _step_parts(new_step))
            step = new_step
        elif step_update is not None:
            index, updates = step_update
            assert step is not None and step.index == index, "a step update for a step the runner does not hold"
            step = dataclasses.replace(step, **updates)
            updates["mac"] = step.mac = seals.seal("step", _step_parts(step))
        request = fields.get("request", ex.request)
        if not (isinstance(request, dict) and request.get("kind") == "step"):
            step = None
        if new_step is not None or step_update is not None or fields.keys() & _SEALED:
            fields["mac"] = seals.seal("execution", _execution_parts(
                ex.id, ex.function, ex.args, fields.get("snapshot", ex.snapshot), request,
                fields.get("steps_started", ex.steps_started), step.mac if step is not None else None))
        change = Change(ex.id, ex.version, owner=self.owner, fields=fields, new_step=new_step,
                        step_update=step_update, consume_signal=self._consume, release=release,
                        lease_until=self.clock.now() + self.lease)
        self._execution = self.store.commit(change, now=self.clock.now())
        self._step = step
        self._consume = None
        if self._execution.cancel_requested and not release and self._execution.status not in TERMINAL:
            self._cancel(None)
        return self._execution

    def _give_up(self, record: Callable[[str], None], problem: str) -> None:
        """After an exception nothing expected: record ``problem`` with ``record`` (set aside, or failed)."""
        ex = self._execution
        try:
            record(problem)
        except _Stop:
            pass
        except Exception as again:  # the store is gone too: the lease lapses and a later claim retries
            self.on_event(ex.id, "error", f"could not record it either: {type(again).__name__}: {_text(again)}")


_SEALED = frozenset({"snapshot", "request", "steps_started"})


def _execution_parts(execution_id: str, function: str, args: Any, snapshot: bytes | None, request: Any,
                     steps_started: int, step_mac: bytes | None) -> list[Any]:
    """What an execution's seal covers: its program and arguments, and its place in its run (snapshot,
    the request it is suspended on, the steps it asked for, the state of the step it waits on)."""
    return [execution_id, function, seals.canonical(args), snapshot, seals.canonical(request), steps_started,
            step_mac]


def _step_parts(step: StepRecord) -> list[Any]:
    """What a step's seal covers: the call a worker makes, and what it recorded of it."""
    return [step.execution_id, step.index, step.function, step.call, seals.canonical(step.policy), step.status,
            step.attempts, step.result, step.error_value]


def _current_step_mac(store: Store, ex: Execution) -> bytes | None:
    request = ex.request if isinstance(ex.request, dict) else {}
    if request.get("kind") != "step" or type(request.get("index")) is not int:
        return None
    step = store.step(ex.id, request["index"])
    return step.mac if step is not None else None


def _call_text(args: list[Any], kwargs: dict[str, Any] | None) -> str:
    """``1, "a", key=2``: a call's arguments as JSON, for messages."""
    return ", ".join([*(json.dumps(a) for a in args), *(f"{k}={json.dumps(v)}" for k, v in (kwargs or {}).items())])


def _text(exc: BaseException) -> str:
    """``str(exc)``, which a user's exception may fail to give."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a user exception's __str__ may raise anything
        return f"<{type(exc).__qualname__} whose message cannot be shown>"


def _step_call(ref: str, gen: types.GeneratorType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The stored form of a step's arguments; one that cannot be stored is named as the program wrote it:
    "cannot store argument 2 of step flows:charge (yielded at line 12) → .conn: value of type ..."."""
    try:
        return dump_value((list(args), dict(kwargs)), "the arguments")
    except UnserializableValueError as exc:
        path, name = exc.path, exc.type_name
        prefix = f"cannot snapshot {' → '.join(path)}: value of type {name!r} "
        if len(path) < 3 or path[1] not in ("[0]", "[1]") or not str(exc).startswith(prefix):
            raise
        which = f"argument {int(path[2][1:-1]) + 1}" if path[1] == "[0]" else f"argument {path[2][1:-1]}"
        where = suspended_at(gen)
        yielded = f" (yielded at line {where[1]} of {where[0]})" if where and where[1] else ""
        inside = "".join(f" → {step}" for step in path[3:])
        raise UnserializableValueError(
            f"cannot store {which} of step {ref}{yielded}{inside}: value of type {name!r} {str(exc)[len(prefix):]}",
            path=[f"{which} of step {ref}", *path[3:]], type_name=name) from None
