"""The test kit: run durable programs in a simulation and prove they survive a crash at every point.

Its parts load when first used (``python -m runtime.testing.replay``, the fresh interpreter a check starts,
needs none of them)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .crashes import DEFAULTS, Report, assert_survives_crashes
    from .errors import InjectedFailure, SimulationError, SurvivalError
    from .findings import Finding
    from .script import Signal
    from .simulation import Outcome, Simulation, SimulationWarning
    from .spies import Call, spy
    from .upgrade import Upgrade

_WHERE = {
    "Simulation": "simulation", "Outcome": "simulation", "SimulationWarning": "simulation", "Signal": "script",
    "Upgrade": "upgrade", "assert_survives_crashes": "crashes", "Report": "crashes", "DEFAULTS": "crashes",
    "Finding": "findings", "spy": "spies", "Call": "spies", "SimulationError": "errors", "SurvivalError": "errors",
    "InjectedFailure": "errors",
}

__all__ = [
    "Call", "DEFAULTS", "Finding", "InjectedFailure", "Outcome", "Report", "Signal", "Simulation", "SimulationError",
    "SimulationWarning", "SurvivalError", "Upgrade", "assert_survives_crashes", "spy",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
