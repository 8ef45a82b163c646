"""Identifier-like strings come back interned (issue 11, item 8): a local holding a sentinel string
constant is still `is` that constant after restore, wherever the snapshot put it, as natively."""
from __future__ import annotations

import sys

import runtime
from harness import differential, load_compiled, nexts, unload
from runtime.values.decoder import INTERN_MAX_LENGTH

SENTINELS = """
NO_DEFAULT = "__no__default__"
MISSING = "missing_value"


class Box:
    def __init__(self, v):
        self.v = v


def gen():
    d = NO_DEFAULT
    pair = (MISSING, 1)
    items = [NO_DEFAULT, MISSING]
    table = {"k": NO_DEFAULT, NO_DEFAULT: 2}
    marks = {MISSING}
    frozen = frozenset([NO_DEFAULT])
    box = Box(MISSING)
    nested = [(1, [{"x": MISSING}])]
    yield 0
    yield d is NO_DEFAULT, pair[0] is MISSING
    yield items[0] is NO_DEFAULT, items[1] is MISSING
    yield table["k"] is NO_DEFAULT, next(iter(table.keys() - {"k"})) is NO_DEFAULT
    yield next(iter(marks)) is MISSING, next(iter(frozen)) is NO_DEFAULT
    yield box.v is MISSING, nested[0][1][0]["x"] is MISSING
"""


def test_sentinel_strings_stay_identical_at_every_suspension():
    result = differential(SENTINELS, nexts(7))
    assert [step["value"] for step in result.native[1:6]] == ["(True, True)"] * 5  # the native facts
    assert result.snapshot_points[1:6] == [1, 2, 3, 4, 5]  # compiled: restored before every step that checks


def test_only_short_name_like_strings_are_interned():
    """Strings made at run time are interned on the way back only when they look like names and are
    short: what outside data adds to the interpreter's string table is bounded."""
    mod = load_compiled("""
        from runtime import durable

        @durable
        def gen(a, b):
            word, text, long_word = a + b, a + " " + b, a * 20
            yield
            yield word, text, long_word
    """, all_generators=False, tag="intern")
    try:
        g = mod.gen("left", "right")
        next(g)
        back = runtime.restore(runtime.snapshot(g))
        runtime.detach(g)
        word, text, long_word = next(back)
        assert word is sys.intern("left" + "right")
        assert text == "left right" and text is not sys.intern("left" + " right")
        assert len(long_word) > INTERN_MAX_LENGTH and long_word is not sys.intern("left" * 20)
        back.close()
    finally:
        unload(mod)
