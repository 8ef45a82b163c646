"""What a compiled function declares for deploys: its manifest (``runtime.manifest``), and the invariants
restore relies on — every point has a label of its own (no two states share a key, none falls back to a
positional one), and every local the compiler keeps at a point is named by structure."""
from __future__ import annotations

import collections
import json
import re

from harness import load_compiled
from program_gen import random_program
from runtime.manifest import manifest, manifest_json, source_digest
from runtime.registry import START

FLOW = """
from runtime import durable, point


@durable
def flow(user, retries=3):
    seen = []
    for item in range(retries):
        with open(__file__) as fh:
            got = yield point("ask", item)
        seen.append(got)
    try:
        decision = yield "approve"
    finally:
        seen.clear()
    return decision
"""

COMPILER_LOCAL = re.compile(r"_dg_[a-z]+\d+_[0-9a-f]{8}")


def test_the_manifest_says_each_points_label_line_and_contract() -> None:
    module = load_compiled(FLOW, all_generators=False)
    meta = module.flow.__durable__
    data = manifest(meta)
    assert json.loads(manifest_json(meta)) == data
    assert data["function"] == meta.ident and data["version"] == meta.version and len(meta.version) == 16
    assert data["params"] == ["user", "retries"] and data["keep_version"] is False
    assert data["first_line"] == 5 and data["source_digest"] == source_digest(meta)
    start, ask, approve = data["points"]
    assert start == {"state": 0, "key": START, "display": START, "aliases": [], "line": 5, "kind": "start",
                     "contract": {"locals": ["user", "retries"], "slots": [], "cells": []}}
    assert ask["key"] == "@ask" and ask["display"] == "@ask" and len(ask["aliases"]) == 1 and ask["line"] == 10
    # fh, item and retries are not read after the point; got is (its value from the last round, if the with's
    # __exit__ swallowed an exception thrown in at the point)
    assert set(ask["contract"]["locals"]) == {"seen", "got"}
    slots = {slot["what"] for slot in ask["contract"]["slots"]}
    assert slots == {"the iterator of the `for` loop at line 8", "the context manager of the `with` at line 9",
                     "whether the body of the `with` at line 9 is running without an exception"}
    assert all(COMPILER_LOCAL.fullmatch(slot["name"]) for slot in ask["contract"]["slots"])
    assert approve["display"] == 'try: › decision = yield "approve"' and approve["line"] == 13
    assert approve["contract"]["locals"] == ["seen"]
    assert [s["what"] for s in approve["contract"]["slots"]] == ["how the `try` at line 12 was left, for its `finally`"]


def test_every_point_of_random_programs_has_a_label_of_its_own() -> None:
    for seed in range(5):  # 400 seeds checked by hand for the issue note
        program = random_program(seed)
        module = load_compiled(program.source)
        for name in ("gen", "sub"):
            meta = getattr(module, name).__durable__
            keys = collections.Counter(key for key, _, _, _ in meta.points.values())
            assert set(meta.points) == set(meta.states), program.source
            assert all(count == 1 and not key.startswith("#") for key, count in keys.items()), program.source
            for names in meta.states.values():
                assert all(COMPILER_LOCAL.fullmatch(n) for n in names if n.startswith("_dg_")), program.source
