"""Deploys on random programs: a new suspension inserted at the start of ``gen`` renumbers every state,
yet a run snapshotted under the old code at any point resumes under the new one (its points keep their
labels and contracts), and then does exactly what the new code does natively from there.

The oracle is independent of the compiler: the new source run natively, with one more ``next()`` at the
start for the inserted suspension. Programs and scripts come from ``program_gen`` (``test_random_programs``).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from harness import NEXT, encode_op, load_compiled, load_native, run_step, tmp_module_dir, unique_module_name
from program_gen import DrawChooser, build_case
from runtime import detach, restore, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PROBE = "'__deploy_probe__'"
_EXAMPLES = int(os.environ.get("DG_DEPLOY_EXAMPLES", "8"))


def _with_probe(source: str) -> str:
    """``source`` with ``yield PROBE`` as the first statement of ``gen``."""
    new, count = re.subn(r"^(def gen\(.*\):\n)", rf"\1    yield {PROBE}\n", source, count=1, flags=re.M)
    assert count == 1, source
    return new


def _trace(gen: object, ops: list, namespace: dict) -> list[dict]:
    out = []
    for op in ops:
        entry = run_step(gen, encode_op(op), namespace)
        out.append(entry)
        if entry["finished"]:
            break
    return out


@st.composite
def deploys(draw):  # type: ignore[no-untyped-def]
    program, script = build_case(DrawChooser(draw))
    script = [NEXT] + [op for op in script if op.kind in ("next", "send")]
    cut = draw(st.integers(1, len(script)))
    return program, script, cut


@settings(max_examples=_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=deploys())
def test_a_run_resumes_under_code_with_a_new_first_suspension(case) -> None:  # type: ignore[no-untyped-def]
    program, script, cut = case
    new_source = _with_probe(program.source)
    note(f"program:\n{program.source}\nscript: {[op.label() for op in script]}, snapshot after op {cut}")
    name = unique_module_name("deploy_prop")
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    old = load_compiled(program.source, name=name, directory=directory)
    gen = eval(program.entry, old.__dict__)
    before = _trace(gen, script[:cut], old.__dict__)
    if before and before[-1]["finished"]:
        return  # nothing suspended to carry over
    data = snapshot(gen)
    detach(gen)
    new = load_compiled(new_source, name=name, directory=directory)
    resumed = _trace(restore(data), script[cut:], new.__dict__)
    native = load_native(new_source)
    reference = eval(program.entry, native.__dict__)
    expected = _trace(reference, [NEXT] + script, native.__dict__)
    assert expected[0]["value"] == PROBE
    # what the old code did up to the snapshot is what the new code does natively after its probe
    assert [e["value"] for e in expected[1:cut + 1]] == [e["value"] for e in before]
    assert resumed == expected[cut + 1:]
