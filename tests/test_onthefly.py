"""``@durable`` in a module that was NOT compiled (README, ``runtime.durable``): "In a module that was
not compiled it compiles the function on the fly when the transpiler is installed, or raises
``DurableCompileError`` saying how to compile it."

Each program is written to a file and imported normally (no import hook).  Expected behaviour comes
from a native twin: the same file with ``durable`` replaced by the identity, driven by the same
operations without a snapshot.
"""
from __future__ import annotations

import importlib
import inspect
import itertools
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

import runtime
from runtime import DurableCompileError

ROOT = Path(__file__).resolve().parent.parent
_ids = itertools.count(1)

NATIVE_IMPORT = "from runtime import durable"
NATIVE_STUB = "durable = lambda fn: fn  # native twin: identity"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def load(tmp_path: Path, monkeypatch):
    """load(source) -> (module imported normally, native twin module)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def _load(source: str, *, native: bool = True):
        source = src(source)
        assert NATIVE_IMPORT in source
        name = f"dg_fly_{os.getpid()}_{next(_ids)}"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        (tmp_path / f"{name}_native.py").write_text(source.replace(NATIVE_IMPORT, NATIVE_STUB), encoding="utf-8")
        importlib.invalidate_caches()
        names.extend([name, name + "_native"])
        mod = importlib.import_module(name)
        twin = importlib.import_module(name + "_native") if native else None
        return mod, twin

    yield _load
    for name in names:
        sys.modules.pop(name, None)


def outcome(gen, op):
    try:
        if op[0] == "next":
            return ("value", next(gen))
        if op[0] == "send":
            return ("value", gen.send(op[1]))
        if op[0] == "throw":
            return ("value", gen.throw(op[1]))
    except StopIteration as stop:
        return ("return", stop.value)
    except Exception as exc:  # noqa: BLE001 - compared with the native run
        return ("raise", type(exc).__name__, str(exc))
    raise AssertionError(op)


def drive(gen, ops, snapshot_at=None):
    """Apply ``ops``; before op number ``snapshot_at`` snapshot, detach and continue on the restored
    generator."""
    trace = []
    for i, op in enumerate(ops):
        if i == snapshot_at:
            data = runtime.snapshot(gen)
            assert isinstance(data, bytes)
            runtime.detach(gen)
            gen = runtime.restore(data)
            assert inspect.isgenerator(gen)
        trace.append(outcome(gen, op))
    return trace


def same_as_native(make_compiled, make_native, ops):
    """Native trace, then the compiled one with a snapshot before every possible step."""
    want = drive(make_native(), ops)
    assert drive(make_compiled(), ops) == want
    for k in range(1, len(ops)):
        if want[k - 1][0] != "value":
            break
        assert drive(make_compiled(), ops, snapshot_at=k) == want, f"snapshot before step {k}"
    return want


NEXT = ("next",)


def send(v):
    return ("send", v)


# ============================================================================ top-level generator


TOP = """
    from runtime import durable


    @durable
    def running_total(limit):
        total = 0
        for i in range(limit):
            got = yield total
            total += got if got is not None else i
        return total
"""


def test_top_level_generator_round_trips(load):
    mod, twin = load(TOP)
    assert getattr(mod.running_total, "__durable__", None) is not None
    ops = [NEXT, send(10), send(5), NEXT, send(1), NEXT]
    want = same_as_native(lambda: mod.running_total(4), lambda: twin.running_total(4), ops)
    assert want[-1][0] == "return"


def test_top_level_generator_restores_in_a_fresh_process(load, tmp_path: Path):
    mod, twin = load(TOP)
    gen = mod.running_total(3)
    next(gen)
    gen.send(10)
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    (tmp_path / "fly.snap").write_bytes(data)
    native = twin.running_total(3)
    next(native)
    native.send(10)
    want = [native.send(5)]
    try:
        native.send(7)
    except StopIteration as stop:
        want.append(stop.value)
    code = textwrap.dedent("""
        import runtime
        runtime.allow_modules(%r)  # restore imports only allowed modules
        gen = runtime.restore(open("fly.snap", "rb").read())
        out = [gen.send(5)]
        try:
            gen.send(7)
        except StopIteration as stop:
            out.append(stop.value)
        print(out)
    """ % mod.__name__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(want)


# ============================================================================ methods


METHODS = """
    from runtime import durable


    class Base:
        def label(self, i):
            return f"base-{i}"


    class Child(Base):
        def __init__(self, tag):
            self.tag = tag

        def label(self, i):
            return "child"

        @durable
        def walk(self, n):
            for i in range(n):
                got = yield (super().label(i), self.tag, i)
                if got:
                    self.tag = got
            return self.tag

        @staticmethod
        @durable
        def static_outer(n):
            for i in range(n):
                x = yield i * 3
            return "static-outer"

        @durable
        @staticmethod
        def static_inner(n):
            for i in range(n):
                x = yield i * 5
            return "static-inner"

        @classmethod
        @durable
        def class_outer(cls, n):
            for i in range(n):
                x = yield (cls.__name__, i)
            return "class-outer"

        @durable
        @classmethod
        def class_inner(cls, n):
            for i in range(n):
                x = yield (cls.__name__, i * 7)
            return "class-inner"


    class GrandChild(Child):
        pass
"""


def test_method_with_zero_arg_super(load):
    mod, twin = load(METHODS)
    ops = [NEXT, NEXT, send("renamed"), NEXT, NEXT]
    want = same_as_native(lambda: mod.Child("t").walk(3), lambda: twin.Child("t").walk(3), ops)
    assert want[0] == ("value", ("base-0", "t", 0))
    # through a subclass instance the zero-arg super() still starts after Child
    want = same_as_native(lambda: mod.GrandChild("g").walk(2), lambda: twin.GrandChild("g").walk(2), ops[:3])
    assert want[0] == ("value", ("base-0", "g", 0))


@pytest.mark.parametrize("name", ["static_outer", "static_inner"])
def test_staticmethod_both_decorator_orders(load, name):
    mod, twin = load(METHODS)
    assert isinstance(inspect.getattr_static(mod.Child, name), staticmethod)
    ops = [NEXT, NEXT, send(1), NEXT, NEXT]
    same_as_native(lambda: getattr(mod.Child, name)(3), lambda: getattr(twin.Child, name)(3), ops)
    same_as_native(lambda: getattr(mod.Child("x"), name)(3), lambda: getattr(twin.Child("x"), name)(3), ops)


@pytest.mark.parametrize("name", ["class_outer", "class_inner"])
def test_classmethod_both_decorator_orders(load, name):
    mod, twin = load(METHODS)
    assert isinstance(inspect.getattr_static(mod.Child, name), classmethod)
    ops = [NEXT, NEXT, send(1), NEXT, NEXT]
    same_as_native(lambda: getattr(mod.Child, name)(3), lambda: getattr(twin.Child, name)(3), ops)
    want = same_as_native(lambda: getattr(mod.GrandChild, name)(2), lambda: getattr(twin.GrandChild, name)(2),
                          ops[:3])
    assert want[0][1][0] == "GrandChild"


# ============================================================================ nested closures


NESTED = """
    from runtime import durable


    def make(base):
        def rebase(value):
            nonlocal base
            base = value

        @durable
        def counter(n):
            for i in range(n):
                got = yield base + i
            return base

        return counter, rebase
"""


def test_nested_generator_sees_its_closure_after_restore(load):
    mod, twin = load(NESTED)
    for base in (100, 200):
        same_as_native(lambda: mod.make(base)[0](3), lambda: twin.make(base)[0](3), [NEXT, NEXT, NEXT, NEXT])
    a, _ = mod.make(1000)
    b, _ = mod.make(2000)
    ga, gb = a(3), b(3)
    assert (next(ga), next(gb)) == (1000, 2000)
    ra = runtime.restore(runtime.snapshot(ga))
    rb = runtime.restore(runtime.snapshot(gb))
    assert (next(ra), next(rb)) == (1001, 2001)
    assert a.__qualname__ == "make.<locals>.counter"


def test_nested_generator_sees_the_value_current_at_snapshot(load):
    mod, _ = load(NESTED)
    counter, rebase = mod.make(10)
    gen = counter(3)
    assert next(gen) == 10
    rebase(50)                       # the cell changes before the snapshot
    restored = runtime.restore(runtime.snapshot(gen))
    runtime.detach(gen)
    assert next(restored) == 51
    assert next(restored) == 52
    with pytest.raises(StopIteration) as stop:
        next(restored)
    assert stop.value.value == 50


# ============================================================================ signatures


SIGNATURES = """
    from runtime import durable


    @durable
    def flexible(a, b: int = 2, *args, c, d="dee", **kwargs) -> "Iterator":
        \"\"\"Yield the arguments one by one.\"\"\"
        got = yield (a, b)
        got2 = yield (args, c, d)
        yield sorted(kwargs.items())
        return (got, got2)
"""


CALLS = [
    ((1,), {"c": 3}),
    ((1, 5, 6, 7), {"c": 3, "d": "D", "x": 9, "y": [1]}),
    ((), {"a": 0, "c": None, "z": "zed"}),
]


@pytest.mark.parametrize("args,kwargs", CALLS)
def test_defaults_kwonly_varargs_varkw(load, args, kwargs):
    mod, twin = load(SIGNATURES)
    ops = [NEXT, send("s1"), send("s2"), NEXT]
    want = same_as_native(lambda: mod.flexible(*args, **kwargs), lambda: twin.flexible(*args, **kwargs), ops)
    assert want[-1][0] == "return"


def test_bad_call_raises_like_native(load):
    mod, twin = load(SIGNATURES)
    with pytest.raises(TypeError):
        twin.flexible(1)             # c is keyword-only and required
    with pytest.raises(TypeError):
        mod.flexible(1)


def test_metadata_preserved(load):
    mod, twin = load(SIGNATURES + METHODS.replace("from runtime import durable\n", ""))
    for name in ("flexible",):
        fn, native = getattr(mod, name), getattr(twin, name)
        assert inspect.signature(fn) == inspect.signature(native)
        assert str(inspect.signature(fn)) == "(a, b: int = 2, *args, c, d='dee', **kwargs) -> 'Iterator'"
        assert fn.__name__ == "flexible"
        assert fn.__qualname__ == "flexible"
        assert fn.__doc__ == "Yield the arguments one by one."
        assert fn.__module__ == mod.__name__
        assert fn.__defaults__ == native.__defaults__ and fn.__kwdefaults__ == native.__kwdefaults__
        assert inspect.isgeneratorfunction(fn)
    for name in ("walk", "static_outer", "static_inner", "class_outer", "class_inner"):
        fn, native = getattr(mod.Child, name), getattr(twin.Child, name)
        assert fn.__name__ == native.__name__ == name
        assert fn.__qualname__ == native.__qualname__ == f"Child.{name}"
        assert inspect.signature(fn) == inspect.signature(native)


# ============================================================================ tracebacks


TRACEBACKS = """
    from runtime import durable


    @durable
    def top(fail_early):
        if fail_early:
            raise KeyError("early")
        x = yield 1
        raise ValueError("after resume")


    class Holder:
        @durable
        def method(self):
            yield 1
            raise LookupError("in method")


    def make():
        @durable
        def nested():
            yield 1
            raise RuntimeError("in nested")
        return nested
"""


def last_frame(exc: BaseException):
    return traceback.extract_tb(exc.__traceback__)[-1]


def _expect(module, needle: str):
    path = Path(module.__file__)
    lines = path.read_text(encoding="utf-8").splitlines()
    numbers = [n for n, text in enumerate(lines, 1) if needle in text]
    assert len(numbers) == 1
    return str(path), numbers[0], lines[numbers[0] - 1].strip()


@pytest.mark.parametrize("case", ["early", "late", "late-restored", "method", "method-restored",
                                  "nested", "nested-restored"])
def test_tracebacks_point_at_the_original_file_and_line(load, case):
    mod, _ = load(TRACEBACKS)
    factories = {
        "early": (lambda: mod.top(True), 'raise KeyError("early")', 0),
        "late": (lambda: mod.top(False), 'raise ValueError("after resume")', 1),
        "method": (lambda: mod.Holder().method(), 'raise LookupError("in method")', 1),
        "nested": (lambda: mod.make()(), 'raise RuntimeError("in nested")', 1),
    }
    make, needle, steps = factories[case.replace("-restored", "")]
    gen = make()
    for _ in range(steps):
        next(gen)
    if case.endswith("-restored"):
        gen = runtime.restore(runtime.snapshot(gen))
    with pytest.raises(Exception) as info:
        next(gen)
    frame = last_frame(info.value)
    path, line, text = _expect(mod, needle)
    assert (frame.filename, frame.lineno, frame.line) == (path, line, text)


# ============================================================================ errors


def test_durable_on_a_non_generator_in_a_module_raises(load):
    with pytest.raises(DurableCompileError) as info:
        load("""
            from runtime import durable


            @durable
            def compute(x):
                return x + 1
        """, native=False)
    assert "compute" in str(info.value)


def test_durable_on_non_generators_directly():
    def plain():
        return 1

    with pytest.raises(DurableCompileError):
        runtime.durable(plain)
    with pytest.raises(DurableCompileError):
        runtime.durable(lambda: 1)
    with pytest.raises(DurableCompileError):
        runtime.durable(staticmethod(plain))

    async def agen():
        yield 1

    with pytest.raises(DurableCompileError):
        runtime.durable(agen)
    assert issubclass(DurableCompileError, Exception)


BLOCKED = """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "transpiler" or name.startswith("transpiler."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import runtime
    try:
        import {module}
    except runtime.DurableCompileError as exc:
        print("DurableCompileError:", exc)
    else:
        print("imported without error")
    assert "transpiler" not in sys.modules
    assert "libcst" not in sys.modules
"""


def test_without_the_transpiler_durable_says_how_to_compile(tmp_path: Path):
    name = f"dg_fly_blocked_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(src(TOP), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BLOCKED).replace("{module}", name)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("DurableCompileError:"), out
    assert "durable compile" in out or "install_import_hook" in out or "import hook" in out, out
    assert "running_total" in out


def test_getsource_and_first_line_match_native(load):
    """The compiled function's code object starts where the native one does, so ``inspect`` finds
    the same source (decorators included)."""
    mod, twin = load(METHODS + TOP.replace("from runtime import durable\n", ""))
    pairs = [(mod.running_total, twin.running_total)]
    pairs += [(getattr(mod.Child, n), getattr(twin.Child, n)) for n in ("walk", "static_outer", "class_outer")]
    for fn, native in pairs:
        fn = getattr(fn, "__func__", fn)
        native = getattr(native, "__func__", native)
        assert fn.__code__.co_firstlineno == native.__code__.co_firstlineno, fn.__qualname__
        assert inspect.getsource(fn) == inspect.getsource(native), fn.__qualname__


# ============================================================================ coroutines


ASYNC = """
    from runtime import durable
    from runtime.programs.requests import suspend


    @durable
    async def total_of(limit):
        total = 0
        for i in range(limit):
            total += await suspend(total)
        return total


    class Service:
        @durable
        async def double(self, n):
            return 2 * await total_of(n)
"""


def _run_coroutine(coro, answers, snapshot_at=None):
    """Answer each suspension of ``coro`` from ``answers``; before answer ``snapshot_at``, snapshot, detach and
    go on with the restored coroutine. The values it yielded and its result."""
    seen = [coro.send(None)]
    for i, answer in enumerate(answers):
        if i == snapshot_at:
            data = runtime.snapshot(coro)
            runtime.detach(coro)
            coro = runtime.restore(data)
            assert inspect.iscoroutine(coro)
        try:
            seen.append(coro.send(answer))
        except StopIteration as stop:
            return seen, stop.value
    raise AssertionError("the coroutine did not finish")


def test_coroutine_compiled_on_the_fly_round_trips(load):
    mod, twin = load(ASYNC)
    assert inspect.iscoroutinefunction(mod.total_of) and mod.total_of.__durable__ is not None
    assert mod.Service.double.__durable__ is not None
    want = _run_coroutine(twin.Service().double(3), [1, 2, 3])
    for k in range(3):
        assert _run_coroutine(mod.Service().double(3), [1, 2, 3], snapshot_at=k) == want
