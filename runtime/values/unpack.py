"""Outside bytes to msgpack structures: the size limit, the signature check and msgpack's own limits."""
from __future__ import annotations

from typing import Any

import msgpack

from ..errors import CorruptSnapshotError
from . import settings, signing
from .decoder import Pairs


def unpack_checked(data: bytes, what: str = "snapshot") -> tuple[Any, signing.Status]:
    """``data`` unpacked with the configured limits, after its signature is checked (a signing key
    is configured, or the data is signed), and its signature status. Raises ``SnapshotError``s."""
    limits = settings.current
    if len(data) > limits.max_bytes:
        raise CorruptSnapshotError(f"{what} is {len(data)} bytes, more than the limit of {limits.max_bytes} "
                                   "(runtime.configure(max_bytes=...))")
    keys = limits.verify_keys
    if keys or signing.is_signed(data):
        payload, status = signing.unwrap(data, keys)
    else:
        payload, status = data, "unsigned"
    n = limits.max_length
    options = dict(raw=False, use_list=True, max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n)
    try:
        # Map keys must be str or bytes, whose hashes are randomized: msgpack builds maps into dicts
        # itself, and keys a crafted input makes collide (ints k * (2**61 - 1)) would cost it
        # quadratic time. Snapshots written before this rule may hold maps with int keys: those are
        # read as lists of pairs, which the decoder checks before it hashes them.
        unpacked = msgpack.unpackb(payload, strict_map_key=True, **options)
    except ValueError as exc:
        if "map key" not in str(exc):
            raise CorruptSnapshotError(f"not a valid durable {what}: {type(exc).__name__}: {exc}") from None
        unpacked = _unpack_pairs(payload, options, what)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise CorruptSnapshotError(f"not a valid durable {what}: {type(exc).__name__}: {exc}") from None
    return unpacked, status


def _unpack_pairs(payload: bytes, options: dict[str, Any], what: str) -> Any:
    try:
        return msgpack.unpackb(payload, strict_map_key=False, object_pairs_hook=Pairs, **options)
    except Exception as exc:  # noqa: BLE001 - as above
        raise CorruptSnapshotError(f"not a valid durable {what}: {type(exc).__name__}: {exc}") from None
