"""Chaos mode (testing): every suspension of a compiled generator round-trips through snapshot,
detach and restore, while the generator object its caller holds keeps working."""
from __future__ import annotations

import functools
import sys
import types
from typing import Any, Callable, Generator

from .errors import UnserializableValueError

STATS = {"round_trips": 0, "unserializable": 0}


def _drive(gen: types.GeneratorType) -> Generator[Any, Any, Any]:
    from .snapshot import detach, restore, snapshot

    current = gen
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is not None:
                pending, error = error, None
                item = current.throw(pending)
            else:
                item = current.send(value)
        except StopIteration as stop:
            return stop.value
        try:
            data = snapshot(current)
        except UnserializableValueError:
            STATS["unserializable"] += 1
        else:
            fresh = restore(data)
            detach(current)
            current = fresh
            STATS["round_trips"] += 1
        try:
            value = yield item
        except GeneratorExit:
            result = current.close()
            if sys.version_info >= (3, 13) and result is not None:
                return result
            raise
        except BaseException as exc:  # forwarded with throw() on the next turn
            error = exc
            value = None


_DRIVE_CODE = _drive.__code__


def chaos_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def chaos(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        return (yield from _drive(fn(*args, **kwargs)))

    _WRAPPER_CODES.add(chaos.__code__)
    return chaos


_WRAPPER_CODES: set[types.CodeType] = set()


def _driver_of(gen: types.GeneratorType) -> types.GeneratorType | None:
    if gen.gi_code in _WRAPPER_CODES:
        inner = gen.gi_yieldfrom
        return inner if isinstance(inner, types.GeneratorType) and inner.gi_code is _DRIVE_CODE else None
    if gen.gi_code is _DRIVE_CODE:
        return gen
    return None


def current_inner(gen: types.GeneratorType) -> types.GeneratorType | None:
    """The compiled generator a chaos wrapper currently drives (None if ``gen`` is no wrapper)."""
    driver = _driver_of(gen)
    if driver is None or driver.gi_frame is None:
        return None
    inner = driver.gi_frame.f_locals.get("current")
    return inner if isinstance(inner, types.GeneratorType) else None


def detach_wrapper(gen: types.GeneratorType, detach: Callable[[Any], None]) -> bool:
    """Detach a chaos wrapper: detach the generator it drives, then drop the wrapper quietly."""
    if gen.gi_code not in _WRAPPER_CODES:
        return False
    inner = current_inner(gen)
    if inner is not None:
        detach(inner)
    gen.close()
    return True
