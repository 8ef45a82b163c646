"""Seals of store rows: what a worker reads back and acts on, signed (a key is configured) or checksummed.

A seal covers a list of parts (ids, names, JSON values as canonical text, snapshot and value bytes,
counters) packed with msgpack under a domain name, so no two kinds of row can share a seal:

* ``K`` + HMAC-SHA256 when a signing key is configured: a row changed, forged, copied from another
  execution or put back from an earlier point of its history (the parts bind it there) is refused
  with ``SignatureError``;
* ``C`` + BLAKE2b-128 without a key: detects corruption (a flipped bit in a stored snapshot), not
  tampering — anyone can compute it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Sequence

import msgpack

from ..errors import CorruptSnapshotError, SignatureError
from . import settings

_DOMAIN = b"durable-generators store row v1\x00"
_KEYED = b"K"
_CHECKSUM = b"C"


def canonical(value: Any) -> str:
    """A JSON value as the one text its seal covers (as stored, then read back, it gives the same text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _payload(domain: str, parts: Sequence[Any]) -> bytes:
    return _DOMAIN + msgpack.packb([domain, *parts], use_bin_type=True)


def seal(domain: str, parts: Sequence[Any]) -> bytes:
    """The seal of ``parts`` (str, bytes, int, float, bool or None each) for a row of kind ``domain``."""
    payload = _payload(domain, parts)
    key = settings.current.key
    if key is not None:
        return _KEYED + hmac.new(key, payload, hashlib.sha256).digest()
    return _CHECKSUM + hashlib.blake2b(payload, digest_size=16).digest()


def verify(stored: bytes | None, domain: str, parts: Sequence[Any], what: str) -> None:
    """Check a row's seal; ``what`` names the row in the error.

    With a key configured the row must carry a signature one of the keys made (``SignatureError``
    otherwise: unsigned, changed, or signed with a key not configured). Without a key a checksum must
    match (``CorruptSnapshotError``: the row was damaged); a signed row is accepted unverified, and a
    row written before seals existed (None) is accepted as it is.
    """
    keys = settings.current.verify_keys
    payload = _payload(domain, parts)
    if keys:
        if stored is None or stored[:1] != _KEYED:
            raise SignatureError(f"{what} is not signed, and a signing key is configured")
        if any(hmac.compare_digest(stored[1:], hmac.new(key, payload, hashlib.sha256).digest()) for key in keys):
            return
        raise SignatureError(f"{what} does not match its signature: it was changed outside durable (or put back "
                             "from an earlier point of its run), or signed with a key that is not configured")
    if stored is None or stored[:1] == _KEYED:
        return
    if stored[:1] != _CHECKSUM or not hmac.compare_digest(stored[1:],
                                                          hashlib.blake2b(payload, digest_size=16).digest()):
        raise CorruptSnapshotError(f"{what} is damaged: its checksum does not match what it holds")
