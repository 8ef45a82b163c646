"""Single values to bytes and back, with the snapshot codec (same kinds, allow-list, limits, signing)."""
from __future__ import annotations

from typing import Any

import msgpack

from . import settings, signing
from .codec import Decoder, Encoder
from .errors import CorruptSnapshotError

MAGIC = b"DV"
FORMAT = 1


def dump_value(value: Any, label: str = "value") -> bytes:
    """``value`` (anything a snapshot can carry: data, allowed classes, exceptions, ...) as bytes.
    Raises ``UnserializableValueError`` naming the path to what cannot be carried."""
    from .snapshot import _HOOKS

    data: bytes = msgpack.packb([MAGIC, FORMAT, Encoder(_HOOKS).encode(value, label)], use_bin_type=True)
    key = settings.current.signing_key
    return data if key is None else signing.sign(data, key)


def load_value(data: bytes) -> Any:
    """The value ``dump_value`` wrote; raises a ``SnapshotError`` subclass for anything else."""
    from .snapshot import _HOOKS, unpack_checked

    envelope, _ = unpack_checked(data, "value")
    if not (isinstance(envelope, list) and len(envelope) == 3 and envelope[0] == MAGIC and envelope[1] == FORMAT):
        raise CorruptSnapshotError("not a valid durable value: missing the DV header or an unknown format")
    return Decoder(_HOOKS, max_depth=settings.current.max_depth).decode(envelope[2])
