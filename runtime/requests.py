"""What a durable program yields to its runner: sleep, wait for a signal, run a step, checkpoint."""
from __future__ import annotations

import contextvars
import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable


class Request:
    """Base of the requests a durable program yields; anything else it yields is progress."""


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
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least 1 attempt")
        if self.backoff < 0 or self.factor < 1 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0 and factor >= 1")

    def delay(self, failures: int) -> float:
        return min(self.backoff * self.factor ** (failures - 1), self.max_backoff)

    def to_json(self) -> dict[str, float]:
        return {"attempts": self.attempts, "backoff": self.backoff, "factor": self.factor,
                "max_backoff": self.max_backoff}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RetryPolicy":
        return cls(int(data["attempts"]), float(data["backoff"]), float(data["factor"]), float(data["max_backoff"]))


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Step(Request):
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    policy: RetryPolicy = DEFAULT_RETRY

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
    if seconds is not None and seconds < 0:
        raise ValueError("sleep() needs seconds >= 0")
    return Sleep(None if seconds is None else float(seconds), None if until is None else float(until))


def wait(signal: str, timeout: float | None = None) -> Wait:
    """``payload = yield wait("approved", timeout=3600)``: suspend until the signal arrives (its JSON
    payload is the value of the yield); after ``timeout`` seconds ``SignalTimeout`` is raised inside
    the program instead."""
    if not isinstance(signal, str) or not signal:
        raise TypeError("wait() needs a signal name (a non-empty str)")
    if timeout is not None and timeout < 0:
        raise ValueError("wait() needs timeout >= 0")
    return Wait(signal, None if timeout is None else float(timeout))


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


class SignalTimeout(TimeoutError):
    """Raised inside a program whose ``wait(name, timeout=...)`` saw no signal in time."""

    def __init__(self, signal: str, timeout: float | None) -> None:
        super().__init__(f"no signal {signal!r} within {timeout:g} s" if timeout is not None else
                         f"no signal {signal!r}")
        self.signal = signal
        self.timeout = timeout


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
