"""The steps of ``async for`` and ``async with`` as compiled coroutines take them, with CPython's errors."""
from __future__ import annotations

import inspect
import sys
import types
from typing import Any, Awaitable, Callable

from .values.bounds import class_attr

_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE


def _awaitable(value: Any) -> bool:
    """Whether ``await value`` accepts it (CPython's ``_PyCoro_GetAwaitableIter``)."""
    kind = type(value)
    if kind is types.CoroutineType:
        return True
    if kind is types.GeneratorType:
        return bool(value.gi_code.co_flags & _ITERABLE_COROUTINE)
    return hasattr(kind, "__await__")


def _checked(value: Any, what: str, method: str) -> Any:
    if not _awaitable(value):
        raise TypeError(f"'{what}' received an object from {method} that does not implement __await__: "
                        f"{type(value).__name__}")
    return value


def _bind(attr: Any, obj: Any) -> Any:
    get = getattr(type(attr), "__get__", None)
    return get(attr, obj, type(obj)) if get is not None else attr


def _exit_of(bound: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    def exit_(kind: Any, exc: Any, traceback: Any) -> Awaitable[Any]:
        return _checked(bound(kind, exc, traceback), "async with", "__aexit__")
    return exit_


def async_with_enter(manager: Any) -> tuple[Callable[..., Awaitable[Any]], Any]:
    """``async with`` entry: look both methods up on the type (as CPython does, with its errors per
    version), call ``__aenter__``; the bound ``__aexit__`` and the awaitable the statement awaits."""
    cls = type(manager)
    try:
        enter = cls.__aenter__  # type: ignore[attr-defined]
    except AttributeError:
        if sys.version_info < (3, 11):
            raise AttributeError("__aenter__") from None
        raise TypeError(f"'{cls.__name__}' object does not support the asynchronous context manager protocol") from None
    try:
        exit_ = cls.__aexit__  # type: ignore[attr-defined]
    except AttributeError:
        if sys.version_info < (3, 11):
            raise AttributeError("__aexit__") from None
        raise TypeError(f"'{cls.__name__}' object does not support the asynchronous context manager protocol "
                        "(missed __aexit__ method)") from None
    bound_exit = _exit_of(_bind(exit_, manager))
    return bound_exit, _checked(_bind(enter, manager)(), "async with", "__aenter__")


def async_with_exit(manager: Any) -> Callable[..., Awaitable[Any]]:
    """Restore: the ``__aexit__`` of a saved asynchronous context manager, found in its class's own
    dictionaries and bound by the C code of plain functions (no hook of the snapshot's classes runs)."""
    cls = type(manager)
    exit_ = class_attr(cls, "__aexit__")
    if type(exit_) is not types.FunctionType:
        raise TypeError(f"the saved asynchronous context manager, a {cls.__qualname__}, has no plain __aexit__ method")
    return _exit_of(exit_.__get__(manager, cls))


def aiter_of(iterable: Any) -> Any:
    """``async for``: the asynchronous iterator of ``iterable`` (``__aiter__`` looked up on the type)."""
    cls = type(iterable)
    method = getattr(cls, "__aiter__", None)
    if method is None:
        raise TypeError(f"'async for' requires an object with __aiter__ method, got {cls.__name__}")
    iterator = _bind(method, iterable)()
    if not hasattr(type(iterator), "__anext__"):
        raise TypeError(f"'async for' received an object from __aiter__ that does not implement __anext__: "
                        f"{type(iterator).__name__}")
    return iterator


def anext_of(iterator: Any) -> Any:
    """``async for``: the awaitable of the next item (``StopAsyncIteration`` from it ends the loop)."""
    value = type(iterator).__anext__(iterator)
    if not _awaitable(value):
        raise TypeError(f"'async for' received an invalid object from __anext__: {type(value).__name__}")
    return value
