"""Durable generators runtime: snapshot, restore and detach compiled generators (depends on msgpack only)."""
from __future__ import annotations

# imported for their side effect: they register the value kinds snapshots carry
from . import iterator_kinds, objects, stdlib_kinds  # noqa: F401
from .allow import allow_modules, disallow_modules, serializable
from .decorator import durable
from .errors import (CorruptSnapshotError, DurableCompileError, GeneratorStateError, IncompatibleCodeError,
                     NotAllowedError, NotDurableError, SignatureError, SnapshotError, UnserializableValueError)
from .inspection import SnapshotInfo, inspect_snapshot
from .kinds import register_codec
from .settings import Settings, configure, restore_settings
from .snapshot import detach, restore, snapshot

__all__ = [
    "durable", "snapshot", "restore", "detach", "inspect_snapshot", "SnapshotInfo",
    "register_codec", "serializable", "allow_modules", "disallow_modules",
    "configure", "restore_settings", "Settings",
    "SnapshotError", "NotDurableError", "GeneratorStateError", "UnserializableValueError",
    "IncompatibleCodeError", "CorruptSnapshotError", "NotAllowedError", "SignatureError", "DurableCompileError",
]
