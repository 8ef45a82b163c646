"""Spies: functions that record their calls, so a simulation can tell an effect that ran twice."""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable

from ..programs import requests


@dataclass(frozen=True)
class Call:
    """One call a spy saw: its arguments, whether a step made it, and where it was made."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    in_step: bool
    where: str  # "file:line in function" of the caller

    def text(self, name: str) -> str:
        shown = [short(a) for a in self.args] + [f"{k}={short(v)}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(shown)})"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (never raises: a user value's repr may)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user value's repr may raise anything
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def spy(fn: Callable[..., Any] | None = None, *, returns: Any = None, name: str | None = None) -> Any:
    """A function that records each call (``.calls``, a list of ``Call``) and then calls ``fn`` (or returns
    ``returns``). It takes ``fn``'s name, module and qualname, so ``monkeypatch.setattr(app, "send_email",
    spy(app.send_email))`` leaves ``step(send_email)`` working; pass it to ``assert_survives_crashes(...,
    spies=[...])`` to have calls made outside a step that ran again after a crash reported."""
    calls: list[Call] = []

    def spied(*args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        where = f"{caller.f_code.co_filename}:{caller.f_lineno} in {caller.f_code.co_name}"
        calls.append(Call(args, kwargs, _in_step(), where))
        return fn(*args, **kwargs) if fn is not None else returns

    if fn is not None:
        functools.update_wrapper(spied, fn)
        del spied.__wrapped__  # type: ignore[attr-defined]  # a spy is not a durable function's wrapper
    if name is not None:
        spied.__name__ = spied.__qualname__ = name
    spied.calls = calls  # type: ignore[attr-defined]
    spied.spy_name = name or getattr(fn, "__name__", "spy")  # type: ignore[attr-defined]
    return spied


def _in_step() -> bool:
    try:
        requests.current_step()
    except RuntimeError:
        return False
    return True


def is_spy(obj: Any) -> bool:
    return isinstance(getattr(obj, "calls", None), list) and hasattr(obj, "spy_name")


def name_of(obj: Any) -> str:
    return str(getattr(obj, "spy_name", None) or getattr(obj, "_mock_name", None) or getattr(obj, "__name__", None)
               or type(obj).__name__)


def outside_calls(obj: Any) -> list[Call] | int:
    """The calls ``obj`` saw outside a step (a spy), or how many calls it saw in all (a ``unittest.mock`` mock,
    which cannot tell)."""
    if is_spy(obj):
        return [c for c in obj.calls if not c.in_step]
    count = getattr(obj, "call_count", None)
    if isinstance(count, int):
        return count
    raise TypeError(f"spies= takes functions made by runtime.testing.spy() or unittest.mock mocks, not {obj!r}")


