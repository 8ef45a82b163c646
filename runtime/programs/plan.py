"""What a deploy does to a store's live runs: each judged against the code importable now (``durable plan``)."""
from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import compat, registry, values
from ..compat import FrameHeader, PointMismatchError
from ..errors import IncompatibleCodeError
from ..registry import START, FunctionMeta
from ..snapshot import frame_header
from . import program_names, versions
from .loading import ProgramError, import_program_module
from .store.base import PENDING, SLEEPING, WAITING, Execution, Store, call_of

OUTCOMES = ("unchanged", "upgrade", "migrate", "pinned", "stranded")
"""From best to worst: a run's outcome is the worst of its frames'. ``unchanged``: the same version resumes
it; ``upgrade``: the new code takes its frames; ``migrate``: a registered migration moves it; ``pinned``:
its function keeps runs on their version, so it waits for a worker with that version; ``stranded``: the
code importable now cannot resume it (an old worker or a migration must)."""
LIVE = (PENDING, SLEEPING, WAITING)
NOT_RECORDED = "(old text not recorded)"


class PlanInputError(Exception):
    """The plan cannot be made (a module that fails to import, an unreadable configuration): bad input."""


@dataclass
class FramePlan:
    """One frame of a run as the code importable now takes it."""

    function: str
    version: str | None   # the version that saved it (None: legacy snapshot, or a run not started)
    key: str | None
    point: str | None     # its label for people
    line: int | None      # the line of the point in the code that saved it
    outcome: str
    reason: str | None    # why (None when unchanged): "<code>: <explanation>" for the ones that do not resume


@dataclass
class RunPlan:
    id: str
    function: str         # the function of the frame that decides the outcome (the run's, for one frame)
    point: str | None
    line: int | None
    outcome: str
    reason: str | None
    frames: list[FramePlan] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "function": self.function, "point": self.point, "line": self.line,
                "outcome": self.outcome, "reason": self.reason}


@dataclass
class FunctionChange:
    """A function whose live runs were saved by another version than the one importable now."""

    function: str
    old_version: str | None
    new_version: str | None  # None: the function is gone
    diff: str                # unified diff of the old version's stored text against today's, or NOT_RECORDED


@dataclass
class Plan:
    store: str
    runs: list[RunPlan]
    functions: list[FunctionChange]

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for run in self.runs:
            counts[run.outcome] += 1
        return counts

    @property
    def stranded(self) -> bool:
        return any(run.outcome == "stranded" for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "runs": [run.to_json() for run in self.runs], "summary": self.summary,
                "functions": [{"function": f.function, "old_version": f.old_version, "new_version": f.new_version,
                               "diff": f.diff} for f in self.functions]}


def migration_for(header: FrameHeader, meta: FunctionMeta | None) -> str | None:
    """The migration restore would apply first to a frame saved by another version (a match wins over the
    automatic upgrade), by name; None when none matches. Registered migrations are found, never run (what
    they produce is checked only at restore): raises MigrationError when several match alike."""
    from .. import migrations

    found = migrations.find(header, meta)
    return found.name if found is not None else None


def make_plan(store: Store, modules: Sequence[str] = ()) -> Plan:
    """Judge every live run of ``store`` against the code importable now. Imports ``modules`` (else the
    modules of the live runs' functions and the ``[tool.durable]`` modules); reads the store only and
    decodes no value (only frame headers): no user code runs but the modules' imports."""
    live = [e for e in store.list() if e.status in LIVE]
    problems = _import_modules(modules, live)
    judged: dict[tuple[Any, ...], tuple[str, str | None]] = {}
    runs = []
    changed: dict[tuple[str, str | None, str | None], FunctionChange] = {}
    for row in live:
        ex = store.get(row.id)  # list() leaves the snapshot out
        run = _plan_run(ex, problems, judged)
        runs.append(run)
        rows = ex.frames if isinstance(ex.frames, list) and len(ex.frames) == len(run.frames) else None
        for index, frame in enumerate(run.frames):
            meta = registry.lookup(frame.function, load=False)
            new = meta.version if meta is not None else None
            if frame.version is not None and frame.version != new:
                digest = versions.recorded_digest(rows, index, frame.function, frame.version)
                key = (frame.function, frame.version, digest)
                if key not in changed:
                    changed[key] = FunctionChange(frame.function, frame.version, new,
                                                  _diff(store, frame.function, frame.version, digest, meta))
    return Plan(store.url, runs, list(changed.values()))


def _import_modules(modules: Sequence[str], live: list[Execution]) -> dict[str, str]:
    """Import the modules the plan judges against; returns why some module a run names was not imported
    (absent, or not one a worker may import). Raises PlanInputError for a module that fails to import."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if modules:
        for name in modules:
            try:
                import_program_module(name)
            except ProgramError as exc:
                raise PlanInputError(str(exc)) from None
        return {}
    for name in _configured_modules():
        try:
            import_program_module(name)
        except ProgramError as exc:
            raise PlanInputError(f"[tool.durable] modules: {exc}") from None
    named = set()
    for ex in live:
        named.add((ex.function or "").partition(":")[0])
        for row in ex.frames if isinstance(ex.frames, list) else ():
            if isinstance(row, list) and row and isinstance(row[0], str):
                named.add(row[0].partition(":")[0])
    problems: dict[str, str] = {}
    for name in sorted(named):
        if not program_names.dotted(name):
            problems[name] = f"{name!r} is not a module name"
        elif name not in sys.modules and not program_names.may_import(name):
            problems[name] = (f"module {name!r} is not one a worker imports (not under {os.getcwd()}, not allowed "
                              f"and not in ${program_names.ENV_MODULES})")
        elif name not in sys.modules and not _exists(name):
            problems[name] = f"there is no module {name!r} any more"
        else:
            try:
                import_program_module(name)
            except ProgramError as exc:
                raise PlanInputError(str(exc)) from None
    return problems


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _configured_modules() -> tuple[str, ...]:
    try:
        from transpiler.config import ConfigError, find_pyproject, load
    except ImportError:  # a runtime-only install has no configuration reader
        return ()
    pyproject = find_pyproject(Path.cwd())
    if pyproject is None:
        return ()
    try:
        return load(pyproject).modules
    except ConfigError as exc:
        raise PlanInputError(str(exc)) from None


def _plan_run(ex: Execution, problems: dict[str, str], judged: dict[tuple[Any, ...], tuple[str, str | None]]
              ) -> RunPlan:
    function = ex.function or "?"
    if ex.snapshot is None:
        if ex.code_version is not None or ex.frames:  # it had suspended: the snapshot cell is lost
            return _unreadable(ex, f"the run has no readable snapshot ({ex.damage or 'the snapshot is missing'})")
        frame = _plan_start(ex, problems)
    else:
        try:
            headers = _headers(ex.snapshot)
        except Exception as exc:  # a corrupt snapshot, a bad signature, a format too new: reported, never fatal
            return _unreadable(ex, f"{type(exc).__name__}: {exc}")
        frames = [_plan_frame(header, problems, judged) for header in headers]
        if not frames:
            return _unreadable(ex, "the snapshot has no frame")
        frame = frames[0]
        for candidate in frames:  # the worst frame decides; of equals, the innermost
            if OUTCOMES.index(candidate.outcome) >= OUTCOMES.index(frame.outcome):
                frame = candidate
        return RunPlan(ex.id, frame.function, frame.point, frame.line, frame.outcome, frame.reason, frames)
    return RunPlan(ex.id, function, frame.point, frame.line, frame.outcome, frame.reason, [frame])


def _unreadable(ex: Execution, why: str) -> RunPlan:
    reason = f"unreadable: {why}"
    frame = FramePlan(ex.function or "?", ex.code_version, None, ex.point, None, "stranded", reason)
    return RunPlan(ex.id, frame.function, ex.point, None, "stranded", reason, [frame])


def _plan_start(ex: Execution, problems: dict[str, str]) -> FramePlan:
    """A run not started yet: its function must exist and take its arguments."""
    function = ex.function or "?"
    meta = registry.lookup(function, load=False)

    def frame(outcome: str, reason: str | None) -> FramePlan:
        return FramePlan(function, ex.code_version, START, START, None, outcome, reason)

    if meta is None:
        module = function.partition(":")[0]
        why = problems.get(module) or f"there is no durable function {function!r} any more"
        return frame("stranded", f"no-function: cannot start {function}: {why}")
    fn = meta.function
    if fn is None:
        try:
            fn = program_names.find(meta.module, meta.qualname, "function")
        except program_names.NameError_:
            fn = None
    try:
        args, kwargs = call_of(ex.args)
        if fn is not None:
            inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        return frame("stranded", f"signature: cannot start {function}: its arguments do not fit: {exc}")
    except Exception as exc:  # a damaged arguments cell
        return frame("stranded", f"unreadable: the run's arguments cannot be read: {type(exc).__name__}: {exc}")
    if ex.code_version is None or ex.code_version == meta.version:
        return frame("unchanged", None)
    return frame("upgrade", f"starts under version {(meta.version or '?')[:8]}")


def _headers(snapshot: bytes) -> list[FrameHeader]:
    """The frame headers of a snapshot, outermost first, without decoding any value (as restore reads them)."""
    envelope, _ = values.open_snapshot(snapshot)
    headers = []
    for raw in envelope[2:]:
        ident, fingerprint = values.frame_fields(raw)[:2]
        headers.append(frame_header(raw, registry.lookup(ident, fingerprint, load=False)))
    return headers


def _plan_frame(header: FrameHeader, problems: dict[str, str],
                judged: dict[tuple[Any, ...], tuple[str, str | None]]) -> FramePlan:
    key = (header.ident, header.fingerprint, header.version, header.key, header.state, tuple(header.names),
           tuple(header.tracked), tuple(header.cells))
    if key not in judged:  # runs at one point share their header: judge it once
        judged[key] = _judge(header, problems)
    outcome, reason = judged[key]
    return FramePlan(header.ident, header.version, header.key, header.display or header.key, header.line,
                     outcome, reason)


def _judge(header: FrameHeader, problems: dict[str, str]) -> tuple[str, str | None]:
    meta = registry.lookup(header.ident, header.fingerprint, load=False)
    try:
        migration = migration_for(header, meta)
    except IncompatibleCodeError as exc:  # MigrationError: several migrations match alike
        return "stranded", f"migration: {exc}"
    if migration is not None:
        return "migrate", f"migrate: migration {migration} moves it"
    try:
        adapt = compat.judge(header, meta)
    except PointMismatchError as exc:
        why = str(exc)
        if exc.reason == "no-function" and header.ident.partition(":")[0] in problems:
            why += f" ({problems[header.ident.partition(':')[0]]})"
        return ("pinned" if exc.reason == "pinned" else "stranded"), f"{exc.reason}: {why}"
    except IncompatibleCodeError as exc:  # the same version, and a state it does not have: a damaged snapshot
        return "stranded", f"state: {exc}"
    if adapt.exact:
        return "unchanged", None
    assert meta is not None
    _, label = meta.point_of(adapt.state)
    line = meta.line_of(adapt.state) if adapt.state else (meta.source[0] if meta.source else None)
    text = f"resumes at {label if adapt.state == 0 else repr(label)}" + (f" (line {line} now)" if line else "")
    text += f" under version {(meta.version or '?')[:8]}"
    if adapt.drop:
        text += f"; drops {', '.join(sorted(adapt.drop))} (no longer read)"
    return "upgrade", text


def _diff(store: Store, function: str, old_version: str, digest: str | None, meta: FunctionMeta | None) -> str:
    """Unified diff of the stored text of ``old_version`` against today's text of the function, with the
    lines numbered as in their files."""
    old = store.code_version(function, old_version, digest) or store.code_version(function, old_version)
    if old is None or old.source is None:
        return NOT_RECORDED
    new_first, new_lines = versions.source_lines(*meta.source) if meta is not None and meta.source else (1, [])
    old_first, old_lines = versions.source_lines(old.first_line, old.source)
    lines = difflib.unified_diff(old_lines, new_lines, lineterm="",
                                 fromfile=f"{function} {old_version[:8]} (stored)",
                                 tofile=f"{function} {(meta.version or '?')[:8] if meta else '(removed)'} (now)")

    def renumber(match: re.Match[str]) -> str:
        a, b = int(match.group(1)), int(match.group(3))
        return (f"@@ -{a + old_first - 1 if a else 0}{match.group(2) or ''} "
                f"+{b + new_first - 1 if b else 0}{match.group(4) or ''} @@")

    hunk = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")
    return "\n".join(hunk.sub(renumber, line) for line in lines)
