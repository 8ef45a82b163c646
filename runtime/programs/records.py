"""What the runner writes and seals: the parts a seal covers, texts of errors and values, stored step calls."""
from __future__ import annotations

import json
import reprlib
import traceback
import types
from typing import Any, Union

from ..errors import SnapshotError, UnserializableValueError
from ..snapshot import restore, suspended_at
from ..values import dump_value, seals
from .loading import load_function
from .store.base import Execution, StepRecord, Store

Program = Union[types.GeneratorType, types.CoroutineType]  # type: ignore[type-arg]
"""A running durable program: a generator, or the coroutine of an ``async def``."""

SET_ASIDE = 60.0
"""Seconds a program that could not be resumed (code changed, module missing) is held before it is tried again."""


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


def error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def dump_or_none(value: Any) -> bytes | None:
    try:
        return dump_value(value)
    except (SnapshotError, RecursionError):
        return None


def execution_parts(execution_id: str, function: str, args: Any, snapshot: bytes | None, request: Any,
                     steps_started: int, step_mac: bytes | None) -> list[Any]:
    """What an execution's seal covers: its program and arguments, and its place in its run (snapshot,
    the request it is suspended on, the steps it asked for, the state of the step it waits on)."""
    return [execution_id, function, seals.canonical(args), snapshot, seals.canonical(request), steps_started,
            step_mac]


def step_parts(step: StepRecord) -> list[Any]:
    """What a step's seal covers: the call a worker makes, and what it recorded of it."""
    return [step.execution_id, step.index, step.function, step.call, seals.canonical(step.policy), step.status,
            step.attempts, step.result, step.error_value]


def restore_stored(store: Store, ex: Execution) -> Program:
    """The program of a stored run, restored from its snapshot once its seal is checked and its module
    loaded (when nothing is about to resume it: a cancel closes it, a relabel snapshots it again). Raises
    ProgramError or a SnapshotError."""
    seals.verify(ex.mac, "execution", execution_parts(ex.id, ex.function, ex.args, ex.snapshot, ex.request,
                                                      ex.steps_started, current_step_mac(store, ex)),
                 f"execution {ex.id}")
    load_function(ex.function)
    return restore(ex.snapshot)  # type: ignore[arg-type]


def current_step_mac(store: Store, ex: Execution) -> bytes | None:
    """What the execution's seal covers of the steps its request names, read from ``store``."""
    steps = {index: step for index in step_indices(ex.request) if (step := store.step(ex.id, index)) is not None}
    return steps_mac(ex.request, steps)


def step_indices(request: Any) -> list[int]:
    """The steps a stored request names (a composite request's step parts, in order)."""
    if not isinstance(request, dict):
        return []
    if request.get("kind") == "step":
        return [request["index"]] if type(request.get("index")) is int else []
    if request.get("kind") == "all" and isinstance(request.get("parts"), list):
        return [p["index"] for p in request["parts"] if isinstance(p, dict) and p.get("kind") == "step"
                and type(p.get("index")) is int]
    return []


def steps_mac(request: Any, steps: dict[int, StepRecord]) -> bytes | None:
    """What the execution's seal covers of the steps its request names: their seals, in the request's order."""
    named = [steps[index] for index in step_indices(request) if index in steps]
    if not named:
        return None
    if request.get("kind") == "step":
        return named[0].mac
    return b"".join(step.mac or b"" for step in named)


def call_text(args: list[Any], kwargs: dict[str, Any] | None) -> str:
    """``1, "a", key=2``: a call's arguments as JSON, for messages."""
    return ", ".join([*(json.dumps(a) for a in args), *(f"{k}={json.dumps(v)}" for k, v in (kwargs or {}).items())])


def text_of(exc: BaseException) -> str:
    """``str(exc)``, which a user's exception may fail to give."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a user exception's __str__ may raise anything
        return f"<{type(exc).__qualname__} whose message cannot be shown>"


def step_call(ref: str, gen: Program, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The stored form of a step's arguments; one that cannot be stored is named as the program wrote it:
    "cannot store argument 2 of step flows:charge (yielded at line 12) → .conn: value of type ..." ("awaited"
    in an async program)."""
    try:
        return dump_value((list(args), dict(kwargs)), "the arguments")
    except UnserializableValueError as exc:
        path, name = exc.path, exc.type_name
        prefix = f"cannot snapshot {' → '.join(path)}: value of type {name!r} "
        if len(path) < 3 or path[1] not in ("[0]", "[1]") or not str(exc).startswith(prefix):
            raise
        which = f"argument {int(path[2][1:-1]) + 1}" if path[1] == "[0]" else f"argument {path[2][1:-1]}"
        where = suspended_at(gen)
        verb = "awaited" if type(gen) is types.CoroutineType else "yielded"
        yielded = f" ({verb} at line {where[1]} of {where[0]})" if where and where[1] else ""
        inside = "".join(f" → {step}" for step in path[3:])
        raise UnserializableValueError(
            f"cannot store {which} of step {ref}{yielded}{inside}: value of type {name!r} {str(exc)[len(prefix):]}",
            path=[f"{which} of step {ref}", *path[3:]], type_name=name) from None
