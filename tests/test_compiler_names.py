"""Locals the compiler makes (``_dg_it1``, ``_dg_wm2``, ``_dg_t3``...) are described in the user's terms.

The compiler emits, in each function's declaration, what every local it made and a snapshot keeps
holds, with the line of its construct: errors name "the context manager of the `with` at line 5",
never ``_dg_wm1``. ``inspect_snapshot`` has only the snapshot's bytes: it notes each such local with
what its kind is, in plain words, and never shows one without its note.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from harness import load_compiled
from runtime import UnserializableValueError, detach, inspect_snapshot, restore, snapshot

HOLDERS = """
import ast
import threading
from runtime import durable


def managed():
    with threading.Lock():  # WITH
        yield 1


def looped():
    for item in iter(threading.Lock, None):  # FOR
        yield item


def held():
    lock = threading.Lock()
    pair = (lock, (yield 1))  # TEMP
    return pair


def delegated():
    yield from ast.walk(ast.parse("x"))  # FROM
"""


def line_of(source: str, marker: str) -> int:
    [line] = [n for n, text in enumerate(textwrap.dedent(source).splitlines(), 1) if text.endswith(f"# {marker}")]
    return line


@pytest.fixture(scope="module")
def holders():
    return load_compiled(HOLDERS)


@pytest.mark.parametrize("function, message", [
    ("managed", "cannot snapshot the context manager of the `with` at line {WITH}: value of type '_thread.lock'"),
    ("looped", "cannot snapshot the iterator of the `for` loop at line {FOR}: value of type 'callable_iterator'"),
    ("held", "cannot snapshot the value of `lock`, evaluated before the yield at line {TEMP}: "
             "value of type '_thread.lock'"),
])
def test_snapshot_errors_describe_the_locals_the_compiler_made(holders, function, message):
    gen = getattr(holders, function)()
    next(gen)
    with pytest.raises(UnserializableValueError) as info:
        snapshot(gen)
    lines = {m: line_of(HOLDERS, m) for m in ("WITH", "FOR", "TEMP")}
    assert str(info.value).startswith(message.format(**lines)), str(info.value)
    assert "_dg_" not in str(info.value)
    gen.close()


def test_a_yield_from_a_generator_that_is_not_durable_is_named_by_its_construct(holders):
    gen = holders.delegated()
    next(gen)
    with pytest.raises(UnserializableValueError, match="delegates \\(yield from\\) to generator 'walk'") as info:
        snapshot(gen)
    assert info.value.path == [f"the iterator the `yield from` at line {line_of(HOLDERS, 'FROM')} delegates to"]
    gen.close()


CONSTRUCTS = """
from runtime import durable


def child():
    yield "child"


def gen(items, subject):
    total = 10
    total = total + (yield total)  # TEMP
    for item in items:  # FOR
        yield item
    with open(__file__) as fh:  # WITH
        fh.close()
        yield "with"
    try:  # TRY
        raise KeyError("k")
    except KeyError:  # EXCEPT
        yield "handler"
    try:  # FINALLY
        pass
    finally:
        yield "finally"
    match subject:  # MATCH
        case [x] if (yield x):
            yield "matched"
    yield from child()  # FROM
    return total
"""

EXPECTED = {
    "TEMP": "the value of `total`, evaluated before the yield at line {}",
    "FOR": "the iterator of the `for` loop at line {}",
    "WITH": "the context manager of the `with` at line {}",
    "EXCEPT": "the exception caught by the `except` at line {}",
    "FINALLY": "how the `try` at line {} was left, for its `finally`",
    "MATCH": "the case the `match` at line {} chose",
    "FROM": "the iterator the `yield from` at line {} delegates to",
}


def test_every_local_a_snapshot_keeps_is_described_with_its_construct_and_line():
    module = load_compiled(CONSTRUCTS)
    meta = module.gen.__durable__
    kept = {name for names in meta.states.values() for name in names if name.startswith("_dg_")}
    assert kept and kept == set(meta.compiler_locals)
    described = set(meta.compiler_locals.values())
    for marker, text in EXPECTED.items():
        assert text.format(line_of(CONSTRUCTS, marker)) in described, (marker, sorted(described))
    assert not any("_dg_" in text for text in described)


def _suspended(module, *sends):
    gen = module.gen([1, 2], [3])
    next(gen)
    for value in sends:
        gen.send(value)
    return gen


def test_inspect_notes_every_compiler_local_in_plain_words():
    module = load_compiled(CONSTRUCTS)
    info = inspect_snapshot(snapshot(_suspended(module)))
    [frame] = info.frames
    [temp] = [name for name in frame.locals if name.startswith("_dg_t")]
    assert frame.locals[temp] == "10" and frame.notes[temp].startswith("the value of an expression")
    gen = _suspended(module, 5)
    data = snapshot(gen)
    detach(gen)
    info = inspect_snapshot(data)
    [iterator] = [name for name in info.frames[0].locals if name.startswith("_dg_it")]
    assert info.frames[0].notes[iterator] == "the iterator of a `for` loop"
    for name, note in info.frames[0].notes.items():
        assert "_dg_" not in note and " " in note, (name, note)
    text = str(info)
    for line in text.splitlines():
        if "_dg_" in line:
            assert re.search(r"  \(the \w", line), line
    assert list(restore(data)) == list(_suspended(module, 5))


def test_code_compiled_before_the_table_existed_still_runs_and_says_what_a_local_is():
    """An older compiled module declares no descriptions: errors fall back to the kind of local."""
    from transpiler import compile_source

    code = compile_source(textwrap.dedent(HOLDERS), "old.py", all_generators=True)
    old = re.sub(r", compiler_locals=\{[^}]*\}", "", code)
    assert old != code and "compiler_locals" not in old
    namespace = {"__name__": "dg_old_declarations"}
    exec(compile(old, "old.py", "exec"), namespace)
    gen = namespace["managed"]()
    next(gen)
    with pytest.raises(UnserializableValueError) as info:
        snapshot(gen)
    assert str(info.value).startswith("cannot snapshot the context manager of a `with` statement: ")
    gen.close()
