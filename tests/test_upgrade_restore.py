"""A snapshot taken under one version of a durable function resumes under the next when the new code has
its point and asks for nothing the snapshot lacks (issue 13, ``runtime.compat``); otherwise restore refuses
with an error naming the function, the point, the line and what is missing.

Each case compiles v1 under a module name, runs it to a point, snapshots it, loads v2 under the same name
and restores. Where the frame upgrades, what the restored run does next is compared with v2 run natively
with the same inputs (its code before the point computes the same locals as v1's).
"""
from __future__ import annotations

import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime import detach, restore, snapshot
from runtime.compat import PointMismatchError
from runtime.errors import IncompatibleCodeError
from harness import drive, load_compiled, load_native, tmp_module_dir, unique_module_name

V1 = """
from runtime import durable
from runtime import point


@durable
def flow(n):
    total = 0
    for i in range(n):
        got = yield ("ask", i)
        total += got
    note = yield ("confirm", total)
    return (total, note, "v1")
"""

NAMED = V1.replace('got = yield ("ask", i)', 'got = yield point("ask", ("ask", i))') \
          .replace('note = yield ("confirm", total)', 'note = yield point("confirm", ("confirm", total))')

# Where the run is suspended when the snapshot is taken: the inputs that bring it there.
IN_LOOP = [None, 10]          # suspended at ``got = yield ("ask", i)`` with i == 1
AT_CONFIRM = [None, 10, 20]   # suspended at ``note = yield ("confirm", total)``
REST = {"IN_LOOP": [20, "ok"], "AT_CONFIRM": ["ok"]}


@dataclass
class Edit:
    name: str
    v1: str
    v2: str
    at: str                  # "IN_LOOP" or "AT_CONFIRM"
    outcome: str             # "exact", "upgrade", or a PointMismatchError reason
    says: tuple[str, ...] = ()  # what the refusal's message must contain
    native_lead: int = 0     # v2 run natively needs this many extra next() to reach the same point


def _replace(old: str, new: str, source: str = V1) -> str:
    assert old in source, old
    return source.replace(old, new)


EDITS = [
    Edit("line shift", V1, "\n\n\n# a comment above\n" + V1, "IN_LOOP", "exact"),
    Edit("comment and reformat inside", V1,
         _replace("        total += got", "        # add it\n        total += (got)"), "IN_LOOP", "exact"),
    Edit("constant changed after the point", V1, _replace('"v1")', '"v2")'), "AT_CONFIRM", "upgrade"),
    Edit("code changed after the point, in the loop", V1,
         _replace("        total += got\n", "        total += got\n        got = None\n"), "IN_LOOP", "upgrade"),
    Edit("suspension inserted before the point", V1,
         _replace("    total = 0\n", '    total = 0\n    yield ("hello",)\n'), "AT_CONFIRM", "upgrade", native_lead=1),
    Edit("new local read after the point", V1,
         _replace('    total = 0\n', '    total = 0\n    retries = 3\n').replace('"v1")', 'retries)'),
         "AT_CONFIRM", "missing-local", ("local 'retries' is needed at this point in the new code",
                                         "and the snapshot has no value for it")),
    Edit("local renamed across the point", V1, V1.replace("total", "acc"), "IN_LOOP", "missing-local",
         ("local 'acc'",)),
    Edit("suspending statement rewritten", V1, _replace('yield ("ask", i)', 'yield ("ask", i, "please")'),
         "IN_LOOP", "no-point", ("no point with this label",)),
    Edit("suspending statement rewritten, named point", NAMED,
         _replace('point("ask", ("ask", i))', 'point("ask", ("ask", i, "please"))', NAMED), "IN_LOOP", "upgrade"),
    Edit("point removed", V1, _replace('    note = yield ("confirm", total)\n', '    note = "none"\n'),
         "AT_CONFIRM", "no-point"),
    Edit("try added around the point", V1,
         _replace('    note = yield ("confirm", total)\n',
                  '    try:\n        note = yield ("confirm", total)\n    except KeyError:\n        note = "k"\n'),
         "AT_CONFIRM", "no-point"),
    Edit("try added around a named point", NAMED,
         _replace('    note = yield point("confirm", ("confirm", total))\n',
                  '    try:\n        note = yield point("confirm", ("confirm", total))\n'
                  '    except KeyError:\n        note = "k"\n', NAMED), "AT_CONFIRM", "upgrade"),
    Edit("with added around a named point", NAMED,
         _replace('    note = yield point("confirm", ("confirm", total))\n',
                  '    import contextlib\n    with contextlib.nullcontext():\n'
                  '        note = yield point("confirm", ("confirm", total))\n', NAMED),
         "AT_CONFIRM", "missing-slot", ("context manager of the `with`",)),
    Edit("for header changed around a named point", NAMED,
         _replace("for i in range(n):", "for i in list(range(n)):", NAMED), "IN_LOOP", "missing-slot",
         ("iterator of the `for` loop",)),
    Edit("name added to an existing point", V1,
         _replace('got = yield ("ask", i)', 'got = yield point("ask", ("ask", i))'), "IN_LOOP", "upgrade"),
    Edit("name removed from a point", NAMED, V1, "IN_LOOP", "no-point"),
    Edit("function removed", V1, "from runtime import durable\n\n@durable\ndef other():\n    yield 1\n",
         "IN_LOOP", "no-function", ("no durable function",)),
]


@pytest.mark.parametrize("edit", EDITS, ids=[e.name for e in EDITS])
def test_a_deploy_resumes_what_it_can_and_names_what_it_cannot(edit: Edit) -> None:
    name = unique_module_name("deploy")
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    v1 = load_compiled(textwrap.dedent(edit.v1), all_generators=False, name=name, directory=directory)
    gen = v1.flow(2)
    drive(gen, IN_LOOP if edit.at == "IN_LOOP" else AT_CONFIRM)
    data = snapshot(gen)
    detach(gen)
    load_compiled(textwrap.dedent(edit.v2), all_generators=False, name=name, directory=directory)
    rest = REST[edit.at]
    if edit.outcome in ("exact", "upgrade"):
        resumed = drive(restore(data), rest)
        native = load_native(edit.v2).flow(2)
        lead = [None] * edit.native_lead
        drive(native, lead + (IN_LOOP if edit.at == "IN_LOOP" else AT_CONFIRM))
        assert resumed == drive(native, rest)
        assert resumed[-1][0] == "return"
        return
    with pytest.raises(PointMismatchError) as caught:
        restore(data)
    error = caught.value
    assert isinstance(error, IncompatibleCodeError)
    assert error.reason == edit.outcome, str(error)
    message = str(error)
    assert f"{name}:flow" in message
    if edit.outcome != "no-function":
        line = 10 if edit.at == "IN_LOOP" else 12  # the line of the point in v1
        assert f"(line {line} of the code that saved it)" in message, message
        assert ("yield" in message) or ("@" in message), message  # the point's label
    for text in edit.says:
        assert text in message, message


def test_a_run_held_in_a_yield_from_chain_is_judged_frame_by_frame() -> None:
    outer_v1 = textwrap.dedent("""
        from runtime import durable

        @durable
        def inner(k):
            got = yield ("inner", k)
            return got * 2

        @durable
        def outer():
            a = yield from inner(1)
            return ("outer", a)
    """)
    name = unique_module_name("chain")
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    v1 = load_compiled(outer_v1, all_generators=False, name=name, directory=directory)
    gen = v1.outer()
    assert next(gen) == ("inner", 1)
    data = snapshot(gen)
    detach(gen)
    # the inner function changed after its point: the inner frame upgrades, the outer one is exact
    load_compiled(outer_v1.replace("got * 2", "got * 3"), all_generators=False, name=name, directory=directory)
    assert drive(restore(data), [5]) == [("return", ("outer", 15))]
    # the outer's suspending statement rewritten: the outer frame cannot resume, and the error says so
    load_compiled(outer_v1.replace("a = yield from inner(1)", "a = yield from inner(1 + 0)"),
                  all_generators=False, name=name, directory=directory)
    with pytest.raises(PointMismatchError) as caught:
        restore(data)
    assert caught.value.reason == "no-point" and f"{name}:outer" in str(caught.value)


@pytest.mark.parametrize("signature, outcome", [
    ("def flow(n, extra=5):", ("return", (2, 5))),
    ("def flow(n, *more, extra=5, **options):", ("return", (2, 5))),
    ("def flow(n, extra):", "missing-local"),
], ids=["new parameter with a default", "new keyword and star parameters", "new required parameter"])
def test_a_generator_not_started_yet_takes_new_parameters_with_defaults(signature: str, outcome: Any) -> None:
    source = textwrap.dedent("""
        from runtime import durable

        @durable
        def flow(n):
            got = yield n
            return (got, extra)
    """)
    name = unique_module_name("deploy_start")
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    v1 = load_compiled(source.replace("(got, extra)", "got"), all_generators=False, name=name, directory=directory)
    data = snapshot(v1.flow(1))  # not started: its frame is the call's arguments
    load_compiled(source.replace("def flow(n):", signature), all_generators=False, name=name, directory=directory)
    if isinstance(outcome, str):
        with pytest.raises(PointMismatchError) as caught:
            restore(data)
        assert caught.value.reason == outcome and "local 'extra' is needed" in str(caught.value)
        return
    assert drive(restore(data), [None, 2]) == [1, outcome]
