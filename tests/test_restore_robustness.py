"""A restore that fails part-way leaves the function and the snapshot usable."""
from __future__ import annotations

import textwrap

import pytest

from harness import load_compiled, unload
from runtime import SnapshotError, restore, snapshot

SOURCE = textwrap.dedent("""
    class Manager:
        def __enter__(self):
            return "entered"
        def __exit__(self, *exc):
            return False

    def gen(n):
        with Manager() as value:
            got = yield value
        yield n + (got or 0)
""")


def test_failed_restore_does_not_leak_into_the_next_call() -> None:
    module = load_compiled(SOURCE, all_generators=True)
    try:
        g = module.gen(1)
        assert next(g) == "entered"
        data = snapshot(g)
        exit_method = module.Manager.__exit__
        del module.Manager.__exit__  # restore must look __exit__ up again, and now fails
        try:
            with pytest.raises(SnapshotError):
                restore(data)
        finally:
            module.Manager.__exit__ = exit_method
        fresh = module.gen(5)
        assert next(fresh) == "entered"
        assert fresh.send(2) == 7
        # and a later restore of the same bytes still works
        again = restore(data)
        assert again.send(3) == 4
    finally:
        unload(module)
