"""What a durable program yields to its runner: sleep, wait for a signal, run a step, checkpoint."""
from __future__ import annotations

import contextvars
import datetime as _dt
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..values.allow import serializable

MAX_SECONDS = 10 ** 9
"""The longest sleep, wait timeout or retry backoff (about 31 years): time arithmetic stays exact and
every wake time can be shown as a date."""
LATEST = _dt.datetime(9999, 12, 31, tzinfo=_dt.timezone.utc).timestamp()
"""The latest wake time ``sleep(until=...)`` accepts (the end of year 9999, as datetime can show)."""


def _seconds(value: Any, what: str, *, lowest: float = 0.0) -> float:
    """``value`` as a number of seconds, checked when the request is made (inside the program)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not lowest <= seconds <= MAX_SECONDS:
        raise ValueError(f"{what} must be a finite number of seconds from {lowest:g} to {MAX_SECONDS:g}, "
                         f"not {value!r}" + (" (use wait() for an open-ended wait)" if seconds == math.inf else ""))
    return seconds


def _signal_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what} needs a signal name (a non-empty str)")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what}: the signal name {name!r} is not valid text (it holds a lone surrogate)") from None
    return name


class Request:
    """Base of the requests a durable program yields; anything else it yields is progress. A request is
    also awaitable (``await step(...)`` in an ``async def``): the await yields it to whoever drives the
    coroutine and returns what is sent back, as ``yield`` does in a generator."""

    def __await__(self) -> "Awaiting":
        return Awaiting(self)


_guard: Callable[[Awaiting], None] | None = None
"""Checks each durable await as it is made (set when ``runtime.programs.pump`` is imported: an async program
runs in a pump task, and a durable await in any other task of its loop is refused)."""

_driving = 0
"""Above 0 while a ``runtime.gather``/``race`` steps its children: their durable awaits are the combinator's (it
answers the guard once, for all of them)."""


class Awaiting:
    """An await on a request, as its own iterator (so that ``cr_await`` of the awaiting coroutine is this
    object): the first ``send`` yields the request, the next one returns what it is given as the value of
    the await; ``throw`` raises its exception there."""

    __slots__ = ("request", "sent")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.sent = False

    def __iter__(self) -> "Awaiting":
        return self

    def __await__(self) -> "Awaiting":
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if not self.sent:
            self.sent = True
            if _guard is not None and not _driving:
                _guard(self)
            return self.request
        raise StopIteration(value)

    def throw(self, exc: Any, value: Any = None, traceback: Any = None) -> Any:
        if isinstance(exc, type):  # the three-argument form (deprecated since 3.12)
            exc = exc(value) if value is not None and not isinstance(value, BaseException) else (value or exc())
        raise exc

    def close(self) -> None:
        self.sent = True

    def __repr__(self) -> str:
        return f"<awaiting {self.request!r}>"


def suspend(value: Any = None) -> Awaiting:
    """``answer = await suspend(value)``: the coroutine twin of a bare ``answer = yield value`` (a driver
    gets ``value`` from ``coro.send`` and sends the answer back)."""
    return Awaiting(value)


@dataclass(frozen=True)
class Sleep(Request):
    seconds: float | None = None
    until: float | None = None  # seconds since the epoch

    def wake_at(self, now: float) -> float:
        return self.until if self.until is not None else now + (self.seconds or 0.0)


@dataclass(frozen=True)
class Wait(Request):
    signal: str
    timeout: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing step runs (``attempts`` in all) and how long the runner waits between
    attempts: ``backoff * factor**(n-1)`` seconds after the n-th failure, at most ``max_backoff``."""

    attempts: int = 3
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 10 ** 6:
            raise ValueError(f"a retry policy needs attempts from 1 to 1000000, not {self.attempts!r}")
        object.__setattr__(self, "backoff", _seconds(self.backoff, "backoff"))
        object.__setattr__(self, "max_backoff", _seconds(self.max_backoff, "max_backoff"))
        factor = self.factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 1e6:
            raise ValueError(f"factor must be a number from 1 to 1000000, not {factor!r}")
        object.__setattr__(self, "factor", float(factor))

    def delay(self, failures: int) -> float:
        try:
            return min(self.backoff * self.factor ** (failures - 1), self.max_backoff)
        except OverflowError:
            return self.max_backoff

    def to_json(self) -> dict[str, float]:
        return {"attempts": self.attempts, "backoff": self.backoff, "factor": self.factor,
                "max_backoff": self.max_backoff}

    @classmethod
    def from_json(cls, data: Any) -> "RetryPolicy":
        """The policy stored with a step; ValueError when the stored JSON is not one."""
        try:
            return cls(data["attempts"], data["backoff"], data["factor"], data["max_backoff"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a retry policy: {data!r} ({exc})") from None


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Step(Request):
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: RetryPolicy = DEFAULT_RETRY

    def __hash__(self) -> int:  # (its kwargs are a dict) hashable for asyncio.gather, which refuses it then
        try:
            return hash(self.fn)
        except TypeError:
            return 0

    def retry(self, attempts: int = DEFAULT_RETRY.attempts, backoff: float = DEFAULT_RETRY.backoff,
              factor: float = DEFAULT_RETRY.factor, max_backoff: float = DEFAULT_RETRY.max_backoff) -> "Step":
        """The same step with another retry policy: ``yield step(charge, order).retry(attempts=5)``."""
        return replace(self, policy=RetryPolicy(attempts, backoff, factor, max_backoff))


@dataclass(frozen=True)
class Checkpoint(Request):
    pass


def sleep(seconds: float | None = None, *, until: float | _dt.datetime | None = None) -> Sleep:
    """``yield sleep(60)`` or ``yield sleep(until=datetime)``: suspend the program, persisted, until then."""
    if (seconds is None) == (until is None):
        raise TypeError("sleep() takes seconds or until=, exactly one of them")
    if isinstance(until, _dt.datetime):
        if until.tzinfo is None:
            raise ValueError("sleep(until=...) needs a timezone-aware datetime (or seconds since the epoch)")
        until = until.timestamp()
    if until is not None:
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 <= until <= LATEST:
            raise ValueError(f"sleep(until=...) needs a time from the epoch to the end of year 9999, not {until!r}")
        return Sleep(None, float(until))
    return Sleep(_seconds(seconds, "sleep() seconds"), None)


def wait(signal: str, timeout: float | None = None) -> Wait:
    """``payload = yield wait("approved", timeout=3600)``: suspend until the signal arrives (its JSON
    payload is the value of the yield); after ``timeout`` seconds ``SignalTimeout`` is raised inside
    the program instead."""
    _signal_name(signal, "wait()")
    return Wait(signal, None if timeout is None else _seconds(timeout, "wait() timeout"))


def step(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Step:
    """``result = yield step(fn, *args, **kwargs)``: the worker runs ``fn`` (a module-level function),
    records its result once it returns, and sends it back; a committed step never runs again. A
    failing step is retried (``.retry(...)``, 3 attempts by default); when the attempts are used up
    its exception is raised inside the program."""
    if not callable(fn):
        raise TypeError(f"step() needs a function, not {type(fn).__name__!r}")
    return Step(fn, args, kwargs)


def checkpoint() -> Checkpoint:
    """``yield checkpoint()``: commit the program's state now."""
    return Checkpoint()


@serializable  # a program may hold it across a yield (a step in its ``except`` block)
class SignalTimeout(TimeoutError):
    """Raised inside a program whose ``wait(name, timeout=...)`` saw no signal in time."""

    def __init__(self, signal: str, timeout: float | None) -> None:
        super().__init__(f"no signal {signal!r} within {timeout:g} s" if timeout is not None else
                         f"no signal {signal!r}")
        self.signal = signal
        self.timeout = timeout


@serializable
class StepFailed(Exception):
    """Raised inside a program when a step's attempts are used up and its own exception could not be
    carried (stored and rebuilt): ``type_name`` and ``message`` describe it."""

    def __init__(self, function: str, type_name: str, message: str) -> None:
        super().__init__(f"step {function} failed: {type_name}: {message}")
        self.function = function
        self.type_name = type_name
        self.message = message


@dataclass(frozen=True)
class StepContext:
    """What a running step knows about itself (``runtime.current_step()``)."""

    execution_id: str
    index: int
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """``"<execution id>:<step index>:<attempt>"``: pass it to external services so a step that runs
        again after a crash (at-least-once) is not applied twice."""
        return f"{self.execution_id}:{self.index}:{self.attempt}"


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("durable_step", default=None)


def current_step() -> StepContext:
    """The step being run by this thread; raises RuntimeError outside a step."""
    context = _CURRENT.get()
    if context is None:
        raise RuntimeError("runtime.current_step() is only available inside a function run by step()")
    return context
