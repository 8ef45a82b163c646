"""Durable generators runtime: snapshot, restore and detach compiled generators (depends on msgpack only)."""
from __future__ import annotations

from . import iterator_kinds  # noqa: F401  (registers the map/filter/itertools value kinds)
from .decorator import durable
from .errors import (CorruptSnapshotError, DurableCompileError, GeneratorStateError, IncompatibleCodeError,
                     NotDurableError, SnapshotError, UnserializableValueError)
from .snapshot import detach, restore, snapshot

__all__ = [
    "durable", "snapshot", "restore", "detach",
    "SnapshotError", "NotDurableError", "GeneratorStateError", "UnserializableValueError",
    "IncompatibleCodeError", "CorruptSnapshotError", "DurableCompileError",
]
