"""Built-in things held across a suspension travel (issue 11, item 6): built-in exception classes as
values, functools.partial, functions of standard modules (math, operator), methods of built-in types
(str.upper) and of built-in values (n.__add__, text.split), modules imported inside a durable function
and names imported from them, dict views, contextlib.suppress held by a `with` around a yield.

Each program runs natively and compiled, snapshotted and restored after every step and once in a fresh
process (``harness.differential``).
"""
from __future__ import annotations

import pytest

from harness import differential, load_compiled, nexts, unload
import runtime


def test_builtin_exception_classes_as_values():
    differential("""
    def gen():
        kinds = (ValueError, KeyError, DeprecationWarning)
        chosen = LookupError
        yield [k.__name__ for k in kinds]
        try:
            raise chosen("x")
        except kinds[1:] + (chosen,) as exc:
            yield type(exc).__name__
    """, nexts(3))


def test_partial_and_functions_of_standard_modules():
    differential("""
    import functools, math, operator

    def scale(x, factor, offset=0):
        return x * factor + offset

    def gen():
        triple = functools.partial(scale, factor=3, offset=1)
        floor = math.floor
        add = operator.add
        yield triple(2), floor(2.7), add(1, 2)
        yield triple(5), list(map(floor, [1.5, -1.5])), functools.reduce(add, [1, 2, 3])
    """, nexts(3))


def test_methods_of_builtin_types_and_of_builtin_values():
    differential("""
    def gen():
        upper = str.upper
        from_keys = dict.fromkeys
        n = 40
        plus = n.__add__
        words = "a b c"
        split = words.split
        seen = []
        remember = seen.append
        yield upper("x"), plus(2), split()
        remember(1)
        yield upper("y"), plus(3), from_keys("ab"), seen
    """, nexts(3))


def test_a_module_imported_inside_a_durable_function_and_names_imported_from_it():
    differential("""
    def gen():
        import json
        from json import dumps
        from contextlib import suppress
        yield json.dumps([1])
        with suppress(KeyError):
            yield dumps({"a": 1})
            raise KeyError("swallowed")
        yield json.loads("[2]")
    """, nexts(4))


def test_dict_views_stay_views_of_their_dict():
    differential("""
    def gen():
        d = {"a": 1}
        keys, values, items = d.keys(), d.values(), d.items()
        yield sorted(keys)
        d["b"] = 2
        yield sorted(keys), sorted(values), sorted(items), keys.mapping is not None
    """, nexts(3))


def test_methods_that_reach_attributes_by_name_are_not_carried():
    mod = load_compiled("""
    from runtime import durable

    @durable
    def gen():
        fmt = "{0.x}".format
        yield 1
        yield fmt
    """, all_generators=False, tag="fmt")
    try:
        g = mod.gen()
        next(g)
        with pytest.raises(runtime.UnserializableValueError, match="local 'fmt'"):
            runtime.snapshot(g)
        runtime.detach(g)
    finally:
        unload(mod)


def test_a_module_that_is_not_allowed_says_how_to_allow_it():
    mod = load_compiled("""
    from runtime import durable

    @durable
    def gen():
        import shutil
        yield 1
        yield shutil.which("sh") is not None
    """, all_generators=False, tag="shutil")
    try:
        g = mod.gen()
        next(g)
        with pytest.raises(runtime.UnserializableValueError, match=r"runtime.allow_modules\('shutil'\)"):
            runtime.snapshot(g)
        runtime.detach(g)
    finally:
        unload(mod)
