"""The public API contract of snapshot/restore/detach beyond SEMANTICS.md.

Tests here use the explicit ``@durable`` decorator mode (``all_generators=False``) unless they say
otherwise.  Differential tests compare with native runs of the same source (``@durable`` is made a
no-op natively by the harness).
"""
from __future__ import annotations

import gc
import inspect
import json
import re
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import msgpack
import pytest

from harness import (
    CLOSE, NEXT, differential, load_compiled, load_native, nexts, run_python, send, throw,
    tmp_module_dir, unique_module_name, unload,
)
import runtime
from runtime.errors import (
    CorruptSnapshotError, GeneratorStateError, IncompatibleCodeError, NotDurableError,
    SnapshotError, UnserializableValueError,
)


# looked up at call time, so this file collects while the runtime is being written
def snapshot(gen):
    return runtime.snapshot(gen)


def restore(data):
    return runtime.restore(data)


def detach(gen):
    return runtime.detach(gen)


def explicit(source: str):
    return load_compiled(source, all_generators=False)


SIMPLE = """
from runtime import durable
LOG = []

@durable
def gen(n):
    total = 0
    for i in range(n):
        x = yield i
        if x is not None:
            total += x
    LOG.append(("total", total))
    return total

def plain(n):
    yield from range(n)
"""


# ============================================================================ typed errors of snapshot


def test_snapshot_running_generator_from_inside():
    mod = explicit("""
    from runtime import durable, snapshot, GeneratorStateError
    LOG = []

    @durable
    def gen():
        yield 1
        try:
            snapshot(CURRENT_GEN)
        except GeneratorStateError as e:
            LOG.append(("state error", bool(str(e))))
        else:
            LOG.append("no error")
        yield 2
    """)
    g = mod.gen()
    mod.CURRENT_GEN = g
    assert next(g) == 1
    assert next(g) == 2
    assert mod.LOG == [("state error", True)]
    # the generator is still fine afterwards
    data = snapshot(g)
    detach(g)
    assert list(restore(data)) == []


@pytest.mark.parametrize("how", ["returned", "raised", "closed_suspended", "closed_created",
                                 "thrown_created"])
def test_snapshot_finished_generator(how):
    mod = explicit(SIMPLE)
    g = mod.gen(2)
    if how == "returned":
        assert list(g) == [0, 1]
    elif how == "raised":
        next(g)
        with pytest.raises(KeyError):
            g.throw(KeyError("x"))
    elif how == "closed_suspended":
        next(g)
        g.close()
    elif how == "closed_created":
        g.close()
    else:
        with pytest.raises(KeyError):
            g.throw(KeyError)
    with pytest.raises(GeneratorStateError):
        snapshot(g)


def test_snapshot_non_compiled_generators():
    mod = explicit(SIMPLE)  # `plain` is not decorated: not compiled in explicit mode
    native = load_native(SIMPLE)
    cases = {
        "undecorated in compiled module": mod.plain(3),
        "native module": native.gen(3),
        "generator expression": (x for x in range(3)),
    }
    for what, g in cases.items():
        with pytest.raises(NotDurableError):
            snapshot(g)
        next(g)
        with pytest.raises(NotDurableError):
            snapshot(g)
        g.close()


def test_public_names():
    from runtime import (  # noqa: F401 - the documented import line must work
        CorruptSnapshotError as C, GeneratorStateError as G, IncompatibleCodeError as I,
        NotDurableError as N, SnapshotError as S, UnserializableValueError as U, detach, durable,
        restore, snapshot,
    )
    from transpiler import compile_source, install_import_hook  # noqa: F401

    assert (C, G, I, N, S, U) == (CorruptSnapshotError, GeneratorStateError, IncompatibleCodeError,
                                  NotDurableError, SnapshotError, UnserializableValueError)
    import runtime
    from runtime import (  # noqa: F401 - the allow-list and its errors are public too
        NotAllowedError, SignatureError, allow_modules, disallow_modules, serializable,
    )
    from runtime import errors
    from runtime.values import allow

    assert (NotAllowedError, SignatureError) == (errors.NotAllowedError, errors.SignatureError)
    assert (allow_modules, disallow_modules, serializable) == (
        allow.allow_modules, allow.disallow_modules, allow.serializable)
    assert sorted(runtime.__all__) == sorted({
        "durable", "snapshot", "restore", "detach", "serializable", "allow_modules", "disallow_modules",
        "SnapshotError", "NotDurableError", "GeneratorStateError", "UnserializableValueError",
        "IncompatibleCodeError", "NotAllowedError", "SignatureError", "CorruptSnapshotError",
        "DurableCompileError", "inspect_snapshot", "SnapshotInfo", "register_codec", "configure",
        "restore_settings", "Settings",
        # durable programs (runtime.programs.requests)
        "sleep", "wait", "step", "checkpoint", "suspend", "current_step", "RetryPolicy", "StepContext", "SignalTimeout",
        "StepFailed", "gather", "race", "first",  # (runtime.programs.combinators)
        # deploys (runtime.points, runtime.compat, runtime.migrations)
        "point", "PointMismatchError", "SnapshotFormatTooNewError", "migration", "OldFrame", "Resume", "Cancel",
        "MigrationError", "MigrationCancelled",
    })
    from runtime.programs import requests
    assert (runtime.sleep, runtime.wait, runtime.step, runtime.SignalTimeout) == (
        requests.sleep, requests.wait, requests.step, requests.SignalTimeout)
    assert all(hasattr(runtime, name) for name in runtime.__all__)


def test_runtime_does_not_import_compiler():
    proc = run_python("""
        import sys
        import runtime
        bad = [m for m in ("libcst", "transpiler") if m in sys.modules]
        print("BAD", bad)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "BAD []" in proc.stdout, proc.stdout


def test_runtime_loads_the_standard_value_kinds_on_first_use():
    proc = run_python("""
        import sys
        import runtime
        heavy = ("runtime.values.stdlib_kinds", "runtime.values.iterator_kinds", "runtime.values.inspection",
                 "zoneinfo", "uuid", "hmac")
        print("AT IMPORT", [m for m in heavy if m in sys.modules])
        from runtime.values import objects
        print("MADE", type(objects.create("uuid", [b"\\x01" * 16, None])).__name__)
        print("AFTER", [m for m in heavy[:2] if m not in sys.modules])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "AT IMPORT []" in proc.stdout, proc.stdout
    assert "MADE UUID" in proc.stdout and "AFTER []" in proc.stdout, proc.stdout


def test_error_hierarchy():
    from runtime import NotAllowedError, SignatureError
    for cls in (UnserializableValueError, IncompatibleCodeError, CorruptSnapshotError,
                NotDurableError, GeneratorStateError, NotAllowedError, SignatureError):
        assert issubclass(cls, SnapshotError)


# ============================================================================ restore


def test_restore_just_created_generator():
    mod = explicit(SIMPLE)
    data = snapshot(mod.gen(3))
    assert isinstance(data, bytes)
    r = restore(data)
    assert inspect.isgenerator(r)
    with pytest.raises(TypeError):
        r.send(1)  # still "just started"
    r = restore(data)
    assert [next(r), r.send(10), r.send(20)] == [0, 1, 2]
    with pytest.raises(StopIteration) as ei:
        r.send(30)
    assert ei.value.value == 60


def test_restore_returns_real_suspended_generator():
    mod = explicit(SIMPLE)
    g = mod.gen(4)
    next(g)
    g.send(5)
    data = snapshot(g)
    detach(g)
    r = restore(data)
    assert inspect.isgenerator(r)
    assert inspect.getgeneratorstate(r) == inspect.GEN_SUSPENDED
    assert r.gi_code.co_filename == mod.__file__
    assert list(r) == [2, 3]
    assert mod.LOG == [("total", 5)]


def test_snapshot_does_not_disturb_original_and_restore_forks():
    mod = explicit(SIMPLE)
    g = mod.gen(4)
    next(g)
    data = snapshot(g)
    # the original continues as if nothing happened
    assert [g.send(1), g.send(2), g.send(3)] == [1, 2, 3]
    # two restores of the same bytes are independent
    a, b = restore(data), restore(data)
    assert a is not b
    assert a.send(100) == 1
    assert b.send(7) == 1
    assert list(a) == [2, 3]
    assert list(b) == [2, 3]
    assert [x for x in mod.LOG] == [("total", 100), ("total", 7)]
    with pytest.raises(StopIteration):
        next(g)


def _some_snapshot() -> bytes:
    mod = explicit(SIMPLE)
    g = mod.gen(5)
    next(g)
    g.send(3)
    data = snapshot(g)
    detach(g)
    return data


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"garbage bytes that are not a snapshot", b"\xff" * 64, bytes(range(256)),
    msgpack.packb(None), msgpack.packb([1, 2, 3]), msgpack.packb({"a": 1}), msgpack.packb("x"),
    msgpack.packb([None] * 8), msgpack.packb({"version": 10**6, "frames": []}),
], ids=lambda d: repr(d[:12]))
def test_restore_garbage_is_corrupt(data):
    with pytest.raises(CorruptSnapshotError):
        restore(data)


def test_restore_truncated_is_corrupt():
    data = _some_snapshot()
    assert restore(data) is not None
    for cut in range(len(data)):
        with pytest.raises(CorruptSnapshotError):
            restore(data[:cut])


def test_restore_trailing_garbage_is_corrupt():
    data = _some_snapshot()
    with pytest.raises(CorruptSnapshotError):
        restore(data + b"\x00junk")


# ============================================================================ code changes

V1 = """
from runtime import durable
LOG = []

def other():
    return 1

@durable
def gen(n):
    for i in range(n):
        yield i
"""

V2_BODY_CHANGED = V1.replace("yield i", "yield i * 2")
V3_REMOVED = V1.replace("def gen(n):", "def renamed(n):")
V1_COMMENTS = V1.replace("@durable", "# a comment added above\n\n\n@durable").replace(
    "    for i", "    # another comment\n    for  i")
V1_OTHER_CHANGED = V1.replace("return 1", "return 2")


def _snapshot_in_dir(source: str, name: str, directory: Path) -> bytes:
    mod = load_compiled(source, all_generators=False, name=name, directory=directory)
    g = mod.gen(4)
    next(g)
    data = snapshot(g)
    detach(g)
    unload(mod)
    return data


def _restore_in_child(data: bytes, name: str, source: str) -> dict:
    """Compile ``source`` as module ``name`` into a new dir and restore ``data`` in a new process."""
    from transpiler import compile_source

    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    (directory / f"{name}.py").write_text(
        compile_source(textwrap.dedent(source), str(directory / f"{name}.py")))
    snap = directory / "data.snap"
    snap.write_bytes(data)
    proc = run_python(f"""
        import json
        from runtime import allow_modules, restore
        allow_modules({name!r})  # restore imports only allowed modules
        try:
            g = restore(open({str(snap)!r}, "rb").read())
            out = {{"ok": list(g)}}
        except Exception as e:
            out = {{"error": type(e).__name__, "message": str(e)}}
        print("RESULT" + json.dumps(out))
    """, paths=[directory])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, proc.stderr
    return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.parametrize("new_source", [V2_BODY_CHANGED, V3_REMOVED], ids=["changed", "removed"])
def test_restore_against_changed_code_fresh_process(new_source):
    name = unique_module_name("versioned")
    data = _snapshot_in_dir(V1, name, Path(tempfile.mkdtemp(dir=tmp_module_dir())))
    assert _restore_in_child(data, name, V1) == {"ok": [1, 2, 3]}
    out = _restore_in_child(data, name, new_source)
    assert out.get("error") == "PointMismatchError", out  # an IncompatibleCodeError naming the point
    assert "gen" in out["message"], out


@pytest.mark.parametrize("new_source", [V1_COMMENTS, V1_OTHER_CHANGED],
                         ids=["comments_and_blank_lines", "unrelated_function_changed"])
def test_restore_survives_irrelevant_changes(new_source):
    # DESIGN.md: the fingerprint is of the function's normalized code (comments/formatting excluded)
    name = unique_module_name("versioned")
    data = _snapshot_in_dir(V1, name, Path(tempfile.mkdtemp(dir=tmp_module_dir())))
    assert _restore_in_child(data, name, new_source) == {"ok": [1, 2, 3]}


def test_restore_against_reloaded_module_same_process():
    name = unique_module_name("reloaded")
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    sys.path.insert(0, str(directory))
    try:
        mod = load_compiled(V1, all_generators=False, name=name, directory=directory)
        g = mod.gen(4)
        next(g)
        data = snapshot(g)
        load_compiled(V2_BODY_CHANGED, all_generators=False, name=name, directory=directory)
        with pytest.raises(IncompatibleCodeError) as ei:
            restore(data)
        assert "gen" in str(ei.value)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(name, None)


# ============================================================================ detach

DETACH_SRC = """
from runtime import durable
LOG = []

class CM:
    def __enter__(self):
        LOG.append("enter")
        return self
    def __exit__(self, *exc):
        LOG.append("exit")
        return False

@durable
def inner():
    try:
        yield "inner"
    finally:
        LOG.append("inner finally")

@durable
def plain_finally():
    try:
        try:
            yield 1
        except GeneratorExit:
            LOG.append("GeneratorExit")
            raise
    finally:
        LOG.append("finally")

@durable
def with_manager():
    with CM():
        yield 1

@durable
def delegating():
    try:
        yield from inner()
    finally:
        LOG.append("outer finally")

@durable
def ignores_exit():
    while True:
        try:
            yield 1
        except GeneratorExit:
            LOG.append("ignored")
"""


class _Unraisable:
    def __init__(self):
        self.seen = []

    def __enter__(self):
        self.old = sys.unraisablehook
        sys.unraisablehook = self.seen.append
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self.old


@pytest.mark.parametrize("entry", ["plain_finally", "with_manager", "delegating", "ignores_exit"])
def test_detach_runs_no_cleanup_and_warns_nothing(entry):
    mod = explicit(DETACH_SRC)
    g = getattr(mod, entry)()
    next(g)
    before = list(mod.LOG)
    with warnings.catch_warnings(record=True) as caught, _Unraisable() as unraisable:
        warnings.simplefilter("always")
        detach(g)
        del g
        gc.collect()
    assert mod.LOG == before, "detach ran clean-up code"
    assert caught == [] and unraisable.seen == []


@pytest.mark.parametrize("entry", ["plain_finally", "delegating"])
def test_detach_after_snapshot_restored_copy_cleans_up_once(entry):
    mod = explicit(DETACH_SRC)
    g = getattr(mod, entry)()
    next(g)
    data = snapshot(g)
    with warnings.catch_warnings(record=True) as caught, _Unraisable() as unraisable:
        warnings.simplefilter("always")
        detach(g)
        del g
        gc.collect()
    assert mod.LOG == [] and caught == [] and unraisable.seen == []
    native = load_native(DETACH_SRC)
    ng = getattr(native, entry)()
    next(ng)
    ng.close()
    r = restore(data)
    r.close()
    assert mod.LOG == native.LOG


def test_detach_just_created():
    mod = explicit(DETACH_SRC)
    g = mod.plain_finally()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detach(g)
        del g
        gc.collect()
    assert mod.LOG == [] and caught == []


# ============================================================================ explicit-mode shapes

def test_methods_and_nested_functions_explicit_mode():
    src = """
    from runtime import durable
    LOG = []

    class K:
        base = 100

        @durable
        def plain(self, n):
            base = self.base
            for i in range(n):
                x = yield base + i
                LOG.append(("plain", x))

        @staticmethod
        @durable
        def st(n):
            for i in range(n):
                yield ("st", i)

        @classmethod
        @durable
        def cm(cls, n):
            name = cls.__name__
            for i in range(n):
                yield (name, i)

    def outer(k):
        @durable
        def inner(n, step=k):
            for i in range(n):
                yield (i + k, step)
            return k
        return inner

    def undecorated():
        yield "plain"
    """
    # self / cls are live only at the start (index 0), before their first use
    differential(src, [NEXT, send("a"), send("b"), NEXT], entry="K().plain(3)",
                 all_generators=False, allow_unserializable={0})
    differential(src, nexts(4), entry="K.st(3)", all_generators=False)
    differential(src, nexts(4), entry="K().st(2)", all_generators=False)
    differential(src, nexts(4), entry="K.cm(3)", all_generators=False, allow_unserializable={0})
    differential(src, nexts(4), entry="outer(10)(3)", all_generators=False)

    mod = explicit(src)
    g = mod.undecorated()
    with pytest.raises(NotDurableError):
        snapshot(g)


def test_parameters_explicit_mode():
    src = """
    from runtime import durable

    @durable
    def gen(a, b=2, /, c=3, *args, d, e=5, **kwargs):
        yield (a, b, c)
        yield args
        yield (d, e)
        yield sorted(kwargs.items())
        return (a, args, kwargs)
    """
    for entry in ["gen(1, d=4)", "gen(1, 2, 3, 4, 5, d=6, e=7, f=8, g=9)", "gen(0, c=1, d=2)"]:
        differential(src, nexts(6), entry=entry, all_generators=False)


def test_decorators_stacked_above_durable():
    src = """
    import functools
    from runtime import durable
    LOG = []
    REGISTRY = {}

    def logged(f):
        @functools.wraps(f)
        def wrapper(*a, **k):
            LOG.append(("call", f.__name__, a))
            return f(*a, **k)
        return wrapper

    def register(f):
        REGISTRY[f.__name__] = f
        return f

    @logged
    @register
    @durable
    def gen(n):
        "the doc"
        for i in range(n):
            yield i * i
    """
    differential(src, nexts(5), entry="gen(3)", all_generators=False)
    differential(src, nexts(5), entry="REGISTRY['gen'](3)", all_generators=False)
    native, mod = load_native(src), explicit(src)
    assert mod.gen.__name__ == native.gen.__name__ == "gen"
    assert mod.gen.__doc__ == native.gen.__doc__ == "the doc"
    assert inspect.isgeneratorfunction(mod.REGISTRY["gen"])


def test_docstrings_kept():
    src = '''
    from runtime import durable

    @durable
    def gen():
        """Yields things.

        More text.
        """
        yield 1
        "not a docstring"
        yield 2

    @durable
    def single():
        'single-quoted'
        return
        yield
    '''
    native, mod = load_native(src), explicit(src)
    assert mod.gen.__doc__ == native.gen.__doc__
    assert mod.single.__doc__ == native.single.__doc__
    differential(src, nexts(3), all_generators=False)
    differential(src, nexts(1), entry="single()", all_generators=False)


def test_recursive_tree_walk():
    src = """
    from runtime import durable
    LOG = []
    TREE = ("root", [("a", [("a1", []), ("a2", [("a2x", [])])]), ("b", []), ("c", [("c1", [])])])

    @durable
    def walk(node, depth=0):
        value, children = node
        x = yield (depth, value)
        if x:
            LOG.append((value, x))
        for child in children:
            r = yield from walk(child, depth + 1)
            LOG.append(("child done", r))
        return value
    """
    differential(src, [NEXT, send("s1"), NEXT, send("s2"), NEXT, NEXT, NEXT, send("s3"), NEXT,
                       NEXT, NEXT], entry="walk(TREE)", all_generators=False)
    differential(src, [NEXT, NEXT, NEXT, throw(KeyError("deep")), NEXT], entry="walk(TREE)",
                 all_generators=False)


CHAIN = """
from runtime import durable
LOG = []

@durable
def c(n):
    try:
        for i in range(n):
            x = yield ("c", i)
            LOG.append(("c got", x))
    except ValueError as e:
        LOG.append(("c caught", e.args))
        yield "c handled"
    return "c-done"

@durable
def b(n):
    r = yield from c(n)
    yield ("b", r)
    return "b-done"

@durable
def a(n):
    r = yield from b(n)
    yield ("a", r)
"""


def test_yield_from_chain_three_deep():
    differential(CHAIN, [NEXT, send(1), send(2), NEXT, NEXT, NEXT], entry="a(3)",
                 all_generators=False)
    differential(CHAIN, [NEXT, send(1), throw(ValueError("v")), NEXT, NEXT, NEXT], entry="a(3)",
                 all_generators=False)
    differential(CHAIN, [NEXT, send(1), CLOSE], entry="a(3)", all_generators=False)


def test_yield_from_chain_restored_structure():
    mod = explicit(CHAIN)
    g = mod.a(3)
    next(g)
    g.send("x")
    data = snapshot(g)
    detach(g)
    r = restore(data)
    chain = []
    cur = r
    while cur is not None:
        chain.append(cur.gi_code.co_name if inspect.isgenerator(cur) else type(cur).__name__)
        cur = getattr(cur, "gi_yieldfrom", None)
    assert chain == ["a", "b", "c"]
    assert r.send("y") == ("c", 2)
    assert mod.LOG == [("c got", "x"), ("c got", "y")]


# ============================================================================ unserializable values

UNSER = """
import threading
from runtime import durable
LOG = []

@durable
def worker(n):
    total = n
    client = threading.Lock()
    yield total                                   # SUSPEND-1
    client.acquire()
    items = [1, {"k": threading.Lock()}]
    yield len(items)                              # SUSPEND-2
    LOG.append(items)
"""


def _line(src: str, marker: str) -> int:
    src = textwrap.dedent(src)
    return next(i for i, ln in enumerate(src.splitlines(), 1) if marker in ln)


def test_unserializable_value_error_names_variable_type_function_line():
    mod = explicit(UNSER)
    g = mod.worker(3)
    assert next(g) == 3
    with pytest.raises(UnserializableValueError) as ei:
        snapshot(g)
    e = ei.value
    msg = str(e)
    assert "client" in msg, msg
    assert "lock" in msg.lower(), msg
    assert "worker" in msg, msg
    assert re.search(rf"\b{_line(UNSER, 'SUSPEND-1')}\b", msg), msg
    assert e.path and "client" in e.path[0], e.path
    assert "lock" in e.type_name.lower(), e.type_name
    # the generator is undisturbed
    assert next(g) == 2


def test_unserializable_value_error_path_into_containers():
    mod = explicit(UNSER)
    g = mod.worker(3)
    next(g)
    next(g)
    with pytest.raises(UnserializableValueError) as ei:
        snapshot(g)
    e = ei.value
    assert "items" in str(e) and re.search(rf"\b{_line(UNSER, 'SUSPEND-2')}\b", str(e)), str(e)
    assert e.path == ["local 'items'", "[1]", "['k']"], e.path
    assert "lock" in e.type_name.lower()


def test_dead_unserializable_local_does_not_block_snapshot():
    mod = explicit("""
    import threading
    from runtime import durable

    @durable
    def gen():
        lock = threading.Lock()
        n = 1 if lock.acquire(False) else 0
        yield n                      # lock is dead here
        yield n + 1
    """)
    g = mod.gen()
    assert next(g) == 1
    data = snapshot(g)
    detach(g)
    assert list(restore(data)) == [2]
