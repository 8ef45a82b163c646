"""Differential tests of ``async for``, ``async with`` and async comprehensions: native against compiled, with a
snapshot, detach and restore at every suspension, also inside ``__anext__``, ``__aenter__`` and ``__aexit__``."""
from __future__ import annotations

import sys
import textwrap
from typing import Any, Sequence

import pytest

from harness import NEXT, DiffResult, differential, exec_, nexts, send, throw

PRELUDE = '''
from runtime.programs.requests import suspend
LOG = []

class Count:
    """An asynchronous iterator of 1..n whose __anext__ suspends when ``pause`` is set."""
    def __init__(self, n, pause=False, fail_at=None):
        self.i, self.n, self.pause, self.fail_at = 0, n, pause, fail_at
    def __aiter__(self):
        return self
    async def __anext__(self):
        if self.pause:
            await suspend(("anext", self.i))
        if self.i == self.fail_at:
            raise KeyError(self.i)
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        return self.i

class Res:
    """An asynchronous context manager that logs, may suspend in both methods and may suppress."""
    def __init__(self, name, pause=False, suppress=False, fail_enter=False):
        self.name, self.pause, self.suppress, self.fail_enter = name, pause, suppress, fail_enter
    async def __aenter__(self):
        LOG.append(("enter", self.name))
        if self.pause:
            await suspend(("aenter", self.name))
        if self.fail_enter:
            raise ValueError("enter " + self.name)
        return self.name
    async def __aexit__(self, kind, exc, tb):
        LOG.append(("exit", self.name, kind.__name__ if kind else None))
        if self.pause:
            await suspend(("aexit", self.name))
        return self.suppress
'''


def run(source: str, script: Sequence[Any], **options: Any) -> DiffResult:
    return differential(PRELUDE + textwrap.dedent(source), script, entry="main()", **options)


# ============================================================================ async for


def test_async_for_with_else_break_and_continue() -> None:
    run("""
    async def main():
        total = 0
        async for x in Count(4):
            if x == 2:
                continue
            total += await suspend(x)
        else:
            LOG.append(("else", total))
        async for y in Count(5):
            if y == 2:
                break
            LOG.append(("y", y))
        else:
            LOG.append("no else after break")
        return total
    """, [NEXT, send(10), send(20), send(30)])


def test_async_for_suspending_in_anext_and_tuple_target() -> None:
    run("""
    async def main():
        seen = {}
        async for seen["last"] in Count(2, pause=True):
            LOG.append(dict(seen))
        pairs = []
        async for a in Count(2, pause=True):
            pairs.append((a, await suspend(a)))
        return pairs
    """, nexts(3) + [NEXT, send("one"), NEXT, send("two"), NEXT])


def test_async_for_errors_from_anext_and_thrown_in() -> None:
    run("""
    async def main():
        try:
            async for x in Count(5, fail_at=2):
                await suspend(x)
        except KeyError as exc:
            LOG.append(("caught", exc.args))
        async for x in Count(3):
            try:
                await suspend(x)
            except ValueError:
                LOG.append("thrown into the body")
        return "done"
    """, [NEXT, send(1), send(2), throw(ValueError("v")), send(3), send(4)])


def test_async_for_over_a_non_async_iterable_raises_as_natively() -> None:
    run("""
    async def main():
        await suspend("start")
        async for x in [1, 2]:
            pass
    """, [NEXT, send(None)])


# ============================================================================ async with


def test_async_with_normal_exit_and_several_items() -> None:
    run("""
    async def main():
        async with Res("a") as a, Res("b", pause=True) as b:
            got = await suspend(a + b)
        LOG.append(("after", got))
        return got
    """, [NEXT, NEXT, send("x"), NEXT])


def test_async_with_exception_suppressed_and_not() -> None:
    run("""
    async def main():
        async with Res("quiet", suppress=True, pause=True):
            await suspend("inside")
            raise KeyError("suppressed")
        try:
            async with Res("loud", pause=True):
                await suspend("inside 2")
        except ZeroDivisionError as exc:
            LOG.append(("escaped", repr(exc)))
        return "end"
    """, [NEXT, send(1), NEXT, send(2), throw(ZeroDivisionError("boom")), NEXT])


def test_async_with_enter_fails_and_exits_run_on_return_break_continue() -> None:
    run("""
    async def inner(flag):
        for i in range(3):
            async with Res(f"loop{i}", pause=True):
                await suspend(i)
                if i == 0:
                    continue
                if i == 1 and flag:
                    break
                return "returned"
        return "broke"

    async def main():
        try:
            async with Res("bad", fail_enter=True):
                LOG.append("never")
        except ValueError as exc:
            LOG.append(("enter failed", str(exc)))
        return (await inner(True), await inner(False))
    """, nexts(30))


def test_async_with_protocol_errors_as_natively() -> None:
    run("""
    class Sync:
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False

    async def main():
        await suspend("start")
        async with Sync():
            pass
    """, [NEXT, send(None)])


# ============================================================================ async comprehensions


def test_async_comprehensions_of_every_kind() -> None:
    run("""
    async def main(k=3):
        a = [await suspend(x) for x in range(k) if x != 1]
        b = {x: await suspend(-x) async for x in Count(2)}
        c = {y async for x in Count(2, pause=True) for y in [x, x * 10]}
        return a, b, c
    """, nexts(12))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="an async comprehension inside a comprehension is a "
                                                       "SyntaxError before 3.11")
def test_async_comprehension_inside_a_comprehension() -> None:
    run("""
    async def main():
        return [[await suspend((i, j)) for j in range(2)] for i in range(2)]
    """, nexts(5))


def test_async_comprehension_sees_enclosing_variables_and_raises_through() -> None:
    run("""
    async def main():
        scale = 10
        values = [x * scale + await suspend(x) async for x in Count(3)]
        try:
            [await suspend(x) for x in range(3) if 1 / (x - 1)]
        except ZeroDivisionError:
            LOG.append("raised inside the comprehension")
        return values, scale
    """, [NEXT, send(1), send(2), send(3), send(4), NEXT])


# ============================================================================ multi-line expressions


@pytest.mark.parametrize("kind", ["generator", "coroutine"])
def test_a_suspending_operand_inside_a_multiline_expression(kind: str) -> None:
    """Regression: a part of a bracketed expression that spans lines, captured into a temporary before a
    suspension, lost its line break's brackets (the compiled module did not parse)."""
    if kind == "generator":
        differential("def gen():\n    return ((yield 1) + (yield 2) + (yield 3) +\n"
                     "            (yield 4) * 10 + (yield 5))\n",
                     [NEXT, send(1), send(2), send(3), send(4), send(5)])
    else:
        run("""
        async def main():
            return (await suspend(1) + await suspend(2) + await suspend(3) +
                    await suspend(4) * 10 + await suspend(5))
        """, [NEXT, send(1), send(2), send(3), send(4), send(5)])


@pytest.mark.parametrize("manager", ["5", "NoExit()"])
def test_with_protocol_errors_of_a_suspending_with(manager: str) -> None:
    """Regression: the TypeError (AttributeError on 3.10) of a ``with`` that suspends had the failed
    lookup as its ``__context__``, and on 3.11+ lacked "(missed __exit__ method)"."""
    differential(f"class NoExit:\n    def __enter__(self):\n        return 1\n"
                 f"def gen():\n    yield 1\n    with {manager}:\n        yield 2\n", [NEXT, NEXT])


# ============================================================================ operands read before an await


def test_operands_that_may_change_during_an_await_are_read_before_it() -> None:
    """A plain local is read after the await (nothing else can rebind it meanwhile); a global, a variable
    a closure shares, and a ``:=`` target are copied before it, as CPython reads them."""
    run("""
    G = 0
    BUMPERS = []

    async def main():
        global G
        G += await suspend("global")
        shared = 1
        def bump():
            nonlocal shared
            shared += 100
        BUMPERS.append(bump)
        shared += await suspend("cell")
        total = 1
        total += await suspend("walrus") + (total := 50)
        plain = 2
        plain += await suspend("plain")
        return G, shared, total, plain
    """, [NEXT, exec_("G = 1000"), send(1), exec_("BUMPERS[0]()"), send(2), send(3), send(4)],
        snapshot_at=(), fresh_at=None)  # a restore would give the frame new cells: the closure in BUMPERS
    # would share the old ones; and a fresh process has neither the global nor the closure


@pytest.mark.parametrize("statement", ["total += await suspend(1)", "f(total, await suspend(1))",
                                       "return total + await suspend(1)"])
def test_an_unbound_plain_local_raises_before_the_await(statement: str) -> None:
    """Regression (found by the random async programs): a plain local read as an operand is read where
    CPython reads it, so an unbound one raises UnboundLocalError before the await, not after it."""
    run(f"""
    def f(*args):
        return args

    async def main(flag=False):
        if flag:
            total = 1
        {statement}
    """, [NEXT, NEXT])
