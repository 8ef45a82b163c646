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
    shrink towards no signals sent at times, no failures, the first crash point, seed 0."""
    names = dict(signals or {})

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
