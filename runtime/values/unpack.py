"""Outside bytes to msgpack structures: the size limit, the signature check and msgpack's own limits."""
from __future__ import annotations

from typing import Any

import msgpack

from ..errors import CorruptSnapshotError
from . import settings, signing


def unpack_checked(data: bytes, what: str = "snapshot") -> tuple[Any, signing.Status]:
    """``data`` unpacked with the configured limits, after its signature is checked (a signing key
    is configured, or the data is signed), and its signature status. Raises ``SnapshotError``s."""
    limits = settings.current
    if len(data) > limits.max_bytes:
        raise CorruptSnapshotError(f"{what} is {len(data)} bytes, more than the limit of {limits.max_bytes} "
                                   "(runtime.configure(max_bytes=...))")
    if limits.signing_key is not None or signing.is_signed(data):
        payload, status = signing.unwrap(data, limits.verify_keys)
    else:
        payload, status = data, "unsigned"
    n = limits.max_length
    try:
        unpacked = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True, max_str_len=n,
                                   max_bin_len=n, max_array_len=n, max_map_len=n)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise CorruptSnapshotError(f"not a valid durable {what}: {type(exc).__name__}: {exc}") from None
    return unpacked, status
