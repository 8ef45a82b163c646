"""Chaos mode (testing): every suspension of a compiled generator round-trips through snapshot,
detach and restore, while the generator object its caller holds keeps working."""
from __future__ import annotations

import functools
import sys
import types
from typing import Any, Callable, Generator

from .values import code_kinds
from .errors import UnserializableValueError

STATS = {"round_trips": 0, "unserializable": 0}

_WRAPPER_CODES = code_kinds.WRAPPER_CODES


def _round_trip(current: types.GeneratorType, closure: tuple[Any, ...] | None) -> types.GeneratorType:
    from .snapshot import detach, restore, snapshot

    # In one process the restored frame keeps the live closure cells (the snapshot's cells are
    # matched back to them), so writes through ``nonlocal`` still reach the enclosing function and
    # closures held elsewhere (a fresh process gets copies shared among the snapshot's values).
    with code_kinds.live_cells():
        try:
            data = snapshot(current)
        except UnserializableValueError:
            STATS["unserializable"] += 1
            return current
        fresh = restore(data)
        try:
            detach(current)  # (chaos wrappers it holds stay live: they are the program's own objects)
        except Exception:
            if current.gi_frame is None:  # the frame itself failed: the program's own error
                raise
            # The detach never reached the frame (a `yield from` over an object whose attribute lookup
            # raises): the program goes on with the generator it has, as if this round trip were not made.
            detach(fresh)
            STATS["unserializable"] += 1
            return current
    STATS["round_trips"] += 1
    return fresh


def chaos_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a compiled generator function so that its generators round-trip at every suspension."""
    closure = fn.__closure__

    @functools.wraps(fn)
    def chaos(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        current = fn(*args, **kwargs)
        # ``box`` passes the value sent in, then the value yielded out, so that no local of this frame
        # keeps either alive longer than a native generator's caller would (a weakref test sees it)
        box: list[Any] = [None]
        error: BaseException | None = None
        while True:
            try:
                if error is not None:
                    pending, error = error, None
                    box.append(current.throw(pending))
                    del pending
                else:
                    box.append(current.send(box.pop()))
            except StopIteration as stop:
                return stop.value
            current = _round_trip(current, closure)
            closing: GeneratorExit | None = None
            try:
                box.append((yield box.pop()))
            except GeneratorExit as exc:
                closing = exc
            except BaseException as exc:  # forwarded with throw() on the next turn
                error = exc
            if closing is not None:
                # As ``yield from`` does: close the inner generator, then re-raise the same
                # GeneratorExit — outside the handler, so nothing gets chained to it.
                result = current.close()
                if sys.version_info >= (3, 13) and result is not None:
                    return result
                raise closing

    _WRAPPER_CODES.add(chaos.__code__)
    return chaos


def current_inner(gen: types.GeneratorType) -> types.GeneratorType | None:
    """The compiled generator a chaos wrapper currently drives (None if ``gen`` is no wrapper)."""
    if gen.gi_code not in _WRAPPER_CODES or gen.gi_frame is None:
        return None
    inner = gen.gi_frame.f_locals.get("current")
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
