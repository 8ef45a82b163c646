"""Chaos mode (``install_import_hook(..., chaos=True)``): every suspension round-trips through snapshot,
detach and restore in the same process; what it keeps and what it must not keep."""
from __future__ import annotations

import textwrap

from harness import run_python


def test_chaos_keeps_one_object_for_a_cell_and_a_local_and_holds_no_yielded_value(tmp_path):
    """Issue 11 item 9: in chaos mode a local aliasing an object held in a closure cell came back as a
    copy (more-itertools `padded`); the wrapper kept the last yielded value alive."""
    code = """
        import gc, weakref, transpiler
        transpiler.install_import_hook(["dg_chaos_alias"], all_generators=True, chaos=True)
        import dg_chaos_alias as m
        g = m.gen()
        next(g)
        print("SAME", next(g))
        class Token: pass
        t = Token()
        ref = weakref.ref(t)
        h = m.echo()
        next(h)
        h.send(t)
        del t
        gc.collect()
        print("FREED", ref() is None)
    """
    (tmp_path / "dg_chaos_alias.py").write_text(textwrap.dedent('''
        def gen():
            items = []
            def reader():
                return items
            alias = items            # a local aliasing what a closure cell holds
            yield 1
            alias.append(1)
            yield reader() is alias and reader() == [1]

        def echo():
            while True:
                got = yield
                got = None
    '''))
    proc = run_python(code, paths=[tmp_path])
    assert proc.returncode == 0, proc.stderr
    assert "SAME True" in proc.stdout and "FREED True" in proc.stdout, proc.stdout
