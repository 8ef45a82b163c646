"""The steps of ``with``, ``async with`` and ``async for`` as compiled code takes them, with CPython's errors."""
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


def with_enter(manager: Any) -> tuple[Any, Any]:
    """``with`` statement entry as CPython does it: look up both methods on the type, call __enter__."""
    cls = type(manager)
    enter = getattr(cls, "__enter__", None)  # (no try/except: the error must have no __context__)
    exit_ = getattr(cls, "__exit__", None)
    if enter is None or exit_ is None:
        missing = "__enter__" if enter is None else "__exit__"
        if sys.version_info < (3, 11):
            raise AttributeError(missing)
        raise TypeError(f"'{cls.__name__}' object does not support the context manager protocol"
                        + (" (missed __exit__ method)" if missing == "__exit__" else ""))
    bound_exit = _bind(exit_, manager)
    return bound_exit, _bind(enter, manager)()


def with_exit(manager: Any) -> Any:
    """Restore: the bound ``__exit__`` of a saved context manager, found in its class's own dictionaries
    and bound by the C code of plain functions and methods (the manager comes from a snapshot: no
    metaclass ``__getattr__`` or custom descriptor of its class runs)."""
    cls = type(manager)
    exit_ = class_attr(cls, "__exit__")
    if type(exit_) not in _PLAIN_METHODS:
        raise TypeError(f"the saved context manager, a {cls.__qualname__}, has no plain __exit__ method")
    return exit_.__get__(manager, cls)


_PLAIN_METHODS = frozenset({types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType,
                            staticmethod, classmethod})


def _exit_of(bound: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    def exit_(kind: Any, exc: Any, traceback: Any) -> Awaitable[Any]:
        return _checked(bound(kind, exc, traceback), "async with", "__aexit__")
    return exit_


def async_with_enter(manager: Any) -> Any:
    """``async with`` entry: look both methods up on the type (as CPython does, with its errors per
    version) and call ``__aenter__``: the awaitable the statement awaits."""
    cls = type(manager)
    enter = getattr(cls, "__aenter__", None)  # (no try/except: the error must have no __context__)
    missing = "__aenter__" if enter is None else "__aexit__" if not hasattr(cls, "__aexit__") else None
    if missing is not None:
        if sys.version_info < (3, 11):
            raise AttributeError(missing)
        raise TypeError(f"'{cls.__name__}' object does not support the asynchronous context manager protocol"
                        + (" (missed __aexit__ method)" if missing == "__aexit__" else ""))
    return _checked(_bind(enter, manager)(), "async with", "__aenter__")


def async_exit_of(manager: Any) -> Callable[..., Awaitable[Any]]:
    """``async with``, once ``__aenter__`` gave its value: the manager's bound ``__aexit__``."""
    return _exit_of(_bind(type(manager).__aexit__, manager))


def async_with_exit(manager: Any) -> Callable[..., Awaitable[Any]]:
    """Restore: the ``__aexit__`` of a saved asynchronous context manager, found in its class's own
    dictionaries and bound by the C code of plain functions (no hook of the snapshot's classes runs)."""
    cls = type(manager)
    exit_ = class_attr(cls, "__aexit__")
    if type(exit_) not in _PLAIN_METHODS:
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
    """``async for``: the awaitable of the next item (``StopAsyncIteration`` from it ends the loop). As
    CPython does, its ``__await__`` is called now, and a failure there is a TypeError caused by it."""
    value = type(iterator).__anext__(iterator)
    kind = type(value)
    if kind is types.CoroutineType or (kind is types.GeneratorType and value.gi_code.co_flags & _ITERABLE_COROUTINE):
        return value
    try:
        awaited = _await_iterator(value)
    except Exception as exc:
        raise TypeError(f"'async for' received an invalid object from __anext__: {kind.__name__}") from exc
    return _Awaited(awaited)


def _await_iterator(value: Any) -> Any:
    """What ``await value`` iterates: ``value.__await__()``, checked as CPython checks it."""
    method = getattr(type(value), "__await__", None)
    if method is None:
        raise TypeError(f"object {type(value).__name__} can't be used in 'await' expression")
    result = method(value)
    if type(result) is types.CoroutineType:
        raise TypeError("__await__() returned a coroutine")
    if not hasattr(type(result), "__next__"):
        raise TypeError(f"__await__() returned non-iterator of type '{type(result).__name__}'")
    return result


class _Awaited:
    """An awaitable whose ``__await__`` was called already: awaiting it iterates what that returned."""

    __slots__ = ("iterator",)

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def __await__(self) -> Any:
        return self.iterator
