"""Signed snapshots (HMAC-SHA256, key rotation) and the decoding limits set with runtime.configure."""
from __future__ import annotations

import msgpack
import pytest

from harness import load_compiled
import runtime
from runtime.errors import CorruptSnapshotError, SignatureError

SOURCE = """
from runtime import durable

@durable
def gen(n):
    data = list(range(n))
    nested = [[[[1]]]]
    for i in range(3):
        yield i, len(data), nested
"""

KEY = b"k" * 32
OTHER = b"o" * 32


@pytest.fixture
def settings():
    previous = runtime.configure()
    yield
    runtime.restore_settings(previous)


def _snapshot(n: int = 5) -> bytes:
    mod = load_compiled(SOURCE, all_generators=False)
    g = mod.gen(n)
    next(g)
    data = runtime.snapshot(g)
    runtime.detach(g)
    return data


def test_signed_snapshot_restores_with_the_key(settings):
    runtime.configure(signing_key=KEY)
    data = _snapshot()
    assert data.startswith(b"\x94\xc4\x03DGS")
    assert list(runtime.restore(data)) == [(1, 5, [[[[1]]]]), (2, 5, [[[[1]]]])]
    assert runtime.inspect_snapshot(data).signature == "verified"


def test_with_a_key_unsigned_and_tampered_snapshots_are_refused(settings):
    unsigned = _snapshot()
    runtime.configure(signing_key=KEY)
    with pytest.raises(SignatureError, match="not signed"):
        runtime.restore(unsigned)
    signed = _snapshot()
    outer = msgpack.unpackb(signed)
    payload = bytearray(outer[3])
    payload[-1] ^= 1  # the last value changes: still a well-formed snapshot
    tampered = msgpack.packb([outer[0], outer[1], outer[2], bytes(payload)])
    with pytest.raises(SignatureError, match="does not match"):
        runtime.restore(tampered)
    # a signature made with another key
    runtime.configure(signing_key=OTHER)
    with pytest.raises(SignatureError):
        runtime.restore(signed)


def test_key_rotation_accepts_old_keys_and_signs_with_the_new_one(settings):
    runtime.configure(signing_key=KEY)
    old = _snapshot()
    runtime.configure(signing_key=OTHER, accepted_keys=[KEY])
    assert next(runtime.restore(old)) == (1, 5, [[[[1]]]])
    new = _snapshot()
    runtime.configure(signing_key=OTHER, accepted_keys=[])
    assert next(runtime.restore(new)) == (1, 5, [[[[1]]]])
    with pytest.raises(SignatureError):
        runtime.restore(old)


def test_without_a_key_signed_snapshots_restore_unverified(settings):
    runtime.configure(signing_key=KEY)
    data = _snapshot()
    runtime.configure(signing_key=None)
    assert next(runtime.restore(data)) == (1, 5, [[[[1]]]])
    assert runtime.inspect_snapshot(data).signature.startswith("signed, not verified")


def test_bad_keys_and_settings_are_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        runtime.configure(signing_key=b"short")
    with pytest.raises(ValueError):
        runtime.configure(max_depth=0)
    with pytest.raises(ValueError):
        runtime.configure(max_bytes="big")
    with pytest.raises(TypeError):
        runtime.configure(accepted_keys=KEY)


def test_size_limit(settings):
    data = _snapshot(100)
    runtime.configure(max_bytes=len(data) - 1)
    with pytest.raises(CorruptSnapshotError, match="more than the limit"):
        runtime.restore(data)
    runtime.configure(max_bytes=len(data))
    assert next(runtime.restore(data))[1] == 100


def test_container_length_limit(settings):
    data = _snapshot(100)
    runtime.configure(max_length=50)
    with pytest.raises(CorruptSnapshotError):
        runtime.restore(data)
    runtime.configure(max_length=101)  # the list node holds its tag and 100 items
    assert next(runtime.restore(data))[1] == 100


def test_depth_limit(settings):
    data = _snapshot()
    runtime.configure(max_depth=3)
    with pytest.raises(CorruptSnapshotError, match="nested deeper than the limit"):
        runtime.restore(data)
    runtime.configure(max_depth=4)
    assert next(runtime.restore(data))[2] == [[[[1]]]]


def test_deeply_nested_crafted_data_is_corrupt_not_a_crash():
    deep: list = [1, 7]
    for _ in range(5000):
        deep = [1, deep]
    blob = msgpack.packb([b"DG", 1, ["m:f", b"x" * 8, 0, None, "", [], None]])
    with pytest.raises(runtime.SnapshotError):
        runtime.restore(blob)
    from runtime.values import Decoder
    from runtime.values import HOOKS as _HOOKS
    with pytest.raises(CorruptSnapshotError):
        Decoder(_HOOKS).decode(deep)
