"""snapshot()'s fast path: optimistic encoding with an exact retry, reused encoders, scalar dicts as maps.

``snapshot`` first encodes with ``Encoder(exact=False)``, which lets ints and strs through
unchecked; values msgpack cannot carry as themselves (ints beyond 64 bits, strs with lone
surrogates) make ``pack`` fail and the snapshot is encoded again exactly.  These tests put such
values everywhere the fast path skips a check and compare the restored generator's whole future
with the original's.
"""
from __future__ import annotations

import sys
import threading

import msgpack
import pytest

from harness import load_compiled
import runtime
from runtime import values as codec
from runtime.errors import UnserializableValueError

SOURCE = """
from runtime import durable

@durable
def holder(value):
    inner = [value]
    box = [inner, {"k": value, "inner": inner}, {value: 1} if isinstance(value, (int, str)) else {}, (value,), {value}, inner]
    it = iter(range(value, value + 3)) if type(value) is int else iter(range(3))
    x = yield box
    yield (x, next(it), box, box[0] is box[1]["inner"] is box[-1])
    yield (next(it), value)
"""

AWKWARD = [
    2**64,            # one past msgpack's unsigned range
    -(2**63) - 1,     # one below its signed range
    2**200,
    "lone \ud800 surrogate",
    "\udfff",
]
FINE = [2**64 - 1, -(2**63), 0, "ünïcödé", "plain", b"bytes", 1.5, None, True]


def _future(gen, first_send):
    out = [gen.send(first_send)]
    out.extend(gen)
    return out


@pytest.mark.parametrize("value", AWKWARD + FINE, ids=repr)
def test_values_beyond_msgpack_scalars_take_the_exact_path(value):
    mod = load_compiled(SOURCE, all_generators=False)
    reference = mod.holder(value)
    original = mod.holder(value)
    assert next(reference) == next(original)
    restored = runtime.restore(runtime.snapshot(original))
    runtime.detach(original)
    assert _future(restored, "sent") == _future(reference, "sent")


class _NoHooks:
    """Codec hooks for plain data only: no class, custom value or instance is known."""

    def class_ref(self, cls):
        return None

    def custom(self, obj):
        return None

    def find_global(self, obj):
        return None

    def plain_instances(self, cls):
        return False

    def plain_layout(self, layout):
        return None

    def finished(self):
        pass


def test_optimistic_encoder_leaves_the_checks_to_msgpack():
    fast = codec.Encoder(_NoHooks(), exact=False)
    packed = fast.encode([2**70], "local 'x'")
    with pytest.raises(OverflowError):
        msgpack.packb(packed, use_bin_type=True)
    packed = fast.encode({"\ud800": 1}, "local 'y'")
    with pytest.raises(UnicodeEncodeError):
        msgpack.packb(packed, use_bin_type=True)
    exact = codec.Encoder(_NoHooks())
    for value in ([2**70], {"\ud800": 1}):
        data = msgpack.packb(exact.encode(value, "local 'v'"), use_bin_type=True)
        decoded = codec.Decoder(_NoHooks()).decode(msgpack.unpackb(data, raw=False, strict_map_key=False))
        assert decoded == value


def test_str_keyed_scalar_dicts_travel_as_maps_and_others_as_tagged_arrays():
    scalars = {"a": 1, "b": "b", "c": 1.5, "d": True, "e": None, "f": b"k"}
    other_keys = {"a": 1, 2: "b", None: 1.5, b"k": True}  # maps have str keys only (see values.unpack)
    nested = {"a": [1]}
    fast = codec.Encoder(_NoHooks(), exact=False)
    assert fast.encode(scalars, "local 'd'") is scalars
    assert fast.encode(other_keys, "local 'o'")[0] == 3
    assert fast.encode(nested, "local 'n'")[0] == 3
    assert codec.Encoder(_NoHooks()).encode(scalars, "local 'd'")[0] == 3  # exact mode checks each item instead
    for exact in (True, False):
        enc = codec.Encoder(_NoHooks(), exact=exact)
        packed = [enc.encode(scalars, "d"), enc.encode(other_keys, "o"), enc.encode(nested, "n")]
        data = msgpack.packb(packed, use_bin_type=True)
        dec = codec.Decoder(_NoHooks())
        decoded = [dec.decode(p) for p in msgpack.unpackb(data, raw=False, strict_map_key=True)]
        assert decoded == [scalars, other_keys, nested]


def test_a_failed_snapshot_leaves_no_state_behind():
    mod = load_compiled("""
    import threading
    from runtime import durable

    @durable
    def bad():
        lock = threading.Lock()
        shared = [1, 2]
        yield shared
        yield lock, shared  # both live at the first yield

    @durable
    def good():
        shared = [1, 2]
        pair = (shared, shared)
        yield pair
        yield pair[0] is pair[1]
    """, all_generators=False)
    failing = mod.bad()
    next(failing)
    with pytest.raises(UnserializableValueError):
        runtime.snapshot(failing)
    g = mod.good()
    next(g)
    restored = runtime.restore(runtime.snapshot(g))
    assert next(restored) is True  # sharing kept: the reused encoder's memo started empty


def test_snapshots_in_many_threads_at_once():
    mod = load_compiled(SOURCE, all_generators=False)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(seed: int) -> None:
        try:
            start.wait()
            for i in range(300):
                value = seed * 1000 + i if i % 7 else 2**64 + i
                reference = mod.holder(value)
                original = mod.holder(value)
                next(reference)
                next(original)
                restored = runtime.restore(runtime.snapshot(original))
                runtime.detach(original)
                assert _future(restored, i) == _future(reference, i)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, also in mid-snapshot
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]
