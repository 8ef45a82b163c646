"""Durable generators runtime: snapshot, restore and detach compiled generators (depends on msgpack only)."""
from __future__ import annotations

from .allow import allow_modules, disallow_modules, serializable
from .decorator import durable
from .errors import (CorruptSnapshotError, DurableCompileError, GeneratorStateError, IncompatibleCodeError,
                     NotAllowedError, NotDurableError, SignatureError, SnapshotError, UnserializableValueError)
from .snapshot import detach, restore, snapshot

__all__ = [
    "durable", "snapshot", "restore", "detach",
    "serializable", "allow_modules", "disallow_modules",
    "SnapshotError", "NotDurableError", "GeneratorStateError", "UnserializableValueError",
    "IncompatibleCodeError", "NotAllowedError", "SignatureError", "CorruptSnapshotError", "DurableCompileError",
]
