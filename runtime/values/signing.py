"""Optional HMAC-SHA256 signatures around snapshots, checked before anything is decoded.

A signed snapshot is the msgpack array ``[b"DGS", 1, mac, payload]`` where ``payload`` is the
unsigned snapshot's bytes and ``mac`` is HMAC-SHA256 over a domain prefix and the payload.
"""
from __future__ import annotations

from typing import Literal

import msgpack

from ..errors import CorruptSnapshotError, SignatureError

SIGNED_MAGIC = b"DGS"
SIGNED_FORMAT = 1
_DOMAIN = b"durable-generators snapshot v1\x00"
# fixarray(4) + bin8(3) "DGS": how every signed snapshot starts
_PREFIX = b"\x94\xc4\x03DGS"

Status = Literal["unsigned", "verified", "signed, not verified (no key configured)"]


def mac(key: bytes, payload: bytes) -> bytes:
    import hashlib
    import hmac  # imported when signing is used, not with the runtime

    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def sign(payload: bytes, key: bytes) -> bytes:
    return msgpack.packb([SIGNED_MAGIC, SIGNED_FORMAT, mac(key, payload), payload], use_bin_type=True)


def is_signed(data: bytes) -> bool:
    return data.startswith(_PREFIX)


def unwrap(data: bytes, keys: tuple[bytes, ...]) -> tuple[bytes, Status]:
    """The unsigned snapshot inside ``data`` and how it was checked.

    With ``keys``, only a snapshot signed with one of them passes; without, a signed snapshot is
    unwrapped unchecked and an unsigned one is returned as it is.
    """
    if not is_signed(data):
        if keys:
            raise SignatureError("snapshot is not signed, and restore requires a signature (a signing key is "
                                 "configured)")
        return data, "unsigned"
    try:
        outer = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise CorruptSnapshotError(f"not a valid signed snapshot: {type(exc).__name__}: {exc}") from None
    if not (type(outer) is list and len(outer) == 4 and outer[0] == SIGNED_MAGIC and type(outer[2]) is bytes
            and type(outer[3]) is bytes):
        raise CorruptSnapshotError("not a valid signed snapshot: malformed signature envelope")
    if outer[1] != SIGNED_FORMAT:
        raise CorruptSnapshotError(f"signed snapshot format {outer[1]!r} is not supported (expected {SIGNED_FORMAT})")
    signature, payload = outer[2], outer[3]
    if not keys:
        return payload, "signed, not verified (no key configured)"
    import hmac

    if any(hmac.compare_digest(signature, mac(key, payload)) for key in keys):
        return payload, "verified"
    raise SignatureError("snapshot signature does not match: the snapshot was changed, or signed with a key "
                         "that is not configured")
