"""``runtime.gather`` / ``race`` / ``first``: one durable await over several durable awaitables.

A combinator is the awaitable the program awaits (its ``cr_await``, so a snapshot carries it as a value). It
steps its children by hand: a child is a request (``step()``, ``sleep()``, ``wait()``, ``checkpoint()``), a durable
coroutine, or another combinator. Transient awaits of the children (asyncio futures, bare loop turns) are passed
to the program's task, several children's at once, so they overlap. Only when every child is parked at a
durable await, or done, does the combinator yield one ``All`` request naming the parked parts. The runner
answers one part at a time (a ``Delivery``), in the order the outcomes arrive, and commits a snapshot after each:
the order is recorded, never invented, and a resumed run replays it.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import registry
from .._support import MARKER, detaching
from ..errors import CorruptSnapshotError
from ..values import code_kinds
from ..values.allow import serializable
from . import requests as rq

MAX_CHILDREN = 1000
"""The most awaitables one combinator takes (its snapshot and its runner's record grow with them)."""

_REFUSE_LIMIT = 100  # durable awaits a cancelled child may try before it is closed

RUN, TURN, FUTURE, PARKED, DONE = "run", "turn", "future", "parked", "done"
_STATES = frozenset({PARKED, DONE})  # the states a saved combinator's children may be in

Key = tuple[int, ...]


class Part(NamedTuple):
    """One parked child of an ``All``: its key (child indices, outermost first) and the request it made, or
    None when it is the same parking as in the previous ``All`` of the same combinator."""

    key: Key
    request: rq.Request | None


@dataclass(frozen=True)
class All(rq.Request):
    """What a combinator yields when every child is parked or done: the parked parts. The runner answers one
    of them with a ``Delivery``."""

    parts: tuple[Part, ...]


@serializable  # (the test kit carries the answers a program got to a fresh interpreter)
@dataclass(frozen=True)
class Delivery:
    """The outcome of one part of an ``All``: the value its request returns, or the exception it raises."""

    key: Key
    value: Any = None
    error: BaseException | None = None


def _is_durable_coroutine(obj: Any) -> bool:
    code = getattr(obj, "cr_code", None)
    return code is not None and (id(code) in registry.BY_CODE or code in code_kinds.WRAPPER_CODES)


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return f"coroutine {name!r}" if name else f"a {type(obj).__qualname__} object"


@serializable
class Combinator:
    """``gather`` (every child, results in argument order) or ``race`` (the first child to complete)."""

    def __init__(self, kind: str, awaitables: tuple[Any, ...], return_exceptions: bool = False) -> None:
        self.kind = kind
        self.return_exceptions = bool(return_exceptions)
        self.children: list[Any] = []  # a coroutine or combinator driven here; None for a request
        self.states: list[str] = []
        self.results: list[Any] = []  # per child: its value, or its exception (``failed``)
        self.failed: list[bool] = []
        self.keys: list[list[Key]] = []  # per parked child: the keys of its parts
        self.order: list[int] = []  # the children in the order they completed
        self.cancelled: list[bool] = []  # per child: cancelled (race lost, a sibling failed, the await cancelled)
        self.awaited = False
        self._transient_reset()
        self._requests: dict[int, rq.Request] = {}  # requests given as children, until first reported
        for index, aw in enumerate(awaitables):
            self.children.append(None if isinstance(aw, rq.Request) else aw)
            self.states.append(RUN)
            self.results.append(None)
            self.failed.append(False)
            self.keys.append([])
            self.cancelled.append(False)
            if isinstance(aw, rq.Request):
                self._requests[index] = aw

    def _transient_reset(self) -> None:
        self._resuming = False  # restored: the next send yields the marker
        self._futures: dict[int, Any] = {}  # children awaiting an asyncio future
        self._fresh: dict[int, rq.Request] = {}  # children that parked since the last All, with their request
        self._error: BaseException | None = None  # thrown in from outside (the program's task was cancelled)
        self._ending = False  # the children are being cancelled: the combinator ends once they are done

    # ------------------------------------------------------------------ saving

    def __getstate__(self) -> dict[str, Any]:
        if self._futures or any(state in (RUN, TURN, FUTURE) for state in self.states):
            raise ValueError(f"runtime.{self.kind}() has children in transient awaits (asyncio): it can be saved "
                             "only while every child is at a durable await or done")
        return {"kind": self.kind, "return_exceptions": self.return_exceptions, "children": self.children,
                "states": self.states, "results": self.results, "failed": self.failed, "keys": self.keys,
                "order": self.order, "cancelled": self.cancelled}

    def __setstate__(self, state: Any) -> None:
        """A saved combinator, checked: a snapshot is data from outside."""
        try:
            kind = state["kind"]
            children, states, results = state["children"], state["states"], state["results"]
            failed, keys, order, cancelled = state["failed"], state["keys"], state["order"], state["cancelled"]
            count = len(children)
            ok = (kind in ("gather", "race") and type(state["return_exceptions"]) is bool and count <= MAX_CHILDREN
                  and all(type(x) is list and len(x) == count for x in (states, results, failed, keys, cancelled))
                  and type(order) is list and all(type(i) is int and 0 <= i < count for i in order)
                  and all(s in _STATES for s in states) and all(type(f) is bool for f in failed + cancelled)
                  and all(type(k) is list and all(_is_key(key, i) for key in k) for i, k in enumerate(keys))
                  and all(c is None or type(c) is Combinator or _is_durable_coroutine(c) for c in children))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise CorruptSnapshotError("a saved runtime.gather/race does not have the shape of one")
        self.kind, self.return_exceptions = kind, state["return_exceptions"]
        self.children, self.states, self.results, self.failed = children, states, results, failed
        self.keys, self.order, self.cancelled = [[tuple(key) for key in k] for k in keys], order, cancelled
        self.awaited = True
        self._requests = {}
        self._transient_reset()

    def resumed(self) -> Combinator:
        """Restored: what the restore arm of the await awaits (yields the marker first)."""
        self._resuming = True
        return self

    # ------------------------------------------------------------------ the iterator protocol

    def __await__(self) -> Combinator:
        if self.awaited and not self._resuming:
            raise RuntimeError(f"cannot reuse an already awaited runtime.{self.kind}()")
        self.awaited = True
        return self

    def __iter__(self) -> Combinator:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if self._resuming:
            self._resuming = False
            return MARKER
        if type(value) is Delivery:
            self._deliver(value)
        elif all(state == RUN for state in self.states):  # the first send: start every child
            for index in range(len(self.states)):
                if self.states[index] != RUN:  # (decided meanwhile: a race won, a sibling failed)
                    continue
                if index in self._requests:
                    self.states[index] = PARKED
                    self._fresh[index] = self._requests.pop(index)
                else:
                    self._step(index, "send", None)
        else:  # after a transient yield: resume the children whose turn or future came
            for index, state in enumerate(self.states):
                if state == TURN or state == FUTURE and self._futures[index].done():
                    self._futures.pop(index, None)
                    self._step(index, "send", None)
        return self._settle()

    def throw(self, exc: Any, value: Any = None, traceback: Any = None) -> Any:
        if isinstance(exc, type):  # the three-argument form (deprecated since 3.12)
            exc = exc(value) if value is not None and not isinstance(value, BaseException) else (value or exc())
        if detaching(exc):
            self._detach_children()
            raise exc
        if isinstance(exc, GeneratorExit):
            self.close()
            raise exc
        self._error = exc  # from outside (a cancel, a refusal): the children are cancelled, then it is raised here
        self._cancel_all(exc if isinstance(exc, asyncio.CancelledError) else None)
        return self._settle()

    def close(self) -> None:
        for index, child in enumerate(self.children):
            if child is not None and self.states[index] != DONE:
                self.states[index] = DONE
                self._futures.pop(index, None)
                child.close()

    def _detach_children(self) -> None:
        from ..snapshot import detach
        for index, child in enumerate(self.children):
            if child is not None and self.states[index] != DONE:
                self.states[index] = DONE
                if type(child) is Combinator:
                    child._detach_children()
                else:
                    detach(child)

    # ------------------------------------------------------------------ driving the children

    def _deliver(self, delivery: Delivery) -> None:
        key = delivery.key
        index = key[0] if key else -1
        if not 0 <= index < len(self.states) or self.states[index] != PARKED or key not in self.keys[index]:
            raise RuntimeError(f"runtime.{self.kind}() got an outcome for part {list(key)}, which is not pending")
        if self.children[index] is None:
            self._complete(index, delivery.value, delivery.error)
        elif len(key) > 1:
            self._step(index, "send", Delivery(key[1:], delivery.value, delivery.error))
        elif delivery.error is not None:
            self._step(index, "throw", delivery.error)
        else:
            self._step(index, "send", delivery.value)

    def _step(self, index: int, how: str, value: Any) -> None:
        """Advance child ``index`` to its next suspension (or its end) and note where it is."""
        child = self.children[index]
        rq._driving += 1  # its durable awaits are the combinator's, not the program's
        try:
            for _ in range(_REFUSE_LIMIT):
                try:
                    out = child.throw(value) if how == "throw" else child.send(value)
                except StopIteration as stop:
                    self._complete(index, stop.value, None)
                    return
                except (Exception, asyncio.CancelledError) as exc:
                    if detaching(exc):
                        raise
                    self._complete(index, None, exc)
                    return
                if isinstance(out, rq.Request):
                    if self.cancelled[index]:
                        how, value = "throw", RuntimeError(
                            f"a durable await while runtime.{self.kind}() cancels this awaitable: its clean-up may "
                            "await transient work only")
                        continue
                    self.states[index] = PARKED
                    self._fresh[index] = out
                    return
                if out is None:
                    self.states[index] = TURN
                    return
                if getattr(out, "_asyncio_future_blocking", None) is True:
                    out._asyncio_future_blocking = False
                    self._futures[index] = out
                    self.states[index] = FUTURE
                    return
                how, value = "throw", RuntimeError(
                    f"runtime.{self.kind}() got a bad yield from {_describe(child)}: {out!r} (a child may await "
                    "durable requests, durable coroutines and asyncio awaitables; suspend() values cannot be "
                    "combined)")
            self._complete(index, None, RuntimeError(f"{_describe(child)} went on awaiting durably while it was "
                                                     "being cancelled"))
            child.close()
        finally:
            rq._driving -= 1

    def _complete(self, index: int, value: Any, error: BaseException | None) -> None:
        self.states[index] = DONE
        self.children[index] = None
        self.keys[index] = []
        self._fresh.pop(index, None)
        self.order.append(index)
        self.results[index] = error if error is not None else value
        self.failed[index] = error is not None
        if self._ending:
            return
        if self.kind == "race" or error is not None and not self.return_exceptions:
            self._ending = True  # decided: the others are cancelled (as asyncio.TaskGroup does on a failure)
            self._cancel_all(None)

    def _cancel_all(self, exc: BaseException | None) -> None:
        self._ending = True
        for index, state in enumerate(self.states):
            if state == DONE or self.cancelled[index]:
                continue
            self.cancelled[index] = True
            if self.children[index] is None:  # a request: dropped
                self._requests.pop(index, None)
                self.states[index] = DONE
                self.keys[index] = []
                self._fresh.pop(index, None)
                continue
            future = self._futures.pop(index, None)
            if future is not None:
                future.cancel()
            self._step(index, "throw", exc if exc is not None else asyncio.CancelledError())

    def _settle(self) -> Any:
        """What to yield now (a transient await for the task, or the ``All`` of the parked parts); the end of
        the combinator (StopIteration, or the exception it raises) once every child is done."""
        while True:
            ready = [index for index, future in self._futures.items() if future.done()]
            if not ready:
                break
            for index in ready:
                del self._futures[index]
                self._step(index, "send", None)
        if all(state == DONE for state in self.states):
            return self._end()
        if TURN in self.states:
            return None  # a loop turn (``await asyncio.sleep(0)`` in a child)
        if self._futures:
            return _any_of(list(self._futures.values()))
        parts: list[Part] = []
        for index, state in enumerate(self.states):
            if state != PARKED:
                continue
            fresh = self._fresh.pop(index, None)
            if fresh is None:
                parts.extend(Part(key, None) for key in self.keys[index])
                continue
            own = [Part((index, *p.key), p.request) for p in fresh.parts] if type(fresh) is All else \
                [Part((index,), fresh)]
            self.keys[index] = [p.key for p in own]
            parts.extend(own)
        request = All(tuple(parts))
        if rq._guard is not None and not rq._driving:
            rq._guard(self)  # (a durable await of the program: its pump hands it to the runner)
        return request

    @property
    def request(self) -> str:  # (how the pump's refusal names this await)
        return f"runtime.{self.kind}()"

    def _end(self) -> Any:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self.kind == "race":
            winner = self.order[0]
            if self.failed[winner]:
                raise self.results[winner]
            raise StopIteration((winner, self.results[winner]))
        if not self.return_exceptions:
            for index in self.order:
                if self.failed[index]:
                    raise self.results[index]
        raise StopIteration(list(self.results))

    def __repr__(self) -> str:
        return f"<runtime.{self.kind}() of {len(self.states)}>"


def _is_key(key: Any, index: int) -> bool:
    return (type(key) in (list, tuple) and 0 < len(key) <= 64 and key[0] == index
            and all(type(i) is int and 0 <= i < MAX_CHILDREN for i in key))


def _any_of(futures: list[Any]) -> Any:
    """A future of the children's loop, done when any of ``futures`` is, yielded to the program's task."""
    waiter = futures[0].get_loop().create_future()

    def wake(_: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)

    for future in futures:
        future.add_done_callback(wake)
    waiter._asyncio_future_blocking = True
    return waiter


def _checked(what: str, awaitables: tuple[Any, ...]) -> tuple[Any, ...]:
    if not awaitables:
        raise TypeError(f"runtime.{what}() needs at least one awaitable")
    if len(awaitables) > MAX_CHILDREN:
        raise ValueError(f"runtime.{what}() takes at most {MAX_CHILDREN} awaitables, not {len(awaitables)}")
    bad = None
    for aw in awaitables:
        if isinstance(aw, rq.Request) or type(aw) is Combinator and not aw.awaited:
            continue
        if _is_durable_coroutine(aw) and inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:
            continue
        bad = aw
        break
    if bad is None:
        if len({id(aw) for aw in awaitables}) != len(awaitables):
            bad = "the same awaitable twice"
        else:
            return awaitables
    for aw in awaitables:  # (refused: none of them is "never awaited")
        if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:
            aw.close()
    what_it_is = bad if isinstance(bad, str) else (
        f"{_describe(bad)}, which is not durable (compile it with @durable, or await it before or after)"
        if not _is_durable_coroutine(bad) and not isinstance(bad, Combinator) else
        f"{_describe(bad)}, which was already awaited or started")
    raise TypeError(f"runtime.{what}() takes durable awaitables (step(), sleep(), wait(), checkpoint(), a @durable "
                    f"coroutine not awaited yet, gather()/race()), not {what_it_is}")


def gather(*awaitables: Any, return_exceptions: bool = False) -> Combinator:
    """``a, b = await gather(step(f), child())``: await every awaitable at once; their values in argument order.
    Steps run at the same time, sleeps and waits overlap, and transient awaits of coroutines overlap. When one
    raises (``return_exceptions`` false), the others are cancelled and its exception is raised; with
    ``return_exceptions`` the exceptions take their places in the list."""
    return Combinator("gather", _checked("gather", awaitables), return_exceptions)


def race(*awaitables: Any) -> Combinator:
    """``index, value = await race(wait("approved"), sleep(DAY))``: the first awaitable to complete, by position,
    with its value (or its exception, raised); the others are cancelled (a coroutine gets ``CancelledError`` and
    may clean up with transient awaits; a running step finishes and is recorded as abandoned)."""
    return Combinator("race", _checked("race", awaitables))


first = race
