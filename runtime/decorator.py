"""The ``@durable`` decorator: marks a generator function whose module the compiler rewrites."""
from __future__ import annotations

from typing import Any, Callable, TypeVar, overload

from .errors import DurableCompileError

F = TypeVar("F", bound=Callable[..., Any])


def _meta_of(obj: Any) -> Any:
    """The declaration of a compiled function (through wrappers that set ``__wrapped__``), or None."""
    seen = 0
    while obj is not None and seen < 100:
        meta = getattr(obj, "__durable__", None)
        if meta is not None:
            return meta
        obj = getattr(obj, "__wrapped__", None)
        seen += 1
    return None


def _compiled(obj: Any) -> bool:
    return _meta_of(obj) is not None


@overload
def durable(fn: F, *, keep_version: bool = False) -> F: ...


@overload
def durable(fn: None = None, *, keep_version: bool = False) -> Callable[[F], F]: ...


def durable(fn: F | None = None, *, keep_version: bool = False) -> F | Callable[[F], F]:
    """Mark a generator function (or method, staticmethod, classmethod) as durable.

    In a compiled module the compiler has already rewritten the function and this returns it
    unchanged. In a module that was not compiled, the function is compiled on the fly when the
    transpiler is installed; otherwise ``DurableCompileError`` says how to compile it.

    ``@durable(keep_version=True)`` pins the function's runs to the version they were suspended
    under: restore never upgrades them to changed code (``runtime.compat``, reason "pinned"); only the
    exact version resumes them, or a migration that names their ``from_version`` (``runtime.migration``).
    """
    if fn is None:
        return lambda f: durable(f, keep_version=keep_version)
    if isinstance(fn, (staticmethod, classmethod)):
        return type(fn)(durable(fn.__func__, keep_version=keep_version))  # type: ignore[return-value]
    if not _compiled(fn):
        try:
            from transpiler.onthefly import compile_function
        except ImportError:
            raise DurableCompileError(
                f"@durable function {getattr(fn, '__qualname__', fn)!r} is not compiled and the compiler is not "
                "installed here: compile its module ahead of time with `durable compile`, the build step, or "
                "transpiler.install_import_hook([...]) before importing it") from None
        fn = compile_function(fn)  # type: ignore[assignment]
    if keep_version:
        # the compiled function is decorated by ``_dg_rt.compiled(meta)`` first, so its declaration is here
        _meta_of(fn).keep_version = True
    return fn
