"""Minimal programs from the random-program search, each once a real compiler or runtime bug."""
from __future__ import annotations

from harness import CLOSE, NEXT, differential, throw

RESOURCE = """
LOG = []
def resource(n):
    try:
        yield from range(n)
    finally:
        LOG.append("released")
"""


def test_breaking_out_of_a_loop_releases_its_iterator_at_once() -> None:
    # CPython drops the loop's iterator when the loop ends, so the generator's finally runs
    # before "after" is yielded; the compiled loop keeps it in a local and must let go too.
    src = RESOURCE + """
def gen():
    for x in resource(3):
        yield x
        break
    yield ("after", list(LOG))
"""
    differential(src, [NEXT, NEXT, NEXT])


def test_detach_does_not_finalize_a_durable_iterator_held_in_a_local() -> None:
    # The for loop's iterator is itself a durable generator captured by the snapshot: detaching
    # the original must not run the original iterator's finally (it runs once, in the restored one).
    src = RESOURCE + """
def gen():
    got = []
    for x in resource(3):
        got += [(yield x)]
    return got
"""
    differential(src, [NEXT, NEXT, CLOSE])
    differential(src, [NEXT, NEXT, NEXT, NEXT])


def test_reraised_exception_keeps_its_context_chain() -> None:
    # Restoring into nested finally blocks re-raises both pending exceptions; raising the inner
    # one inside the outer finally must not replace its original __context__.
    src = """
LOG = []
def gen():
    try:
        yield from None
    finally:
        try:
            b = len(missing)
        except Exception:
            x = (yield missing)
        finally:
            yield "inner finally"
"""
    differential(src, [NEXT, NEXT])


def test_suppressing_manager_in_a_delegate_then_close() -> None:
    src = """
LOG = []
class CM:
    def __init__(self, tag, suppress=False):
        self.tag, self.suppress = tag, suppress
    def __enter__(self):
        LOG.append(("enter", self.tag))
    def __exit__(self, et, ev, tb):
        LOG.append(("exit", self.tag, None if et is None else et.__name__))
        return self.suppress
def sub():
    try:
        with CM("first", True):
            yield 1
    except ArithmeticError:
        pass
    else:
        with CM("second"):
            yield 2
def gen():
    try:
        raise KeyError("k")
    finally:
        yield (yield from sub())
"""
    differential(src, [NEXT, CLOSE])
    differential(src, [NEXT, throw(ValueError("v")), CLOSE])


def test_manager_suppressing_an_exception_keeps_later_locals_live() -> None:
    # The with block holds no suspension, but its __exit__ swallows the ValueError, so `values`
    # is read after it: the snapshot taken at the earlier yield must keep it.
    src = """
LOG = []
class Suppress:
    def __enter__(self):
        LOG.append("enter")
    def __exit__(self, et, ev, tb):
        LOG.append(("exit", et.__name__))
        return True
def gen():
    values = [1, 2]
    yield "before"
    with Suppress():
        raise ValueError("swallowed")
    yield values
"""
    differential(src, [NEXT, NEXT, NEXT])
