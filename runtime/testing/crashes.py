"""``assert_survives_crashes``: run a program once without faults, then crash its worker at every commit (or
a sample) and check that every run ends the same, runs no effect twice, and restores in a fresh interpreter."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..programs.store.base import TERMINAL, Change, Execution
from ..programs.store.memory import MemoryStore
from . import findings as found
from . import replay, spies
from .errors import SimulationError, SurvivalError
from .simulation import START, Config, Engine, Observer, Outcome, World, config_for, warn_unused_signals

DEFAULTS: dict[str, Any] = {"points": 24, "fresh": 1}
"""What ``points=None`` and ``fresh=None`` mean: the pytest option ``--durable-crash-all`` sets ``points``
to "all"."""


@dataclass
class CommitMark:
    """One commit of the fault-free run: the world after it, and what a crash next to it is called."""

    index: int
    kind: str          # "request", "step result", "step failure", "other"
    request_no: int    # requests the program had made when it was written
    label: str | None  # the point the run is suspended at, as its label
    line: int | None
    function: str | None
    released: bool     # the transition ended with it (a sleep, a wait, a retry, an end)
    terminal: bool
    world: World
    counts_before: dict[int, int]
    counts_after: dict[int, int]
    snapshot: bytes | None

    def where(self) -> str:
        at = f"`{self.label}`" if self.label else "its start"
        return at + (f" (line {self.line})" if self.line else "")


@dataclass(frozen=True)
class CrashPoint:
    """Where a worker dies: just ``before`` or just after the commit ``mark``."""

    mark: CommitMark
    before: bool

    def describe(self) -> str:
        m = self.mark
        if not self.before:
            if m.kind == "step result":
                return f"right after the result of step {m.function} (request {m.request_no}) was committed, " \
                       "before the program went on"
            then = "before the step ran" if m.function else "before the program went on"
            return f"right after request {m.request_no} at {m.where()} was committed, {then}"
        if m.kind == "step result":
            return f"after step {m.function} (request {m.request_no}, at {m.where()}) returned, before its result " \
                   "was committed"
        if m.kind == "step failure":
            return f"after an attempt of step {m.function} (request {m.request_no}) failed, before the failure was " \
                   "committed"
        if m.kind == "request":
            return f"at request {m.request_no}, {m.where()}, before it was committed"
        if m.terminal:
            return "when the program ended, before its end was committed"
        return f"before commit {m.index + 1} (at {m.where()})"


def _counts(watched: Sequence[Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for number, obj in enumerate(watched):
        calls = spies.outside_calls(obj)
        counts[number] = calls if isinstance(calls, int) else len(calls)
    return counts


class _Recorder(Observer):
    """Watches the fault-free run: marks each commit, keeps the world after it and the run's transcript."""

    def __init__(self, watched: Sequence[Any]) -> None:
        self.watched = watched
        self.marks: list[CommitMark] = []
        self.transcript: list[tuple[tuple[str, Any], str, Any]] = []
        self._change: Change | None = None
        self._before: dict[int, int] = {}

    def before_commit(self, engine: Engine, change: Change) -> bool:
        self._change = change
        self._before = _counts(self.watched)
        return False

    def after_commit(self, engine: Engine, ex: Execution) -> bool:
        change = self._change
        assert change is not None
        engine.world.now = engine.clock.now()
        frames = ex.frames or []
        innermost = frames[-1] if frames and isinstance(frames[-1], list) else []
        kind = "other"
        if "snapshot" in change.fields and isinstance(change.fields.get("request"), dict):
            kind = "request"
        elif change.step_update is not None:
            status = change.step_update[1].get("status")
            kind = "step result" if status == "done" else "step failure"
        request = ex.request if isinstance(ex.request, dict) else {}
        mark = CommitMark(len(self.marks), kind, len(self.transcript), ex.point,
                          innermost[5] if len(innermost) > 5 else None, request.get("function"),
                          change.release, ex.status in TERMINAL, engine.world.fork(),
                          self._before, _counts(self.watched), ex.snapshot)
        self.marks.append(mark)
        return False

    def traced(self, engine: Engine, action: tuple[str, Any], outcome: str, value: Any) -> None:
        self.transcript.append((action, outcome, value))


@dataclass
class Report:
    """What ``assert_survives_crashes`` checked (returned when every run survived)."""

    outcome: Outcome
    commits: int
    crash_points: int                 # crash points tried in process
    possible_points: int              # crash points there are
    fresh_points: int                 # of them, restored and replayed in a fresh interpreter

    def summary(self) -> str:
        return (f"{self.outcome.describe()}; {self.commits} commits; crashed at {self.crash_points} of "
                f"{self.possible_points} points, {self.fresh_points} replayed in a fresh interpreter")


def crash_points(marks: Sequence[CommitMark]) -> list[CrashPoint]:
    """Every distinct crash: before each commit, and after each commit that the transition goes on from."""
    points: list[CrashPoint] = []
    for mark in marks:
        points.append(CrashPoint(mark, before=True))
        if not mark.released and not mark.terminal:
            points.append(CrashPoint(mark, before=False))
    return points


def sample(points: list[CrashPoint], how_many: int | str | Sequence[int] | None,
           rng: random.Random) -> list[CrashPoint]:
    """The crash points to try: all, ``how_many`` of them (sampled; the first and the last always), or those
    at the given indices (wrapped around: a Hypothesis schedule picks them without knowing how many there are)."""
    wanted = DEFAULTS["points"] if how_many is None else how_many
    if not points:
        return []
    if isinstance(wanted, (list, tuple)):
        if not wanted or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in wanted):
            raise SimulationError(f"points= as a list must hold crash point indices (ints >= 0), not {wanted!r}")
        return [points[i] for i in sorted({i % len(points) for i in wanted})]
    if wanted == "all" or (isinstance(wanted, int) and wanted >= len(points)):
        return points
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise SimulationError(f"points= must be a positive int or 'all', not {wanted!r}")
    middle = rng.sample(range(1, len(points) - 1), max(wanted - 2, 0)) if len(points) > 2 else []
    return [points[i] for i in sorted({0, len(points) - 1, *middle})][:max(wanted, 2)]


def assert_survives_crashes(fn: Callable[..., Any], /, *args: Any, steps: Mapping[Any, Any] | None = None,
                            failures: Mapping[Any, Any] | None = None, signals: Any = None,
                            spies: Sequence[Any] = (), seed: int = 0, points: int | str | Sequence[int] | None = None,
                            fresh: int | None = None, max_requests: int = 10_000, **kwargs: Any) -> Report:
    """Run ``fn(*args, **kwargs)`` once without faults, then once per crash point — before every commit (at
    each request, and between a step's return and its commit) and after every commit a worker goes on from
    — where the worker dies, its in-memory generator is dropped, and a new worker continues from the last
    commit. Raises ``SurvivalError`` (an AssertionError) with a readable report unless every run ends with the
    same result or exception as the fault-free one, every value can be snapshotted, no call a spy (or a
    fake step) saw outside a step ran again, and the runs restored in a fresh interpreter go on the same.

    ``points``: how many crash points to try (sampled with ``seed``, first and last always), "all", or a list
    of their indices;
    None means 24 (all of them under ``pytest --durable-crash-all``). ``fresh``: how many of them are also
    restored in a new interpreter and replayed to the end against the fault-free run's recorded answers
    (default 1). Other options as ``Simulation``. Returns a ``Report``."""
    config = config_for(fn, args, kwargs, steps=steps, failures=failures, signals=signals, seed=seed,
                        max_requests=max_requests)
    watched = [*spies, *config.fakes.values()]
    _counts(watched)  # a TypeError now, before anything runs, for what cannot be watched
    recorder = _Recorder(watched)
    engine = Engine(config, World(MemoryStore(), START), recorder)
    execution_id = engine.start()
    initial = engine.world.fork()
    outcome = engine.run(execution_id)
    if outcome.status in ("blocked", "set aside"):
        raise SimulationError(f"{config.ref} cannot run here: it was {outcome.status}: {outcome.error_text}")
    warn_unused_signals(config, engine.waited)
    final_counts = _counts(watched)
    problems: list[found.Finding] = []
    unserializable = found.unserializable(outcome)
    if unserializable is not None:
        raise SurvivalError(found.report(config, [unserializable], 0, 0), [unserializable])

    every = crash_points(recorder.marks)
    chosen = sample(every, points, random.Random(seed))
    for point in chosen:
        problems.extend(_check_point(config, watched, recorder, point, initial, outcome, final_counts, execution_id))
    fresh_count = DEFAULTS["fresh"] if fresh is None else fresh
    fresh_marks = _fresh_marks(recorder.marks, fresh_count)
    for mark in fresh_marks:
        problem = replay.check_in_fresh_interpreter(config, mark, recorder.transcript)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise SurvivalError(found.report(config, problems, len(chosen), len(every)), problems)
    return Report(outcome, len(recorder.marks), len(chosen), len(every), len(fresh_marks))


def _fresh_marks(marks: Sequence[CommitMark], how_many: int) -> list[CommitMark]:
    """The requests replayed in a fresh interpreter: spread evenly over the run, none at its very start (a
    replay from the first request has lost nothing the run made)."""
    if isinstance(how_many, bool) or not isinstance(how_many, int) or how_many < 0:
        raise SimulationError(f"fresh= must be an int >= 0, not {how_many!r}")
    candidates = [m for m in marks if m.kind == "request" and m.snapshot is not None and not m.terminal]
    if how_many >= len(candidates):
        return candidates
    return [candidates[len(candidates) * (j + 1) // (how_many + 1)] for j in range(how_many)]


def _check_point(config: Config, watched: Sequence[Any], recorder: _Recorder, point: CrashPoint, initial: World,
                 outcome: Outcome, final_counts: dict[int, int], execution_id: str) -> list[found.Finding]:
    """Crash at ``point`` and follow the run to its end. The run up to the crash is the fault-free run's own
    (the same program, script and world), so only what follows is run again: from the world the last commit
    left, with the calls the spies saw before the crash counted from the fault-free run."""
    mark = point.mark
    if point.before:
        start = recorder.marks[mark.index - 1].world if mark.index else initial
        prefix = mark.counts_before  # what ran before the worker died (the code up to this commit)
    else:
        start, prefix = mark.world, mark.counts_after
    world = start.fork()
    before = [list(spies.outside_calls(obj)) if spies.is_spy(obj) else None for obj in watched]
    at_start = _counts(watched)
    engine = Engine(config, world)
    engine.crash(execution_id)  # the worker that held it dies: a new one goes on from the last commit
    try:
        after = engine.run(execution_id)
    except SimulationError as exc:
        return [found.Finding("error", point.describe(), str(exc))]
    counts = {k: prefix[k] + _counts(watched)[k] - at_start[k] for k in prefix}
    problems: list[found.Finding] = []
    unserializable = found.unserializable(after)
    if unserializable is not None:
        unserializable.where = point.describe()
        problems.append(unserializable)
    elif not after.same_as(outcome):
        problems.append(found.differs(point.describe(), outcome, after, engine.events))
    for number, obj in enumerate(watched):
        if counts[number] > final_counts[number]:
            new = list(spies.outside_calls(obj))[len(before[number]):] if before[number] is not None else []
            problems.append(found.ran_twice(point.describe(), spies.name_of(obj), counts[number],
                                            final_counts[number], new))
    return problems
