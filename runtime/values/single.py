"""Single values to bytes and back (step arguments and results, return values, errors): the snapshot
value encoding with its kinds, allow rules, limits and signing."""
from __future__ import annotations

from typing import Any

import msgpack

from ..errors import CorruptSnapshotError
from . import settings, signing
from .decoder import Decoder
from .encoder import Encoder
from .hooks import HOOKS
from .unpack import unpack_checked

MAGIC = b"DV"
FORMAT = 1


def dump_value(value: Any, label: str = "value") -> bytes:
    """``value`` (anything a snapshot can carry: data, allowed classes, exceptions, ...) as bytes.
    Raises ``UnserializableValueError`` naming the path to what cannot be carried."""
    data: bytes = msgpack.packb([MAGIC, FORMAT, Encoder(HOOKS).encode(value, label)], use_bin_type=True)
    key = settings.current.key
    return data if key is None else signing.sign(data, key)


def load_value(data: bytes) -> Any:
    """The value ``dump_value`` wrote; raises a ``SnapshotError`` subclass for anything else."""
    envelope, _ = unpack_checked(data, "value")
    if not (isinstance(envelope, list) and len(envelope) == 3 and envelope[0] == MAGIC and envelope[1] == FORMAT):
        raise CorruptSnapshotError("not a valid durable value: missing the DV header or an unknown format")
    return Decoder(HOOKS, max_depth=settings.current.max_depth, input_size=len(data)).decode(envelope[2])
