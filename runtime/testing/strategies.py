"""Hypothesis strategies for simulation schedules: signal order and timing, step failures and crash points,
shrinking to a minimal schedule (needs ``hypothesis``: ``pip install 'durable-generators[testing]'``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - a runtime-only install
    raise ImportError("runtime.testing.strategies needs Hypothesis: pip install 'durable-generators[testing]'") \
        from exc

from .crashes import Report, assert_survives_crashes
from .script import Signal


@dataclass(frozen=True)
class Schedule:
    """One way the world can go for a run: the ``signals`` sent (in order, each when the program waits for
    it or at a virtual time), the step attempts that fail, the crash points tried (indices into the run's
    crash points, wrapped around), and the ``seed``. Shown by Hypothesis when a check fails."""

    signals: tuple[Signal, ...] = ()
    failures: Mapping[Any, tuple[int, ...]] = field(default_factory=dict)
    crash_points: tuple[int, ...] = (0,)
    seed: int = 0

    def check(self, fn: Callable[..., Any], /, *args: Any, **options: Any) -> Report:
        """``assert_survives_crashes(fn, *args, ...)`` under this schedule (``options`` add steps=, spies=,
        program keyword arguments, ...)."""
        return assert_survives_crashes(fn, *args, signals=list(self.signals), failures=dict(self.failures),
                                       points=list(self.crash_points), seed=self.seed, **options)


def schedules(signals: Mapping[str, st.SearchStrategy[Any]] | None = None, *, steps: Sequence[Any] = (),
              max_signals: int = 3, max_delay: float = 3 * 86400.0, max_failures: int = 2,
              max_crash_points: int = 3) -> st.SearchStrategy[Schedule]:
    """Schedules for a program that waits for the signals named in ``signals`` (each with a strategy of
    payloads) and runs the step functions ``steps``: up to ``max_signals`` signals per name, each sent when
    the program waits for it or after a delay of up to ``max_delay`` virtual seconds; up to ``max_failures``
    failing attempts per step function (attempts 1, 2, ...); up to ``max_crash_points`` crash points. They
    shrink towards fewer signals, each sent when the program waits for it, no failures, the first crash
    point and seed 0. Arguments are checked at once (TypeError/ValueError naming the argument)."""
    names = _checked(signals, steps, max_signals=max_signals, max_failures=max_failures,
                     max_crash_points=max_crash_points, max_delay=max_delay)

    def one_signal(name: str) -> st.SearchStrategy[Signal]:
        at = st.one_of(st.none(), st.floats(min_value=0, max_value=max_delay, allow_nan=False))
        return st.builds(Signal, st.just(name), names[name], at)

    signal_lists = [st.lists(one_signal(name), max_size=max_signals) for name in names]
    all_signals = st.tuples(*signal_lists).map(lambda lists: tuple(s for group in lists for s in group)) \
        if signal_lists else st.just(())
    failing = st.fixed_dictionaries({step: st.integers(0, max_failures).map(lambda n: tuple(range(1, n + 1)))
                                     for step in steps})
    crash = st.lists(st.integers(min_value=0, max_value=10 ** 6), min_size=1, max_size=max_crash_points,
                     unique=True).map(tuple)
    return st.builds(Schedule, all_signals, failing.map(lambda d: {k: v for k, v in d.items() if v}), crash,
                     st.integers(min_value=0, max_value=2 ** 32 - 1))


def _checked(signals: Any, steps: Any, **bounds: float) -> dict[str, st.SearchStrategy[Any]]:
    """``signals`` as a dict of name to payload strategy, everything given to ``schedules`` checked."""
    if signals is not None and not isinstance(signals, Mapping):
        raise TypeError(f"schedules(signals=...) takes a mapping of signal name to a strategy of payloads, such as "
                        f"{{'approval': st.booleans()}}, not {signals!r}")
    names = dict(signals or {})
    for name, payloads in names.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"schedules(signals=...): a signal name must be a non-empty str, not {name!r}")
        if not isinstance(payloads, st.SearchStrategy):
            raise TypeError(f"schedules(signals=...): the payloads of signal {name!r} must be a Hypothesis strategy "
                            f"(st.just({payloads!r}) for a fixed one), not {payloads!r}")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"schedules(steps=...) takes a list of step functions, not {steps!r}")
    for item in steps:
        if not callable(item) and not isinstance(item, str):
            raise TypeError(f"schedules(steps=...): {item!r} is not a step function (or its name)")
    for what, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"schedules({what}=...) must be a number >= 0, not {value!r}")
    return names
