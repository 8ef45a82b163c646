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
    from .snapshot import _HOOKS

    limits = settings.current
    if len(data) > limits.max_bytes:
        raise CorruptSnapshotError(f"value is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    payload = signing.unwrap(data, limits.verify_keys)[0] if (
        limits.signing_key is not None or signing.is_signed(data)) else data
    n = limits.max_length
    try:
        envelope = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True, max_str_len=n,
                                   max_bin_len=n, max_array_len=n, max_map_len=n)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise CorruptSnapshotError(f"not a valid durable value: {type(exc).__name__}: {exc}") from None
    if not (isinstance(envelope, list) and len(envelope) == 3 and envelope[0] == MAGIC and envelope[1] == FORMAT):
        raise CorruptSnapshotError("not a valid durable value: missing the DV header or an unknown format")
    return Decoder(_HOOKS, max_depth=limits.max_depth).decode(envelope[2])
