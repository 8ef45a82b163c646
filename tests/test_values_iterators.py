"""Snapshots carry map, filter and itertools iterators held in live locals (runtime/iterator_kinds.py).

Each carried iterator is held partially consumed across yields by a compiled generator; the
harness snapshots, detaches and restores it at every suspension (and once in a fresh process)
and compares every item with the native run. What a Python version cannot carry is asserted to
fail with UnserializableValueError naming the local and the reason, never to resume wrongly.
"""
from __future__ import annotations

import sys
import textwrap
import warnings

import pytest

import runtime
from harness import differential, load_compiled, load_native, nexts
from runtime.values import kinds
from runtime.errors import CorruptSnapshotError, UnserializableValueError

MODERN = sys.version_info >= (3, 12)
"""itertools pickling is deprecated: only count and repeat (besides map and filter) are carried."""

HELPERS = """
import itertools
from itertools import *

def double(x):
    return 2 * x

def odd(x):
    return x % 2

def small(x):
    return x < 5

def add(a, b):
    return a + b

def pair(t):
    return t[0] * 10, t[1]
"""


def program(setup: str, consumed: int, steps: int) -> str:
    """A generator holding ``it = <setup>`` with ``consumed`` items taken, then yielding the rest one by one."""
    return HELPERS + textwrap.dedent(f"""
        def gen():
            it = {setup}
            for _ in range({consumed}):
                next(it)
            for _ in range({steps}):
                yield next(it, 'END')
        """)


# (id, setup, items consumed before the first yield, items yielded, carried on 3.12+)
CASES = [
    ("map-function", "map(double, [1, 2, 3, 4, 5])", 1, 5, True),
    ("map-builtin-two-iterables", "map(pow, [2, 3, 4, 5], (1, 2, 3))", 1, 4, True),
    ("map-str", "map(str, range(5))", 2, 4, True),
    ("filter-function", "filter(odd, range(12))", 2, 5, True),
    ("filter-none", "filter(None, [0, 1, '', 'a', None, 2, 0])", 1, 4, True),
    ("count-int", "count(5)", 2, 4, True),
    ("count-step", "count(3, -2)", 1, 4, True),
    ("count-bigint", "count(2 ** 70, 3)", 1, 3, True),
    ("count-float", "count(0.5, 0.25)", 3, 4, True),
    ("count-int-float-step", "count(1, 0.1)", 2, 4, True),
    ("count-fast-mode-edge", "count(9223372036854775806)", 1, 3, True),
    ("repeat-times", "repeat('x', 4)", 1, 5, True),
    ("repeat-endless", "repeat((1, 'a'))", 2, 3, True),
    ("repeat-exhausted", "repeat(7, 1)", 1, 2, True),
    ("cycle-first-pass", "cycle('abc')", 1, 7, False),
    ("cycle-later-pass", "cycle([1, 2, 3])", 4, 5, False),
    ("islice", "islice(count(), 2, 30, 3)", 2, 4, False),
    ("islice-stop", "islice('abcdefg', 3)", 1, 3, False),
    ("chain", "chain([1, 2], 'ab', iter(range(3)))", 3, 5, False),
    ("chain-from-iterable", "chain.from_iterable([[1], [2, 3], [], [4]])", 2, 3, False),
    ("compress", "compress('abcdef', [1, 0, 1, 1, 0, 1])", 1, 4, False),
    ("dropwhile", "dropwhile(small, [1, 4, 6, 2, 8])", 1, 3, False),
    ("takewhile", "takewhile(small, [1, 4, 6, 2, 8])", 1, 3, False),
    ("starmap", "starmap(pow, [(2, 3), (3, 2), (10, 2)])", 1, 3, False),
    ("accumulate", "accumulate([1, 2, 3, 4])", 1, 4, False),
    ("accumulate-initial", "accumulate([1, 2, 3], add, initial=10)", 1, 4, False),
    ("zip-longest", "zip_longest('ab', [1, 2, 3, 4], fillvalue='-')", 1, 4, False),
    ("product", "product('ab', range(2), repeat=1)", 1, 4, False),
    ("product-repeat", "product('ab', repeat=2)", 2, 3, False),
    ("permutations", "permutations('abc')", 2, 5, False),
    ("combinations", "combinations('abcd', 2)", 2, 5, False),
    ("combinations-with-replacement", "combinations_with_replacement('abc', 2)", 2, 5, False),
]


def _carried(on_modern: bool) -> bool:
    return on_modern or not MODERN


def _snapshot_error(source: str, entry: str = "gen") -> UnserializableValueError:
    """Run a compiled ``entry`` to its first yield and return the error its snapshot raises."""
    module = load_compiled(source)
    gen = getattr(module, entry)()
    next(gen)
    with pytest.raises(UnserializableValueError) as info:
        runtime.snapshot(gen)
    gen.close()
    return info.value


@pytest.mark.parametrize("setup,consumed,steps,on_modern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_iterator_resumes_exactly(setup: str, consumed: int, steps: int, on_modern: bool) -> None:
    source = program(setup, consumed, steps)
    if _carried(on_modern):
        # snapshot → detach → restore before every step, once in a fresh process; equal to native
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no deprecated pickling hook is touched
            differential(source, nexts(steps + 1))
    else:
        name = setup.partition("(")[0].partition(".")[0]  # chain.from_iterable(...) makes a chain
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            err = _snapshot_error(source)
        assert err.path[0] == "local 'it'"
        assert f"itertools.{name}" in str(err)
        assert "Python 3.12+ deprecated reading the state of" in str(err)
        assert "local 'it'" in str(err)


def test_restored_iterator_continues_like_uninterrupted_run() -> None:
    """Explicit snapshot → detach → restore at the first suspension, against uninterrupted and native runs."""
    setup = "map(pair, zip(count(3), filter(odd, range(20))))"
    source = program(setup, 2, 6)
    compiled = load_compiled(source)
    native = load_native(source)
    uninterrupted = list(compiled.gen())
    gen = compiled.gen()
    first = next(gen)
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    restored = runtime.restore(data)
    assert [first, *restored] == uninterrupted == list(native.gen())


SHARED = HELPERS + """
def gen():
    base = iter(range(20))
    doubled = map(double, base)
    odds = filter(odd, base)          # pulls from the same iterator as doubled
    alias = doubled
    counter = count(1)
    repeated = repeat(counter, 3)     # repeat's element is the very count object
    items = [1, 2]
    same = repeat(items)
    next(doubled); next(odds)
    yield 'ready'
    yield alias is doubled
    yield next(repeated) is counter
    yield next(same) is items
    yield [next(doubled), next(odds), next(alias), next(counter), next(next(repeated))]
    items.append(3)
    yield next(same)
"""


def test_shared_iterators_stay_one_object() -> None:
    differential(SHARED, nexts(7))
    module = load_compiled(SHARED)
    gen = module.gen()
    next(gen)
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    native = load_native(SHARED).gen()
    next(native)
    assert list(runtime.restore(data)) == list(native) == [True, True, True, [4, 3, 8, 1, 2], [1, 2, 3]]


SHARED_ITERTOOLS = HELPERS + """
def gen():
    a, b = tee(iter(range(8)))        # two tees over one shared buffer
    next(a); next(a); next(a); next(b)
    groups = groupby('aaabccdd')
    key, group = next(groups)         # the current group iterator, held
    next(group)
    stale_key, stale = key, group
    key, group = next(groups)         # the first group is now inactive
    yield 'ready'
    yield [next(a), next(b), next(b), next(a)]
    yield list(stale)
    yield list(group)
    yield [(k, list(g)) for k, g in groups]
    yield list(a) + ['|'] + list(b)
"""


def test_tee_and_groupby_with_held_group() -> None:
    if not MODERN:
        differential(SHARED_ITERTOOLS, nexts(7))
    else:
        err = _snapshot_error(SHARED_ITERTOOLS)
        assert err.path[0] == "local 'a'"
        assert "Python 3.12+ deprecated reading the state of itertools.tee" in str(err)


NESTED = HELPERS + """
def gen():
    it = map(pair, zip(islice(count(7), 1, None, 2), 'abcdef'))
    next(it)
    for _ in range(6):
        yield next(it, 'END')
"""


def test_nested_map_zip_islice_count() -> None:
    if not MODERN:
        differential(NESTED, nexts(7))
    else:
        err = _snapshot_error(NESTED)
        assert err.path[0] == "local 'it'"
        assert err.type_name == "itertools.islice"
        assert "Python 3.12+ deprecated reading the state of itertools.islice" in str(err)


def test_nested_map_zip_count_filter_everywhere() -> None:
    differential(program("map(pair, zip(count(3), filter(odd, range(20))))", 2, 6), nexts(7))


def test_pairwise_is_never_carried() -> None:
    if sys.version_info < (3, 10):
        pytest.fail("the project supports 3.10+")
    err = _snapshot_error(program("pairwise('abcde')", 1, 3))
    assert err.path[0] == "local 'it'"
    assert "itertools.pairwise offers no way to read its state" in str(err)


def test_batched_is_never_carried() -> None:
    if sys.version_info < (3, 12):
        import itertools
        assert not hasattr(itertools, "batched")
        return
    err = _snapshot_error(program("batched(range(10), 3)", 1, 3))
    assert err.path[0] == "local 'it'"
    assert "itertools.batched offers no way to read its state" in str(err)


def test_function_of_map_must_be_carried() -> None:
    # a lambda made at module level has no name to be found by: it cannot travel (a lambda made
    # inside the durable function can, see test_closures.py)
    source = HELPERS + """
triple = lambda x: x * 3

def gen():
    it = map(triple, [1, 2, 3])
    next(it)
    yield 'ready'
    yield list(it)
"""
    err = _snapshot_error(source)
    assert err.path[0] == "local 'it'"
    assert err.type_name == "function"


def test_count_of_non_numbers_is_refused() -> None:
    source = HELPERS + """
from fractions import Fraction

def gen():
    it = count(Fraction(1, 2))
    next(it)
    yield 'ready'
    yield next(it)
"""
    err = _snapshot_error(source)
    assert err.path[0] == "local 'it'"
    assert "int or float" in str(err)


def test_cycle_through_own_head() -> None:
    # entered at the repeat, the cycle runs through its head: restore could not rebuild it
    source = HELPERS + """
def gen():
    box = []
    it = repeat(box)
    box.append(it)                    # the repeat's element holds the repeat
    yield 'ready'
    yield next(it)[0] is it
"""
    err = _snapshot_error(source)
    assert err.path[0] == "local 'it'"
    assert "refers back to itself" in str(err)
    # entered at the list (a mutable object, rebuilt before the repeat), the same cycle is carried
    differential(source.replace("box = []", "box = [];  box2 = box").replace(
        "yield next(it)[0] is it", "yield next(it)[0] is it\n    yield box2[0] is it"), nexts(3))


def test_supported_kinds_touch_no_deprecated_hook() -> None:
    source = program("map(str, zip(filter(odd, count(1)), repeat('r', 9)))", 1, 3)
    module = load_compiled(source)
    gen = module.gen()
    first = next(gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = runtime.snapshot(gen)
        runtime.detach(gen)
        assert [first, *runtime.restore(data)] == ["(3, 'r')", "(5, 'r')", "(7, 'r')"]


# -- malformed heads ---------------------------------------------------------------------------

_BAD_HEADS = [None, 1, "x", [], [None], [1, 2, 3, 4], [(1,), "state"], [("a",), (None, None)], [[1]],
              [(), ()], [(object,), 5], [1.5], ["x", -1], ["x", "y"], [None, None], [(None,)]]


def _iterator_kind_names() -> list[str]:
    kinds.load_standard()  # the standard kinds register at the first snapshot or restore
    return sorted(name for name in kinds.BY_NAME if name in ("map", "filter") or name.startswith("itertools."))


@pytest.mark.parametrize("name", _iterator_kind_names())
def test_malformed_heads_raise_corrupt_snapshot(name: str) -> None:
    kind = kinds.BY_NAME[name]
    for head in _BAD_HEADS:
        try:
            obj = kind.create(head)
        except CorruptSnapshotError:
            continue
        # a head the constructor accepts must have made an iterator of the kind's own type
        assert iter(obj) is obj, (name, head)


def test_iterator_kinds_registered_per_version() -> None:
    import itertools
    names = set(_iterator_kind_names())
    assert {"map", "filter", "itertools.count", "itertools.repeat", "itertools.cycle", "itertools.tee"} <= names
    # on 3.12+ the other itertools kinds exist only to refuse (encode) and reject (create)
    if MODERN:
        with pytest.raises(CorruptSnapshotError, match="cannot rebuild"):
            kinds.BY_NAME["itertools.cycle"].create([([1],)])
        with pytest.raises(kinds.Unsupported):
            kinds.BY_TYPE[itertools.cycle].encode(itertools.cycle("ab"))
    else:
        assert list(itertools.islice(kinds.BY_NAME["itertools.cycle"].create([("ab",)]), 3)) == ["a", "b", "a"]


def test_kind_refusal_reason_reaches_the_error() -> None:
    """codec: a kind's encode raising kinds.Unsupported(reason) becomes the unserializable error with that reason."""
    from runtime.values import Encoder
    from runtime.values import HOOKS

    class Opaque:
        pass

    def refuse(obj: object) -> tuple[object, object]:
        raise kinds.Unsupported("is not supported: it keeps its state to itself")

    kinds.add(kinds.Kind("test:opaque", refuse, lambda head: Opaque()), Opaque)
    try:
        with pytest.raises(UnserializableValueError) as info:
            Encoder(HOOKS).encode({"k": [1, Opaque()]}, "local 'x'")
    finally:
        del kinds.BY_TYPE[Opaque], kinds.BY_NAME["test:opaque"]
    assert info.value.path == ["local 'x'", "['k']", "[1]"]
    assert str(info.value).endswith("is not supported: it keeps its state to itself")
