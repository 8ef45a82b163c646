"""Durable generators runtime: snapshot, restore and detach compiled generators (depends on msgpack only)."""
from __future__ import annotations

from .compat import PointMismatchError
from .decorator import durable
from .errors import (CorruptSnapshotError, DurableCompileError, GeneratorStateError, IncompatibleCodeError,
                     NotAllowedError, NotDurableError, SignatureError, SnapshotError, SnapshotFormatTooNewError,
                     UnserializableValueError)
from .migrations import Cancel, MigrationCancelled, MigrationError, OldFrame, Resume, migration
from .programs.requests import (RetryPolicy, SignalTimeout, StepContext, StepFailed, checkpoint, current_step, sleep,
                                step, suspend, wait)
from .points import point
from .programs.combinators import first, gather, race
from .snapshot import detach, restore, snapshot
from .values import (Settings, allow_modules, configure, disallow_modules, register_codec, restore_settings,
                     serializable)

__all__ = [
    "durable", "point", "snapshot", "restore", "detach", "inspect_snapshot", "SnapshotInfo",
    "register_codec", "serializable", "allow_modules", "disallow_modules",
    "configure", "restore_settings", "Settings",
    "sleep", "wait", "step", "checkpoint", "suspend", "current_step", "RetryPolicy", "StepContext", "SignalTimeout",
    "StepFailed", "gather", "race", "first",
    "SnapshotError", "NotDurableError", "GeneratorStateError", "UnserializableValueError",
    "migration", "OldFrame", "Resume", "Cancel", "MigrationError", "MigrationCancelled",
    "IncompatibleCodeError", "PointMismatchError", "CorruptSnapshotError", "SnapshotFormatTooNewError",
    "NotAllowedError", "SignatureError",
    "DurableCompileError",
]


def __getattr__(name: str) -> object:
    # the inspector is only needed by tools: load it when it is first asked for
    if name in ("inspect_snapshot", "SnapshotInfo"):
        from .values import inspection
        return getattr(inspection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
