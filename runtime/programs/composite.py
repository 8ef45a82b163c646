"""The runner's side of ``runtime.gather``/``race``: commit an ``All`` request, run its steps at once, and answer
its parts one at a time, each outcome committed before it is delivered.

The stored request is ``{"kind": "all", "parts": [...]}``, one entry per parked part, keyed by its place in the
combinators (``key``): ``{"kind": "step", "index", "function"[, "retry_at"]}``, ``{"kind": "sleep", "wake_at"}``,
``{"kind": "wait", "signal", "timeout", "timeout_at"}`` or ``{"kind": "checkpoint"}``. A step's outcome is committed
(its step row), then delivered; the program's next commit is its snapshot after the delivery. So at most one
outcome is committed and not yet delivered when a worker dies, and a resumed run delivers it first: the order
the outcomes arrived in is the order every run of the program sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator

from ..errors import SnapshotError
from ..values import dump_value, load_value
from . import program_names
from . import requests as rq
from .combinators import All, Delivery
from .loading import import_program_module
from .records import step_call, step_indices
from .store.base import PENDING, SLEEPING, WAITING, StepRecord

if TYPE_CHECKING:
    from .transition import RunStep, StepOutcome, Transition

Flow = Generator[Any, Any, Any]

SIGNAL_POLL = 1.0
"""Seconds between two looks for a signal while the steps of a composite request run."""

MAX_PARTS = 10_000
"""The most parts a stored composite request may name (a larger one is a damaged row)."""


@dataclass
class NextOutcome:
    """Make sure ``steps`` run (start those not started yet) and wait for the next outcome among them, at most
    until ``deadline`` (clock time; None: no limit). The transition gets ``(RunStep, StepOutcome)``, or None when
    the deadline came first."""

    steps: list[RunStep]
    deadline: float | None


def spec_problem(request: dict[str, Any]) -> str | None:
    """What is wrong with a stored composite request (a store row is data from outside), or None."""
    parts = request.get("parts")
    if not isinstance(parts, list) or not 0 < len(parts) <= MAX_PARTS:
        return "its composite request has no list of parts"
    keys = set()
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("key"), list) or not part["key"] or \
                not all(type(i) is int and i >= 0 for i in part["key"]):
            return "a part of its composite request has no key"
        keys.add(tuple(part["key"]))
        kind = part.get("kind")
        times = {"step": ("retry_at",), "sleep": ("wake_at",), "wait": ("timeout_at", "timeout")}.get(kind, ())
        if kind not in ("step", "sleep", "wait", "checkpoint") or \
                kind == "step" and (type(part.get("index")) is not int or not isinstance(part.get("function"), str)) \
                or kind == "wait" and not isinstance(part.get("signal"), str) \
                or kind == "sleep" and not _number(part.get("wake_at")) \
                or any(part.get(name) is not None and not _number(part[name]) for name in times):
            return f"a part of its composite request is not one ({str(part)[:80]})"
    if len(keys) != len(parts):
        return "its composite request names a part twice"
    return None


def _number(value: Any) -> bool:
    return type(value) in (int, float)


_TIME_OF = {"sleep": "wake_at", "wait": "timeout_at", "step": "retry_at"}
"""The field of a part of each kind that holds its next time (a checkpoint has none)."""


class CompositeFlow:
    """The ``All`` handling of ``Transition`` (a mixin: it uses the transition's commit, snapshot and signals)."""

    def _all(self: Transition, gen: Any, request: All) -> Flow:
        ex = self._execution
        now = self.clock.now()
        previous = {tuple(p["key"]): p for p in (ex.request or {}).get("parts", ())} \
            if isinstance(ex.request, dict) and ex.request.get("kind") == "all" else {}
        parts: list[dict[str, Any]] = []
        new_steps: list[StepRecord] = []
        index = ex.steps_started
        for part in request.parts:
            key = list(part.key)
            if part.request is None:
                if part.key not in previous:
                    raise RuntimeError(f"a composite request names part {key} as pending, but it never was")
                parts.append(previous[part.key])
                continue
            made = part.request
            if isinstance(made, rq.Step):
                try:
                    ref = program_names.step_ref(made.fn)
                    call = step_call(ref, gen, made.args, made.kwargs)
                except (TypeError, SnapshotError) as exc:
                    return "throw", exc  # a mistake in the program: raised where it awaits the combinator
                new_steps.append(StepRecord(ex.id, index, ref, call, made.policy.to_json(), "pending", started_at=now))
                parts.append({"key": key, "kind": "step", "index": index, "function": ref})
                index += 1
            elif isinstance(made, rq.Sleep):
                parts.append({"key": key, "kind": "sleep", "wake_at": made.wake_at(now)})
            elif isinstance(made, rq.Wait):
                parts.append({"key": key, "kind": "wait", "signal": made.signal, "timeout": made.timeout,
                              "timeout_at": None if made.timeout is None else now + made.timeout})
            elif isinstance(made, rq.Checkpoint):
                parts.append({"key": key, "kind": "checkpoint"})
            else:
                return "throw", TypeError(f"runtime.gather/race cannot combine {type(made).__name__} requests")
        if len(parts) > MAX_PARTS:
            return "throw", ValueError(f"runtime.gather/race awaits {len(parts)} parts at once (nested), more than "
                                       f"{MAX_PARTS}")
        spec = {"kind": "all", "parts": parts}
        data = yield from self._snapshot(gen)
        yield from self._commit(snapshot=data, request=spec, status=PENDING, wake_at=None, waiting_for=None,
                                steps_started=index, new_steps=new_steps)
        return (yield from self._answer(spec))

    def _abandoned(self: Transition, request: Any) -> list[tuple[int, dict[str, Any]]]:
        """The step updates that record the composite's pending steps ``request`` (the next one) no longer names:
        a race lost, a sibling failed, the program moved on. A step still running finishes; its outcome is
        dropped."""
        ex = self._execution
        if not (isinstance(ex.request, dict) and ex.request.get("kind") == "all"):
            return []
        kept = set(step_indices(request))
        dropped = [index for index in step_indices(ex.request) if index not in kept
                   and getattr(self._steps.get(index), "status", None) == "pending"]
        for index in dropped:
            self._running.pop(index, None)
            self.on_event(ex.id, "step", f"step {index} abandoned: the program went on without its outcome")
        return [(index, {"status": "abandoned", "finished_at": self.clock.now()}) for index in dropped]

    def _answer(self: Transition, spec: dict[str, Any]) -> Flow:
        """Run the composite's steps and wait for its timers and its signal until one part has an outcome: the
        ``("send", Delivery)`` for the program; or suspend the run (released) when only time or a signal can
        bring one."""
        while True:
            delivery = yield from self._ready_part(spec)
            if delivery is not None:
                return "send", delivery
            if self.runner.stop.is_set() and not self._running:  # stopping: start nothing more, release the run
                yield from self._release()
            now = self.clock.now()
            for part in spec["parts"]:
                if part["kind"] == "step" and part["index"] not in self._running and \
                        (part.get("retry_at") or 0) <= now and self._steps[part["index"]].status == "pending":
                    self._running[part["index"]] = yield from self._start_part(self._steps[part["index"]])
            if not self._running:
                yield from self._park(spec)
            outcome = yield NextOutcome(list(self._running.values()), self._deadline(spec))
            if outcome is None:
                continue
            run, result = outcome
            record = run.record
            if self._running.get(record.index) is not run:
                continue  # (abandoned meanwhile)
            del self._running[record.index]
            delivery, spec = yield from self._part_step_done(spec, record, result)
            if delivery is not None:
                return "send", delivery

    def _ready_part(self: Transition, spec: dict[str, Any]) -> Flow:
        """The outcome to deliver now, if a part has one: a step recorded as ended (a resumed run), a checkpoint,
        a sleep whose time came, a signal, a wait whose time is up (in that order)."""
        parts = spec["parts"]
        ended = [p for p in parts if p["kind"] == "step" and self._steps[p["index"]].status in ("done", "failed")]
        if ended:
            part = min(ended, key=lambda p: (self._steps[p["index"]].finished_at or 0.0, p["index"]))
            _, outcome = self._step_outcome_of(self._steps[part["index"]])
            return outcome(tuple(part["key"]))
        now = self.clock.now()
        for part in parts:
            if part["kind"] == "checkpoint":
                return Delivery(tuple(part["key"]))
        due = [p for p in parts if p["kind"] == "sleep" and p["wake_at"] <= now]
        if due:
            return Delivery(tuple(min(due, key=lambda p: (p["wake_at"], p["key"]))["key"]))
        waits = [p for p in parts if p["kind"] == "wait"]
        if waits:
            found = None  # the first signal sent of those the parts wait for
            for name in dict.fromkeys(p["signal"] for p in waits):
                signal = yield from self._next_signal(name)
                if signal is not None and (found is None or signal.id < found.id):
                    found = signal
            if found is not None:
                self._consume = found.id  # consumed by the next commit, when the program has moved on
                self.on_event(self._execution.id, "signal", f"signal {found.name!r} received")
                part = next(p for p in waits if p["signal"] == found.name)  # (the first by key, for a name twice)
                return Delivery(tuple(part["key"]), found.payload)
            for part in waits:
                if part.get("timeout_at") is not None and part["timeout_at"] <= now:
                    self.on_event(self._execution.id, "timeout", f"no signal {part['signal']!r} in time")
                    return Delivery(tuple(part["key"]), error=rq.SignalTimeout(part["signal"], part.get("timeout")))
        return None

    def _step_outcome_of(self: Transition, record: StepRecord) -> tuple[str, Any]:
        if record.status == "done":
            value = load_value(record.result) if record.result is not None else None
            return "done", lambda key: Delivery(key, value)
        error = self._recorded_error(record)
        return "failed", lambda key: Delivery(key, error=error)

    def _start_part(self: Transition, record: StepRecord) -> Flow:
        from .transition import RunStep
        try:
            fn = program_names.step_function(record.function, import_program_module)
        except program_names.NameError_ as exc:
            yield from self._set_aside(str(exc))
        args, kwargs = load_value(record.call)
        self.on_event(record.execution_id, "step", f"step {record.index} {record.function} "
                                                   f"attempt {record.attempts + 1}")
        return RunStep(record, fn, tuple(args), kwargs)

    def _part_step_done(self: Transition, spec: dict[str, Any], record: StepRecord, outcome: StepOutcome) -> Flow:
        """Commit what a step of the composite did: ``(Delivery or None, spec)`` (None: it runs again later, at
        the ``retry_at`` the new spec gives its part)."""
        attempt = record.attempts + 1
        key = next(tuple(p["key"]) for p in spec["parts"] if p["kind"] == "step" and p["index"] == record.index)
        error = outcome.error
        if error is None:
            try:
                encoded = dump_value(outcome.value, f"the result of step {record.function}")
            except SnapshotError as exc:
                error, final = exc, True
            else:
                yield from self._commit(step_update=(record.index, {
                    "status": "done", "attempts": attempt, "result": encoded, "finished_at": self.clock.now()}))
                return Delivery(key, outcome.value), spec
        else:
            final = False
        update, retry_in, thrown, event = self._failure(record, attempt, error, final)
        if retry_in is not None:
            retry_at = self.clock.now() + retry_in
            spec = {"kind": "all", "parts": [{**p, "retry_at": retry_at} if p["kind"] == "step" and
                                             p["index"] == record.index else p for p in spec["parts"]]}
            yield from self._commit(step_update=(record.index, update), request=spec)
            self.on_event(record.execution_id, *event)
            return None, spec
        yield from self._commit(step_update=(record.index, update))
        self.on_event(record.execution_id, *event)
        return Delivery(key, error=thrown), spec

    def _times(self: Transition, spec: dict[str, Any]) -> list[float]:
        """When a part may next have an outcome: a sleep's end, a wait's timeout, the retry of a step not running."""
        times = []
        for part in spec["parts"]:
            time = part.get(_TIME_OF.get(part["kind"], ""))
            if time is not None and not (part["kind"] == "step" and part["index"] in self._running):
                times.append(time)
        return times

    def _deadline(self: Transition, spec: dict[str, Any]) -> float | None:
        times = self._times(spec)
        if any(p["kind"] == "wait" for p in spec["parts"]):
            times.append(self.clock.now() + SIGNAL_POLL)
        return min(times) if times else None

    def _park(self: Transition, spec: dict[str, Any]) -> Flow:
        """Nothing runs and nothing is ready: release the run until its earliest time, or its signal."""
        times = self._times(spec)  # (no step runs now)
        names = list(dict.fromkeys(p["signal"] for p in spec["parts"] if p["kind"] == "wait"))
        wake_at = min(times) if times else None
        yield from self._commit(status=WAITING if names else SLEEPING, wake_at=wake_at,
                                waiting_for=names[0] if len(names) == 1 else None,
                                waits=names if len(names) > 1 else None, release=True)
        what = ("signal " + " or ".join(map(repr, names))) if names else "its time"
        self.on_event(self._execution.id, "wait" if names else "sleep",
                      f"runtime.gather/race waiting for {what}"
                      + (f" (next time in {wake_at - self.clock.now():g} s)" if wake_at is not None else ""))
        from .transition import _Stop
        raise _Stop
