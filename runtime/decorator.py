"""The ``@durable`` decorator: marks a generator function whose module the compiler rewrites."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from .errors import DurableCompileError

F = TypeVar("F", bound=Callable[..., Any])


def _compiled(obj: Any) -> bool:
    seen = 0
    while obj is not None and seen < 100:
        if getattr(obj, "__durable__", None) is not None:
            return True
        obj = getattr(obj, "__wrapped__", None)
        seen += 1
    return False


def durable(fn: F) -> F:
    """Mark a generator function (or method, staticmethod, classmethod) as durable.

    In a compiled module the compiler has already rewritten the function and this returns it
    unchanged. In a module that was not compiled, the function is compiled on the fly when the
    transpiler is installed; otherwise ``DurableCompileError`` says how to compile it.
    """
    if isinstance(fn, (staticmethod, classmethod)):
        return type(fn)(durable(fn.__func__))  # type: ignore[return-value]
    if _compiled(fn):
        return fn
    try:
        from transpiler.onthefly import compile_function
    except ImportError:
        raise DurableCompileError(
            f"@durable function {getattr(fn, '__qualname__', fn)!r} is not compiled and the compiler is not "
            "installed here: compile its module ahead of time with `durable compile`, the build step, or "
            "transpiler.install_import_hook([...]) before importing it") from None
    return compile_function(fn)  # type: ignore[return-value]
