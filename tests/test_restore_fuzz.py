"""Fuzzing restore: damaged, truncated, spliced and hand-mutated snapshots.

Whatever bytes restore is given, it either returns a real generator or raises a ``SnapshotError``
(a subclass, usually ``CorruptSnapshotError``); no other exception type escapes and nothing hangs.
The inputs are random bytes, byte-level mutations of real snapshots (bit flips, truncations,
insertions, deletions, splices of two snapshots) and msgpack-level mutations (the envelope is
decoded, nested items are replaced, duplicated, deleted, nudged or grafted, and it is repacked).

``DG_FUZZ_EXAMPLES=5000 python -m pytest tests/test_restore_fuzz.py`` for a longer run.
"""
from __future__ import annotations

import inspect
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from crafting import FIRST_VALUE_SLOT
from harness import load_compiled, unload
from runtime import SnapshotError, restore, snapshot

EXAMPLES = int(os.environ.get("DG_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, derandomize=not os.environ.get("DG_FUZZ_EXAMPLES"),
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TIMEOUT = 10  # seconds: a single restore taking longer than that is a hang

SOURCE = """
    import sys
    from runtime import durable

    class Point:
        def __init__(self, x, y):
            self.x = x
            self.y = y

    class AppError(Exception):
        pass

    @durable
    def containers(n):
        shared = [1, 2.5, "three"]
        data = {"a": shared, "b": (shared, shared), "c": {1, 2}, "d": frozenset({3}), 4: b"raw",
                "big": 2 ** 100, "neg": -(2 ** 70), "s": "lone \\ud800", "none": None, "t": True}
        cycle = [data, shared]
        cycle.append(cycle)
        data["self"] = data
        point = Point(1, shared)
        point.me = point
        total = 0
        for i in range(n):
            total += yield (i, len(cycle), point.x)
        return total, data, cycle

    @durable
    def failing(n):
        try:
            try:
                raise ValueError("inner", n)
            except ValueError as inner:
                raise AppError("outer", [inner]) from inner
        except AppError as err:
            err.extra = {"n": n}
            got = yield str(err)
            try:
                raise KeyError(got)
            except KeyError:
                saved = sys.exc_info()[1]
                yield saved
                yield err
        return n

    @durable
    def iterators(n):
        items = list(range(n))
        it = iter(range(3, 3 + 2 * n, 2))
        en = enumerate("abcdef")
        z = zip([1, 2, 3, 4], (4, 5, 6, 7))
        rev = reversed(items)
        d = iter({"k": 1, "j": 2}.items())
        b = iter(b"bytes")
        for x in items:
            yield x, next(it), next(en), next(z), next(rev)
        for key, value in d:
            yield key, value, next(b)

    @durable
    def leaf(k):
        for i in range(k):
            yield i
        return k

    @durable
    def middle(k):
        first = yield from leaf(k)
        second = yield from leaf(k + 1)
        return first + second

    @durable
    def top(k):
        total = yield from middle(k)
        yield total
        return total

    @durable
    def holder(k):
        held = leaf(k)
        next(held)
        done = leaf(0)
        for _ in done:
            pass
        x = yield held
        yield x, next(held)
"""

STARTS = ["containers(4)", "failing(3)", "iterators(4)", "top(2)", "holder(3)"]


@pytest.fixture(scope="module")
def snapshots() -> Iterator[list[bytes]]:
    module = load_compiled(SOURCE, all_generators=False, tag="fuzz")
    blobs: list[bytes] = []
    for start in STARTS:
        gen = eval(start, vars(module))
        blobs.append(snapshot(gen))  # just created
        for step in range(5):
            try:
                gen.send(step or None)
            except StopIteration:
                break
            blobs.append(snapshot(gen))
        runtime.detach(gen)
    for blob in blobs:  # every seed restores (so the fuzz starts from valid input)
        runtime.detach(restore(blob))
    yield blobs
    unload(module)


def _unpack(blob: bytes) -> list[Any]:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False, use_list=True)


# --------------------------------------------------------------------------- the property

@contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than ``seconds``."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise AssertionError(f"restore did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check(data: bytes) -> None:
    """Restore ``data``: a generator or a SnapshotError, nothing else."""
    with watchdog(TIMEOUT):
        try:
            gen = restore(data)
        except SnapshotError:
            return
        except BaseException as exc:
            raise AssertionError(f"restore raised {type(exc).__name__}: {exc}\n  for data = {data!r}") from exc
    assert inspect.isgenerator(gen), f"restore returned {type(gen).__name__}"
    try:  # drop it without running its clean-up (its locals may be nonsense now)
        runtime.detach(gen)
    except BaseException:  # noqa: BLE001 - what a damaged generator does afterwards is not restore's business
        pass


# --------------------------------------------------------------------------- random msgpack values

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 30), st.integers(-(2 ** 63), 2 ** 64 - 1),
    st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(["ref", "obj", "state", "method", "builtin", "gen", "gen-done", "len", "eval", "ValueError",
                     "KeyError", "BaseExceptionGroup", "", ":", "x:y", "__class__", b"DG", 2 ** 64 - 1, -(2 ** 63)]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, min_size=1, max_size=5).map(lambda items: [abs(hash(repr(items))) % 23] + items),
        st.dictionaries(SCALARS.filter(lambda k: not isinstance(k, float)), children, max_size=3),
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(VALUES)
def test_random_msgpack_values(value):
    check(msgpack.packb(value, use_bin_type=True))


@FUZZ
@given(st.lists(VALUES, max_size=4), st.sampled_from([0, 1, 2, -1, 2 ** 40]))
def test_random_envelopes(frames, version):
    check(msgpack.packb([b"DG", version, *frames], use_bin_type=True))


# Plausible value nodes: each tag of the codec with its arity, children drawn recursively.
BOUNDARIES = [2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -(2 ** 31), -(2 ** 63)]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from(BOUNDARIES), st.integers(-(2 ** 63), 2 ** 64 - 1))
NAMES = st.sampled_from(["ValueError", "KeyError", "OSError", "StopIteration", "SystemExit", "ExceptionGroup",
                         "BaseExceptionGroup", "eval", "len", "object", ""])
MEMBERS = st.sampled_from(["errno", "strerror", "filename", "filename2", "code", "value", "name", "path", "msg",
                           "lineno", "offset", "text", "obj", "__suppress_context__", "characters_written", "x"])
KINDS = st.sampled_from(["ref", "obj", "layout", "state", "method", "builtin", "gen", "gen-done", "deque",
                         "datetime", "map", "nope"])


def _nodes(children: st.SearchStrategy) -> st.SearchStrategy:
    items = st.lists(children, max_size=4)
    sequences = st.one_of(items.map(lambda xs: [1, *xs]), items.map(lambda xs: [2, *xs]), st.text(max_size=4),
                          st.binary(max_size=4), children)
    flat = st.lists(st.one_of(MEMBERS, children), max_size=4)
    return st.one_of(
        st.tuples(st.just(0), INTS).map(list),
        st.tuples(st.sampled_from([1, 2, 4, 5]), items).map(lambda t: [t[0], *t[1]]),
        st.tuples(st.just(3), items, items).map(lambda t: [3, *t[1], *t[2]]),
        st.tuples(st.sampled_from([6, 7]), st.binary(max_size=12)).map(list),
        st.tuples(st.just(8), INTS, items).map(lambda t: [8, t[1], *t[2]]),
        st.tuples(st.just(9), KINDS, children).map(list),
        st.tuples(st.just(9), KINDS, children, children).map(list),
        st.tuples(st.sampled_from([10, 11]), NAMES, children, children, children, flat, flat).map(list),
        st.tuples(st.sampled_from([12, 13]), NAMES, children, children, children, children, children, flat,
                  flat).map(list),
        st.tuples(st.just(14), INTS, INTS, INTS).map(list),
        st.tuples(st.sampled_from([15, 16, 17, 18, 20, 22]), sequences, INTS).map(list),
        st.tuples(st.just(19), st.binary(max_size=6)).map(list),
        st.tuples(st.just(21), st.booleans(), items).map(lambda t: [21, t[1], *t[2]]),
        st.tuples(st.just(23), children, items).map(lambda t: [23, t[1], *t[2]]),
        st.dictionaries(SCALARS.filter(lambda k: not isinstance(k, float)), children, max_size=3),
    )


NODES = st.recursive(SCALARS, _nodes, max_leaves=10)


@FUZZ
@given(st.data())
def test_plausible_value_nodes_in_real_frames(snapshots, data):
    """A real snapshot whose frame values are replaced by random but well-shaped value nodes."""
    tree = _unpack(data.draw(st.sampled_from(snapshots), label="seed"))
    frame = data.draw(st.sampled_from(tree[2:]), label="frame")
    if data.draw(st.booleans(), label="replace the names"):
        frame[4] = data.draw(st.one_of(st.text(alphabet="abn_dgit1,", max_size=12), NODES), label="names")
    values = frame[5]
    for _ in range(data.draw(st.integers(1, 2))):
        if values:
            values[data.draw(st.integers(0, len(values) - 1))] = data.draw(NODES, label="node")
    check(msgpack.packb(tree, use_bin_type=True))


SEQUENCES = st.one_of(st.lists(SCALARS, max_size=3).map(lambda xs: [1, *xs]),
                      st.lists(SCALARS, max_size=3).map(lambda xs: [2, *xs]),
                      st.text(max_size=3), st.binary(max_size=3), st.just([0, 0]), SCALARS)
ITERATORS = st.one_of(
    st.tuples(st.sampled_from([15, 16, 17, 18, 20, 22]), SEQUENCES, INTS).map(list),
    st.tuples(st.just(14), INTS, INTS, INTS).map(list),
    st.tuples(st.just(21), st.booleans(), st.lists(SEQUENCES, max_size=2)).map(lambda t: [21, t[1], *t[2]]),
)


@FUZZ
@given(st.data())
def test_iterator_nodes_in_real_frames(snapshots, data):
    """Iterators at any position, over lists that may contain the iterator itself (a ref to the list)."""
    tree = _unpack(data.draw(st.sampled_from(snapshots), label="seed"))
    frame = tree[2]
    node = data.draw(ITERATORS, label="iterator")
    if data.draw(st.booleans(), label="inside its list"):  # [1, [it over ref 0]] : the list is still being filled
        node = [1, [node[0], [0, FIRST_VALUE_SLOT], *node[2:]]] if node[0] in (15, 16) else [1, node]
    if frame[5]:
        frame[5][0] = node
    check(msgpack.packb(tree, use_bin_type=True))


# --------------------------------------------------------------------------- byte-level mutations

def _mutate_bytes(data: bytes, other: bytes, draw: Any) -> bytes:
    buf = bytearray(data)
    op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice", "overwrite"]))
    at = draw(st.integers(0, max(len(buf) - 1, 0)))
    if op == "flip" and buf:
        buf[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        del buf[at:]
    elif op == "insert":
        buf[at:at] = draw(st.binary(min_size=1, max_size=4))
    elif op == "delete":
        del buf[at:at + draw(st.integers(1, 4))]
    elif op == "splice":
        cut = draw(st.integers(0, len(other)))
        buf = buf[:at] + bytearray(other[cut:])
    elif op == "overwrite" and buf:
        buf[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC1, 0xC2, 0xC3, 0xCC, 0xD0, 0xDC, 0xDD,
                                        0xDE, 0xDF, 0xFF, 0x91, 0x92, 0x93, 0x96, 0xA0]))
    return bytes(buf)


@FUZZ
@given(st.data())
def test_byte_mutations_of_real_snapshots(snapshots, data):
    blob = data.draw(st.sampled_from(snapshots), label="seed")
    other = data.draw(st.sampled_from(snapshots), label="other")
    for _ in range(data.draw(st.integers(1, 3), label="rounds")):
        blob = _mutate_bytes(blob, other, data.draw)
    check(blob)


# --------------------------------------------------------------------------- msgpack-level mutations

def _slots(tree: Any, path: tuple = ()) -> list[tuple[Any, Any]]:
    """Every (container, key) in the decoded envelope, for list items and dict keys/values."""
    found: list[tuple[Any, Any]] = []
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            found.append((tree, i))
            found.extend(_slots(item))
    elif isinstance(tree, dict):
        for key, value in list(tree.items()):
            found.append((tree, key))
            found.extend(_slots(value))
    return found


def _mutate_tree(tree: list[Any], graft_from: list[Any], draw: Any) -> None:
    slots = _slots(tree)
    if not slots:
        return
    container, key = draw(st.sampled_from(slots))
    op = draw(st.sampled_from(["replace", "nudge", "duplicate", "delete", "graft", "wrap", "empty"]))
    current = container[key]
    donors = _slots(graft_from)
    if op == "replace":
        new = draw(VALUES)
    elif op == "nudge" and type(current) is int:
        new = current + draw(st.sampled_from([-1, 1, -2, 2, 1 << 32]))
    elif op == "graft" and donors:
        donor, donor_key = draw(st.sampled_from(donors))
        new = donor[donor_key]
    elif op == "wrap":
        new = [current]
    elif op == "empty":
        new = [] if isinstance(current, list) else {} if isinstance(current, dict) else None
    elif op == "duplicate" and isinstance(container, list):
        container.insert(key, current)
        return
    elif op == "delete":
        if isinstance(container, list):
            del container[key]
        else:
            del container[key]
        return
    else:
        new = draw(SCALARS)
    container[key] = new


@FUZZ
@given(st.data())
def test_msgpack_mutations_of_real_snapshots(snapshots, data):
    tree = _unpack(data.draw(st.sampled_from(snapshots), label="seed"))
    graft_from = _unpack(data.draw(st.sampled_from(snapshots), label="graft source"))
    for _ in range(data.draw(st.integers(1, 3), label="rounds")):
        _mutate_tree(tree, graft_from, data.draw)
    try:
        blob = msgpack.packb(tree, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    check(blob)


@FUZZ
@given(st.data())
def test_frames_spliced_from_other_snapshots(snapshots, data):
    """Frames of one snapshot stacked under frames of another (wrong delegation, wrong states)."""
    frames: list[Any] = []
    for _ in range(data.draw(st.integers(1, 4), label="frames")):
        envelope = _unpack(data.draw(st.sampled_from(snapshots)))
        frames.append(data.draw(st.sampled_from(envelope[2:])))
    check(msgpack.packb([b"DG", 1, *frames], use_bin_type=True))


# --------------------------------------------------------------------------- regressions

def test_every_seed_survives_every_single_byte_flip(snapshots):
    """Exhaustive over the smallest seeds: each byte, each bit."""
    for blob in sorted(snapshots, key=len)[:3]:
        for at in range(len(blob)):
            for bit in range(8):
                damaged = bytearray(blob)
                damaged[at] ^= 1 << bit
                check(bytes(damaged))


def test_every_truncation(snapshots):
    for blob in snapshots:
        for end in range(len(blob)):
            check(blob[:end])


@pytest.mark.parametrize("node", [
    [15, [1, 1, 2], 2 ** 63],            # list iterator past the end of its list: applied once the list is full
    [15, [1, 1, 2], 2 ** 64 - 1],
    [16, [1, 1], 2 ** 63],               # list reverse iterator, likewise
    [1, [15, [0, FIRST_VALUE_SLOT], 2 ** 63]],          # an iterator inside the very list it iterates
    [1, [16, [0, FIRST_VALUE_SLOT], 2 ** 64 - 1]],
], ids=["list-it", "list-it-u64", "list-revit", "list-it-in-its-list", "list-revit-in-its-list"])
def test_iterator_index_beyond_the_c_range_is_corrupt(snapshots, node):
    """Regression: the deferred ``__setstate__`` of a list iterator raised OverflowError out of restore."""
    tree = _unpack(snapshots[0])
    tree[2][5][0] = node
    with pytest.raises(runtime.CorruptSnapshotError):
        restore(msgpack.packb(tree, use_bin_type=True))
