"""The test kit's pytest plugin (registered through the ``pytest11`` entry point): the ``durable_sim`` fixture
and the ``--durable-crash-all`` option."""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:
    from . import Outcome, Report, Simulation


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("durable", "durable generators test kit")
    group.addoption("--durable-crash-all", action="store_true", default=False,
                    help="assert_survives_crashes tries every crash point instead of a sample")
    group.addoption("--durable-fresh", type=int, default=None, metavar="N",
                    help="how many crash points assert_survives_crashes also replays in a fresh interpreter "
                         "(default 1)")
    group.addoption("--durable-seed", type=int, default=None, metavar="SEED",
                    help="the seed of durable_sim (default: one derived from each test's name)")


_SAVED = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    crash_all = config.getoption("durable_crash_all", default=False)
    fresh = config.getoption("durable_fresh", default=None)
    if crash_all or fresh is not None:
        from .crashes import DEFAULTS  # the kit loads only when asked for

        config.stash[_SAVED] = dict(DEFAULTS)
        if crash_all:
            DEFAULTS["points"] = "all"
        if fresh is not None:
            DEFAULTS["fresh"] = fresh


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_SAVED, None)
    if saved is not None:  # a session run inside another (pytester) must not leave its options behind
        from .crashes import DEFAULTS

        DEFAULTS.update(saved)


class DurableSim:
    """What the ``durable_sim`` fixture gives a test: the kit with a seed of its own (stable per test, or
    ``--durable-seed``), shown in every failure report."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.last: Simulation | None = None

    def run(self, fn: Callable[..., Any], /, *args: Any, steps: Any = None, failures: Any = None,
            signals: Any = None, upgrade: Any = None, max_requests: int = 10_000, **kwargs: Any) -> "Outcome":
        """Run ``fn(*args, **kwargs)`` in a ``Simulation`` and return its Outcome (``.last`` keeps the simulation:
        its events and store)."""
        from .simulation import Simulation

        self.last = Simulation(steps=steps, failures=failures, signals=signals, seed=self.seed,
                               max_requests=max_requests, upgrade=upgrade)
        return self.last.run(fn, *args, **kwargs)

    def assert_survives_crashes(self, fn: Callable[..., Any], /, *args: Any, **options: Any) -> "Report":
        """``runtime.testing.assert_survives_crashes`` with this test's seed."""
        from .crashes import assert_survives_crashes

        options.setdefault("seed", self.seed)
        return assert_survives_crashes(fn, *args, **options)


@pytest.fixture
def durable_sim(request: pytest.FixtureRequest) -> DurableSim:
    """The durable test kit, seeded for this test (see ``DurableSim``)."""
    seed = request.config.getoption("durable_seed", default=None)
    if seed is None:
        seed = zlib.crc32(request.node.nodeid.encode("utf-8"))
    return DurableSim(seed)
