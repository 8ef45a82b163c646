"""Module-level objects travel by reference (issue 11, item 7; DESIGN §4): a local holding a module
global is that same object after restore in the same process, and the fresh module's object in a new
one. Globals are not state of the snapshot.
"""
from __future__ import annotations

import textwrap

import pytest

from harness import load_compiled, run_python, tmp_module_dir, unique_module_name, unload
import runtime

SOURCE = """
    import threading
    from runtime import durable

    REGISTRY = {}
    LOCK = threading.Lock()
    SENTINEL = object()

    @durable
    def register(key, value):
        reg = REGISTRY            # a local aliasing a module-level object
        lock = LOCK               # one that cannot be copied at all
        marker = SENTINEL
        yield "ready"
        with lock:
            reg[key] = value
        yield marker is SENTINEL, key in REGISTRY
"""


def test_a_module_global_in_a_local_is_the_same_object_after_restore():
    mod = load_compiled(SOURCE, all_generators=False, tag="globals")
    try:
        g = mod.register("k", 1)
        assert next(g) == "ready"
        data = runtime.snapshot(g)
        runtime.detach(g)
        back = runtime.restore(data)
        assert next(back) == (True, True)
        assert mod.REGISTRY == {"k": 1}   # written to the module's registry, not to a copy
        assert b"REGISTRY" in data and b"LOCK" in data
    finally:
        unload(mod)


def test_in_a_fresh_process_the_reference_is_the_fresh_modules_object(tmp_path):
    name = unique_module_name("globals")
    (tmp_module_dir() / f"{name}.py").write_text(textwrap.dedent(SOURCE))
    first = run_python(f"""
        import transpiler, runtime
        transpiler.install_import_hook([{name!r}])
        import {name} as m
        g = m.register("k", 2)
        next(g)
        open({str(tmp_path / 'state')!r}, "wb").write(runtime.snapshot(g))
    """, paths=[tmp_module_dir()])
    assert first.returncode == 0, first.stderr
    second = run_python(f"""
        import transpiler, runtime
        transpiler.install_import_hook([{name!r}])
        import {name} as m
        g = runtime.restore(open({str(tmp_path / 'state')!r}, "rb").read())
        print(next(g), m.REGISTRY)
    """, paths=[tmp_module_dir()])
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "(True, True) {'k': 2}"


def test_a_crafted_global_reference_cannot_reach_code_through_a_module():
    """A global reference names data only: `from os import system` in an allowed module does not make
    [module, "system"] a way to os.system."""
    mod = load_compiled("""
        from os import system
        import json
        from runtime import durable

        TABLE = [1]

        @durable
        def gen(x):
            got = yield 1
            yield x, got
    """, all_generators=False, tag="globalcode")
    try:
        from crafting import template, with_local

        for name in ("system", "json", "gen"):
            g = mod.gen(None)
            next(g)
            with pytest.raises(runtime.NotAllowedError, match="code travels only by the names"):
                runtime.restore(with_local(template(g), [9, "global", [1, mod.__name__, name]]))
        g = mod.gen(None)
        next(g)
        table = runtime.restore(with_local(template(g), [9, "global", [1, mod.__name__, "TABLE"]]))
        assert table.send(None)[0] is mod.TABLE
    finally:
        unload(mod)

