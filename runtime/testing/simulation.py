"""A durable program run in process against an in-memory store and a virtual clock, with scripted signals,
fake steps and injected step failures: the same runner code a worker runs, deterministic for a seed."""
from __future__ import annotations

import copy
import random
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import SnapshotError
from ..programs import capability
from ..programs import requests as rq
from ..programs.clock import VirtualClock
from ..programs.combinators import All
from ..programs.runner import Runner
from ..programs.store.base import FAILED, FINISHED, TERMINAL, WAITING, Change, Execution
from ..programs.store.memory import MemoryStore
from ..programs.transition import RunStep, StepOutcome, Transition, drive
from ..values import load_value
from . import script
from .errors import SimulationError
from .replay import same_value
from .spies import short
from .upgrade import Upgrade

START = 1_700_000_000.0
"""The virtual time every simulation starts at (seconds since the epoch): runs are reproducible."""


class SimulationWarning(UserWarning):
    """A simulation ran, but its script had a signal the program never waited for."""


@dataclass
class Outcome:
    """How a simulated run ended: ``status`` is "finished", "failed", "cancelled", "blocked" (a deploy's code
    could not resume it) or "set aside" (it could not be resumed at all: its module is missing, ...)."""

    status: str
    value: Any = None
    error: BaseException | None = None  # the exception the program ended with (rebuilt from the store)
    error_text: str | None = None       # the store's text of it (a traceback), or why it was blocked
    execution_id: str = ""
    requests: int = 0                   # requests the program made (resumptions, in all)
    elapsed: float = 0.0                # virtual seconds from start to end

    def result(self) -> Any:
        """The program's return value; raises the exception it failed with (AssertionError for any other end)."""
        if self.status == FINISHED:
            return self.value
        if self.status == FAILED and self.error is not None:
            raise self.error
        raise AssertionError(f"the program did not finish: it is {self.status}: {self.error_text}")

    def describe(self) -> str:
        if self.status == FINISHED:
            return f"returned {short(self.value)}"
        if self.status == FAILED:
            if self.error is not None:
                return f"raised {type(self.error).__name__}({', '.join(short(a) for a in self.error.args)})"
            return f"failed: {_last_line(self.error_text)}"
        return f"{self.status}: {_last_line(self.error_text)}"

    def same_as(self, other: "Outcome") -> bool:
        """The same end: status, and the same value or the same exception type and arguments."""
        if self.status != other.status:
            return False
        if self.status == FINISHED:
            return same_value(self.value, other.value)
        if self.status == FAILED and self.error is not None and other.error is not None:
            return type(self.error) is type(other.error) and same_value(self.error.args, other.error.args)
        return _last_line(self.error_text) == _last_line(other.error_text)


def _last_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[-1] if (text or "").strip() else ""


@dataclass
class World:
    """Everything a run's future depends on besides its code: the store, the time, the script's progress."""

    store: MemoryStore
    now: float
    sent: frozenset[int] = frozenset()  # the scripted signals already sent (by index)

    def fork(self) -> "World":
        return World(self.store.clone(), self.now, self.sent)


@dataclass
class Config:
    """What every run of one simulation shares: the program, the script, fakes and failures."""

    program: Callable[..., Any]
    ref: str
    args: list[Any]
    kwargs: dict[str, Any]
    signals: tuple[script.Signal, ...] = ()
    fakes: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, dict[int, Any]] = field(default_factory=dict)
    max_requests: int = 10_000
    lease: float = 30.0
    seed: int = 0


class Observer:
    """Hooks a check gets from an engine (all optional): return True from ``before_commit`` or
    ``after_commit`` to crash the worker there."""

    def before_commit(self, engine: "Engine", change: Change) -> bool:
        return False

    def after_commit(self, engine: "Engine", execution: Execution) -> bool:
        return False

    def traced(self, engine: "Engine", action: tuple[str, Any], outcome: str, value: Any) -> None:
        pass


class Crash(BaseException):
    """Internal: the simulated worker dies here (a BaseException, so that it leaves ``transition.drive``
    instead of being handed to the transition as a store error)."""


class _Limit(BaseException):
    """Internal: the program went past its request limit (a BaseException, so that it leaves the runner's
    transition, which records the program's own exceptions, and becomes a SimulationError here)."""


class Engine:
    """Runs one execution in a ``World`` to its end: claims it, advances it with the runner's own transition
    code (stepping through its commits and step calls), moves the virtual clock and sends scripted signals
    when nothing is runnable. A crash drops the worker (and its in-memory program, with its event loop) and
    a new one claims the run from its last commit."""

    def __init__(self, config: Config, world: World, observer: Observer | None = None) -> None:
        self.config = config
        self.world = world
        self.store = world.store
        self.clock = VirtualClock(world.now)
        self.observer = observer or Observer()
        self.events: list[tuple[str, str]] = []
        self.workers = 0
        self.requests = 0
        self.waited: set[str] = set()
        self.upgrade: Upgrade | None = None
        self._deploying = False
        self.runner = self._new_worker()

    def _new_worker(self) -> Runner:
        self.workers += 1
        runner = Runner(self.store, clock=self.clock, owner=f"sim-worker-{self.workers}", lease=self.config.lease,
                        on_event=lambda _id, kind, text: self.events.append((kind, text)), migrations=())
        runner.tracer = self._trace
        return runner

    def start(self) -> str:
        rng = random.Random(self.config.seed)
        execution_id = f"sim{rng.getrandbits(40):010x}"
        try:
            self.runner.start(self.config.ref, self.config.args, self.config.kwargs, execution_id=execution_id)
        except Exception as exc:
            raise SimulationError(f"cannot start {self.config.ref}: {exc}") from None
        return execution_id

    def _trace(self, execution_id: str, action: tuple[str, Any], outcome: str, value: Any) -> None:
        self.requests += 1
        if outcome == "yield":
            self._check_limit()
            if isinstance(value, rq.Wait):
                self.waited.add(value.signal)
            elif isinstance(value, All):
                self.waited.update(p.request.signal for p in value.parts if isinstance(p.request, rq.Wait))
        self.observer.traced(self, action, outcome, value)

    def _check_limit(self) -> None:
        if self.requests > self.config.max_requests:
            raise _Limit(
                f"{self.config.ref} made more than {self.config.max_requests} requests without finishing (a loop "
                f"that never ends?); the last events: {'; '.join(t for _, t in self.events[-3:])}. Pass a larger "
                "max_requests= if the program is meant to run this long")

    # ------------------------------------------------------------------ the loop

    def run(self, execution_id: str) -> Outcome:
        """Run until the execution ends (or is blocked or set aside); returns how it ended."""
        try:
            return self._run(execution_id)
        finally:
            self.runner.close()  # the event loop of an async program

    def _run(self, execution_id: str) -> Outcome:
        begun = self.clock.now()
        while True:
            ex = self.store.get(execution_id)
            if ex.status in TERMINAL:
                return self._outcome(ex, begun)
            if ex.blocked_on or ex.held_until is not None:
                return self._outcome(ex, begun, "blocked" if ex.blocked_on else "set aside")
            self._send_due_signals(execution_id)
            claimed = self.store.claim(self.runner.owner, now=self.clock.now(), lease=self.config.lease,
                                       execution_id=execution_id, skip_keys=capability.keys())
            if claimed is not None:
                try:
                    self._advance(claimed)
                except _Limit as limit:
                    raise SimulationError(str(limit)) from None
                except Crash:
                    self.crash(execution_id)
                    if self._deploying:
                        self._deploy()
                continue
            self._idle(ex)

    def _advance(self, execution: Execution) -> None:
        """One transition, driven here: each commit offered to the observer first (and after). A crash leaves
        ``drive``, which closes the transition: it detaches the program (its finally blocks do not run)."""
        drive(Transition(self.runner, execution).run(), self._commit, self._run_step, self._pick)

    def _pick(self, steps: list[RunStep]) -> RunStep:
        """The step of a composite request (``runtime.gather``/``race``) to run next, of those running: drawn
        with a ``random.Random`` seeded with the simulation's seed and the steps to choose from (their indices
        and attempts, which never come together twice in one run). The choice depends on nothing else, so the
        same seed gives the same order, and a worker that resumes a crashed run from its last commit (a fork of
        the world, with a new engine) makes the same choices the fault-free run made from there."""
        ordered = sorted(steps, key=lambda s: s.record.index)
        among = ",".join(f"{s.record.index}.{s.record.attempts}" for s in ordered)
        return random.Random(f"{self.config.seed}/{among}").choice(ordered)

    def _commit(self, change: Change) -> Execution:
        if self.observer.before_commit(self, change):
            raise Crash
        written = self.store.commit(change, now=self.clock.now())
        if self.observer.after_commit(self, written):
            raise Crash
        if self.upgrade is not None and self.upgrade.due(written, self.requests):
            self._deploying = True
            raise Crash
        return written

    def _deploy(self) -> None:
        assert self.upgrade is not None
        self._deploying = False
        self.upgrade.apply(self.config.ref.partition(":")[0])
        self.events.append(("deploy", f"deployed the new version of {self.config.ref.partition(':')[0]}"))

    def crash(self, execution_id: str) -> None:
        """The worker dies: its lease is given up at once (a takeover without waiting for it to lapse, so the
        clock does not move) and a new worker, with nothing in memory, goes on from the last commit."""
        self.events.append(("crash", f"worker {self.runner.owner} crashed"))
        self.store.release(self.runner.owner, [execution_id])
        self.runner.close()
        self.runner = self._new_worker()

    def _run_step(self, instruction: RunStep) -> StepOutcome:
        ref = instruction.record.function
        attempt = instruction.record.attempts + 1
        planned = self.config.failures.get(ref, {})
        if attempt in planned:
            return StepOutcome(error=script.injected(ref, attempt, planned[attempt]))  # type: ignore[arg-type]
        fake = self.config.fakes.get(ref)
        if fake is not None:
            instruction = RunStep(instruction.record, fake, instruction.args, instruction.kwargs)
        return instruction.call(self.runner.event_loop)

    # ------------------------------------------------------------------ time and signals

    def _send_due_signals(self, execution_id: str) -> None:
        for index, signal in enumerate(self.config.signals):
            if index not in self.world.sent and signal.at is not None and START + signal.at <= self.clock.now():
                self._send(execution_id, index, signal)

    def _send(self, execution_id: str, index: int, signal: script.Signal) -> None:
        self.store.send_signal(execution_id, signal.name, copy.deepcopy(signal.payload), now=self.clock.now())
        self.world.sent = self.world.sent | {index}
        self.events.append(("sent", f"signal {signal.name!r} sent"))

    def _idle(self, ex: Execution) -> None:
        """Nothing to run now: send the signal it waits for, or move the clock to the next thing due."""
        if ex.status == WAITING and ex.waiting_for:
            for index, signal in enumerate(self.config.signals):
                if index not in self.world.sent and signal.at is None and signal.name == ex.waiting_for:
                    self._send(ex.id, index, signal)
                    return
        due = [t for t in (ex.wake_at, ex.lease_until if ex.lease_owner else None) if t is not None]
        due += [START + s.at for i, s in enumerate(self.config.signals) if i not in self.world.sent
                and s.at is not None]
        later = [t for t in due if t > self.clock.now()]
        if not later:
            where = f" at {ex.point}" if ex.point else ""
            raise SimulationError(
                f"{self.config.ref} waits for signal {ex.waiting_for!r}{where} and the script sends no more "
                f"{ex.waiting_for!r} signals: add one to signals= (for example signals={{{ex.waiting_for!r}: ...}})"
                if ex.status == WAITING else f"{self.config.ref} is {ex.status} with nothing due: it cannot go on")
        self.clock.advance(min(later) - self.clock.now())
        self.world.now = self.clock.now()

    # ------------------------------------------------------------------ endings

    def _outcome(self, ex: Execution, begun: float, status: str | None = None) -> Outcome:
        self.world.now = self.clock.now()
        value, error = None, None
        if ex.status == FINISHED and ex.result is not None:
            value = load_value(ex.result)
        if ex.status == FAILED and ex.error_value is not None:
            try:
                loaded = load_value(ex.error_value)
                error = loaded if isinstance(loaded, BaseException) else None
            except SnapshotError:
                error = None
        return Outcome(status or ex.status, value, error, ex.error, ex.id, self.requests,
                       self.clock.now() - begun)


def config_for(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], *, steps: Any = None,
               failures: Any = None, signals: Any = None, seed: int = 0, max_requests: int = 10_000) -> Config:
    """Check what a simulation was given and make its Config (SimulationError for anything wrong)."""
    ref = program_ref(fn)
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
        raise SimulationError(f"max_requests must be a positive int, not {max_requests!r}")
    return Config(fn, ref, list(args), dict(kwargs), script.signals_of(signals), script.fakes_of(steps, fn),
                  script.failures_of(failures, fn), max_requests, seed=seed)


def program_ref(fn: Any) -> str:
    """``module:qualname`` of a durable program function (SimulationError when it is not one)."""
    if getattr(fn, "__durable__", None) is None:
        raise SimulationError(f"{getattr(fn, '__qualname__', fn)!r} is not a durable program: mark it @durable (a "
                              "generator function that yields step(), sleep(), wait() and checkpoint(), or an "
                              "async def that awaits them)")
    if not isinstance(fn, types.FunctionType) or "<locals>" in fn.__qualname__:
        raise SimulationError(f"{fn.__qualname__!r} must be defined at the top level of a module: a worker "
                              "finds a program again by its module and name")
    return f"{fn.__module__}:{fn.__qualname__}"


class Simulation:
    """Runs a durable program in process, deterministically: an in-memory store, a virtual clock (sleeps,
    timeouts and retry backoffs pass at once), scripted signals, fake steps and injected step failures.

    ``steps={fn or "name" or "module:qualname": fake}`` runs ``fake`` instead of that step function;
    ``failures={step: n | [attempts] | {attempt: exception}}`` makes those attempts raise (``InjectedFailure``
    unless an exception is given), to exercise retry policies; ``signals=`` scripts signals (see
    ``runtime.testing.Signal``). ``seed`` fixes the run's id, the order the steps of a ``gather``/``race``
    run in (one after another, drawn from the seed; ``Runner`` takes index order) and what checks sample: the
    same seed gives the same run. ``max_requests`` bounds a program that never ends. ``upgrade=Upgrade(source, at=...)``
    deploys a new version of the program's module in the middle of the run (put back when the run ends)."""

    def __init__(self, *, steps: Mapping[Any, Callable[..., Any]] | None = None,
                 failures: Mapping[Any, Any] | None = None, signals: Any = None, seed: int = 0,
                 max_requests: int = 10_000, upgrade: Upgrade | None = None) -> None:
        self.steps, self.failures, self.signals = steps, failures, signals
        self.seed, self.max_requests, self.upgrade = seed, max_requests, upgrade
        self.engine: Engine | None = None

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Outcome:
        """Start ``fn(*args, **kwargs)`` (JSON arguments, as a store keeps them) and run it to its end."""
        config = config_for(fn, args, kwargs, steps=self.steps, failures=self.failures, signals=self.signals,
                            seed=self.seed, max_requests=self.max_requests)
        engine = self.engine = Engine(config, World(MemoryStore(), START))
        engine.upgrade = self.upgrade
        try:
            outcome = engine.run(engine.start())
        finally:
            if self.upgrade is not None:
                self.upgrade.undo()
        warn_unused_signals(config, engine.waited)
        return outcome

    @property
    def events(self) -> list[tuple[str, str]]:
        """What the runner reported as the last run went (kind, text): steps, sleeps, signals, crashes."""
        return self.engine.events if self.engine is not None else []

    @property
    def store(self) -> MemoryStore | None:
        """The last run's store (its execution, steps and signals can be read back)."""
        return self.engine.store if self.engine is not None else None


def warn_unused_signals(config: Config, waited: set[str]) -> None:
    names = sorted({s.name for s in config.signals} - waited)
    for name in names:
        warnings.warn(f"signals=: the script has signal {name!r}, and {config.ref} never waited for it",
                      SimulationWarning, stacklevel=3)

