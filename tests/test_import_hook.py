"""``transpiler.install_import_hook`` (README: "transpiler"): compiles the named modules and packages
(a package covers its submodules) when they are imported; returns a handle with ``.uninstall()`` that
is also a context manager.  "Tracebacks of code compiled by the import hook point at your original
file and lines."  ``runtime`` needs only msgpack.

Whether a generator function was compiled is observed through the public API: ``runtime.snapshot``
works on a compiled generator and raises ``NotDurableError`` on a native one.
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
from runtime import NotDurableError
from transpiler import install_import_hook

ROOT = Path(__file__).resolve().parent.parent
_ids = itertools.count(1)


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


MODULE = src('''
    """A module with a durable generator first and ordinary code after it."""
    import os
    from runtime import durable

    SCALE = 3


    @durable
    def durable_gen(n):
        """Durable doc."""
        total = 0
        for i in range(n):
            got = yield i * SCALE
            total += got or 0
        return total


    def undecorated_gen(n):
        for i in range(n):
            yield i


    def plain_after(x):
        """A plain function defined after the durable one."""
        y = x * SCALE
        if y > 5:
            raise ValueError(f"too big: {y}")
        return y


    class Later:
        def method(self):
            return {}["missing"]
''')


def line_of(text: str, needle: str) -> int:
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


@pytest.fixture
def space(tmp_path: Path, monkeypatch):
    """A fresh directory on sys.path; removes hooks and imported modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before_path = list(sys.meta_path)
    before_modules = set(sys.modules)
    yield tmp_path
    for finder in list(sys.meta_path):
        if finder not in before_path:
            sys.meta_path.remove(finder)
    for name in set(sys.modules) - before_modules:
        if name.startswith("dg_hook_"):
            del sys.modules[name]


def unique(tag: str) -> str:
    return f"dg_hook_{os.getpid()}_{next(_ids)}_{tag}"


def write_module(directory: Path, name: str, text: str = MODULE) -> Path:
    path = directory / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    importlib.invalidate_caches()
    return path


def write_package(directory: Path, name: str) -> None:
    pkg = directory / name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(MODULE, encoding="utf-8")
    (pkg / "leaf.py").write_text(MODULE, encoding="utf-8")
    (pkg / "sub" / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "sub" / "deep.py").write_text(MODULE, encoding="utf-8")
    importlib.invalidate_caches()


def is_compiled(gen) -> bool:
    try:
        data = runtime.snapshot(gen)
    except NotDurableError:
        return False
    runtime.detach(gen)
    return isinstance(data, bytes)


def round_trip(mod) -> None:
    gen = mod.durable_gen(3)
    assert next(gen) == 0
    assert gen.send(4) == 3
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    later = runtime.restore(data)
    assert later.send(5) == 6
    with pytest.raises(StopIteration) as stop:
        later.send(6)
    assert stop.value.value == 15


# ============================================================================ the handle


def test_handle_uninstall(space):
    name = unique("uninstall")
    write_module(space, name)
    hook = install_import_hook([name], all_generators=True)
    assert hook in sys.meta_path
    mod = importlib.import_module(name)
    assert is_compiled(mod.undecorated_gen(2))
    round_trip(mod)
    hook.uninstall()
    assert hook not in sys.meta_path
    hook.uninstall()  # idempotent
    # modules imported after uninstall are not compiled
    later = unique("after_uninstall")
    write_module(space, later)
    mod2 = importlib.import_module(later)
    assert not is_compiled(mod2.undecorated_gen(2))


def test_handle_is_a_context_manager(space):
    name, after = unique("ctx"), unique("ctx_after")
    write_module(space, name)
    write_module(space, after)
    with install_import_hook([name, after], all_generators=True) as hook:
        assert hook in sys.meta_path
        mod = importlib.import_module(name)
    assert hook not in sys.meta_path
    assert is_compiled(mod.undecorated_gen(2))
    round_trip(mod)
    mod_after = importlib.import_module(after)
    assert not is_compiled(mod_after.undecorated_gen(2))


def test_context_manager_uninstalls_on_error(space):
    with pytest.raises(ZeroDivisionError):
        with install_import_hook([unique("err")]) as hook:
            1 / 0
    assert hook not in sys.meta_path


def test_a_single_module_name_as_a_string(space):
    name = unique("string")
    write_module(space, name)
    with install_import_hook(name, all_generators=True):
        mod = importlib.import_module(name)
    assert is_compiled(mod.undecorated_gen(2))


# ============================================================================ what gets compiled


def test_package_covers_its_submodules(space):
    pkg = unique("pkg")
    write_package(space, pkg)
    with install_import_hook([pkg], all_generators=True):
        top = importlib.import_module(pkg)
        leaf = importlib.import_module(f"{pkg}.leaf")
        deep = importlib.import_module(f"{pkg}.sub.deep")
    for mod in (top, leaf, deep):
        assert is_compiled(mod.undecorated_gen(2)), mod.__name__
        round_trip(mod)


def test_submodule_name_covers_only_that_submodule(space):
    pkg = unique("pkgsub")
    write_package(space, pkg)
    with install_import_hook([f"{pkg}.sub"], all_generators=True):
        top = importlib.import_module(pkg)
        leaf = importlib.import_module(f"{pkg}.leaf")
        deep = importlib.import_module(f"{pkg}.sub.deep")
    assert is_compiled(deep.undecorated_gen(2))
    assert not is_compiled(top.undecorated_gen(2))
    assert not is_compiled(leaf.undecorated_gen(2))


def test_modules_not_listed_are_not_compiled(space):
    listed, other = unique("listed"), unique("listed_other")
    write_module(space, listed)
    write_module(space, other)
    prefix = unique("pre")
    write_module(space, prefix + "fix")            # a name that merely starts with a listed name
    with install_import_hook([listed, prefix], all_generators=True):
        mod = importlib.import_module(listed)
        not_listed = importlib.import_module(other)
        prefixed = importlib.import_module(prefix + "fix")
    assert is_compiled(mod.undecorated_gen(2))
    assert not is_compiled(not_listed.undecorated_gen(2))
    assert not is_compiled(prefixed.undecorated_gen(2))


def test_default_compiles_only_durable_functions(space):
    name = unique("default")
    write_module(space, name)
    with install_import_hook([name]):
        mod = importlib.import_module(name)
    round_trip(mod)
    assert getattr(mod.durable_gen, "__durable__", None) is not None
    gen = mod.undecorated_gen(3)
    next(gen)
    with pytest.raises(NotDurableError):
        runtime.snapshot(gen)
    assert list(gen) == [1, 2]


def test_all_generators_compiles_undecorated_generators(space):
    name = unique("allgen")
    write_module(space, name)
    with install_import_hook([name], all_generators=True):
        mod = importlib.import_module(name)
    gen = mod.undecorated_gen(3)
    assert next(gen) == 0
    later = runtime.restore(runtime.snapshot(gen))
    runtime.detach(gen)
    assert list(later) == [1, 2]
    assert mod.plain_after(1) == 3


def test_compiled_module_is_not_cached_as_bytecode(space):
    """Importing with the hook must not leave a .pyc that a later plain import would take for the
    compiled module, nor take a stale plain .pyc."""
    name = unique("cache")
    write_module(space, name)
    plain = importlib.import_module(name)       # plain import first: may write a .pyc
    assert not is_compiled(plain.undecorated_gen(2))
    del sys.modules[name]
    with install_import_hook([name], all_generators=True):
        mod = importlib.import_module(name)
    assert is_compiled(mod.undecorated_gen(2))


# ============================================================================ line numbers


def _frames(exc: BaseException):
    return traceback.extract_tb(exc.__traceback__)


def test_traceback_of_a_plain_function_after_a_durable_one(space):
    name = unique("tb")
    path = write_module(space, name)
    with install_import_hook([name]):
        mod = importlib.import_module(name)
    assert getattr(mod.durable_gen, "__durable__", None) is not None   # the module really was compiled
    with pytest.raises(ValueError) as info:
        mod.plain_after(10)
    last = _frames(info.value)[-1]
    want_line = line_of(MODULE, 'raise ValueError(f"too big: {y}")')
    assert (last.filename, last.lineno, last.name) == (str(path), want_line, "plain_after")
    assert last.line == 'raise ValueError(f"too big: {y}")'
    with pytest.raises(KeyError) as info:
        mod.Later().method()
    last = _frames(info.value)[-1]
    assert (last.filename, last.lineno) == (str(path), line_of(MODULE, 'return {}["missing"]'))
    # the code objects themselves start at the original def lines
    assert mod.plain_after.__code__.co_firstlineno == line_of(MODULE, "def plain_after")
    assert mod.Later.method.__code__.co_firstlineno == line_of(MODULE, "def method")


def test_traceback_inside_the_durable_function(space):
    text = MODULE.replace("        total += got or 0\n", "        total += got or 0  # may fail\n")
    name = unique("tbdur")
    path = write_module(space, name, text)
    with install_import_hook([name]):
        mod = importlib.import_module(name)
    gen = mod.durable_gen(3)
    next(gen)
    with pytest.raises(TypeError) as info:
        gen.send("not a number")
    last = _frames(info.value)[-1]
    assert (last.filename, last.lineno) == (str(path), line_of(text, "# may fail"))


def test_getsource_returns_the_original_source(space):
    name = unique("getsource")
    path = write_module(space, name)
    with install_import_hook([name]):
        mod = importlib.import_module(name)
    assert getattr(mod.durable_gen, "__durable__", None) is not None
    lines = MODULE.splitlines(keepends=True)

    def original(first_needle: str, last_needle: str) -> str:
        return "".join(lines[line_of(MODULE, first_needle) - 1: line_of(MODULE, last_needle)])

    # what inspect.getsource gives for the same function natively: decorators included
    want_durable = original("@durable", "return total")
    assert want_durable.startswith("@durable\ndef durable_gen(n):\n")
    assert inspect.getsource(mod.durable_gen) == want_durable
    assert inspect.getsourcelines(mod.durable_gen)[1] == line_of(MODULE, "@durable")
    assert inspect.getsource(mod.plain_after) == original("def plain_after", "return y")
    assert inspect.getsourcefile(mod.durable_gen) == str(path)
    # the module's source is the file as written, not the compiled text
    assert inspect.getsource(mod) == MODULE
    assert "_dg_" not in inspect.getsource(mod.durable_gen)


def test_getsource_matches_a_native_import(space):
    name, native = unique("gs_hook"), unique("gs_native")
    write_module(space, name)
    write_module(space, native, MODULE.replace("from runtime import durable", "durable = lambda fn: fn"))
    with install_import_hook([name]):
        mod = importlib.import_module(name)
    twin = importlib.import_module(native)
    for attr in ("durable_gen", "undecorated_gen", "plain_after"):
        assert inspect.getsource(getattr(mod, attr)) == inspect.getsource(getattr(twin, attr)), attr


# ============================================================================ runtime has no compiler


def _run(code: str, *paths: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, paths), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=str(paths[0]) if paths else None)


def test_runtime_does_not_import_libcst(tmp_path: Path):
    proc = _run("import runtime, sys; assert 'libcst' not in sys.modules, 'libcst imported'; "
                "assert 'transpiler' not in sys.modules, 'transpiler imported'; print('ok')", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_precompiled_module_snapshot_restore_without_libcst(tmp_path: Path):
    from transpiler import compile_source

    name = unique("precompiled")
    (tmp_path / f"{name}.py").write_text(compile_source(MODULE, f"{name}.py"), encoding="utf-8")
    proc = _run(f"""
        import sys
        import runtime
        import {name} as mod
        gen = mod.durable_gen(3)
        next(gen); gen.send(4)
        later = runtime.restore(runtime.snapshot(gen))
        runtime.detach(gen)
        assert later.send(5) == 6
        for banned in ("libcst", "transpiler", "click"):
            assert banned not in sys.modules, banned
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_hook_in_a_fresh_process_and_restore_in_another(tmp_path: Path):
    name = unique("fresh")
    write_module(tmp_path, name)
    first = _run(f"""
        from transpiler import install_import_hook
        install_import_hook([{name!r}])
        import runtime, {name} as mod
        gen = mod.durable_gen(3)
        next(gen); gen.send(4)
        open("hook.snap", "wb").write(runtime.snapshot(gen))
        print("saved")
    """, tmp_path)
    assert first.returncode == 0 and first.stdout.strip() == "saved", first.stderr
    second = _run(f"""
        from transpiler import install_import_hook
        install_import_hook([{name!r}])
        import runtime
        runtime.allow_modules({name!r})  # restore imports only allowed modules
        later = runtime.restore(open("hook.snap", "rb").read())
        out = [later.send(5)]
        try:
            later.send(6)
        except StopIteration as stop:
            out.append(stop.value)
        print(out)
    """, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[6, 15]"


def test_modules_named_for_the_hook_are_allowed_for_restore_in_a_fresh_process(tmp_path: Path):
    """install_import_hook(["pkg"]) declares pkg durable code: restore in a fresh process may import it
    (and its submodules) without allow_modules; uninstall() takes back only what the hook added."""
    name = unique("allowed")
    write_package(tmp_path, name)
    first = _run(f"""
        from transpiler import install_import_hook
        install_import_hook([{name!r}])
        import runtime, {name}.sub.deep as mod
        gen = mod.durable_gen(3)
        next(gen); gen.send(4)
        open("hook.snap", "wb").write(runtime.snapshot(gen))
    """, tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run(f"""
        import sys
        from transpiler import install_import_hook
        import runtime
        from runtime.values.allow import module_allowed
        hook = install_import_hook([{name!r}])
        later = runtime.restore(open("hook.snap", "rb").read())
        assert {name + ".sub.deep"!r} in sys.modules
        print(later.send(5))
        mine, theirs = install_import_hook(["dg_mine"]), install_import_hook(["dg_mine"])
        runtime.allow_modules("dg_user")
        user = install_import_hook(["dg_user"])
        mine.uninstall()
        assert module_allowed("dg_mine"), "another hook still names it"
        theirs.uninstall(); theirs.uninstall()
        user.uninstall()
        hook.uninstall()
        print(module_allowed("dg_mine"), module_allowed("dg_user"), module_allowed({name + ".leaf"!r}))
    """, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["6", "False", "True", "False"]
