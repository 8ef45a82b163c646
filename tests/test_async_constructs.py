"""Differential tests of ``async def`` programs, one construct each, round-tripped at every ``await suspend(...)``."""
from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, Sequence

import pytest

from harness import (
    CLOSE, COMPILED, NEXT, DiffResult, Expr, differential, exec_, in_handler, nexts, send, throw,
)

PRELUDE = "from runtime.programs.requests import suspend\nLOG = []\n"
COMPILED_MODE = os.environ.get("DG_HARNESS_MODE", COMPILED) == COMPILED


def run(source: str, script: Sequence[Any], *, entry: str = "main()", **options: Any) -> DiffResult:
    """``differential`` for an async program: ``suspend`` and ``LOG`` are predefined, the entry is ``main()``."""
    return differential(PRELUDE + textwrap.dedent(source), script, entry=entry, **options)


# ============================================================================ await in expressions


def test_await_as_statement_assignment_and_return() -> None:
    result = run("""
    async def main():
        await suspend("statement")
        x = await suspend("assign")
        y: int = await suspend("annotated")
        (await suspend("parenthesised"))
        a = b = await suspend("chained targets")
        LOG.append((x, y, a, b))
        return await suspend("return")
    """, [NEXT, send(1), send(2), send(3), send(4), send(5), send("done")])
    assert result.native[-1]["outcome"] == "return"


def test_augmented_assignment_targets() -> None:
    run("""
    class Obj:
        def __init__(self):
            self.n = 1
    def idx():
        LOG.append("idx")
        return 0
    async def main():
        x = 5
        x += await suspend("name")
        d = {"k": 10}
        d["k"] -= await suspend("subscript")
        lst = [1, 2]
        lst[idx()] *= await suspend("call-index")
        alias = lst
        lst += await suspend("inplace")
        await suspend((alias is lst, alias))
        o = Obj()
        o.n += await suspend("attr")
        return x, d, lst, o.n
    """, [NEXT, send(1), send(2), send(3), send([9]), NEXT, send(4)])


def test_await_in_call_arguments() -> None:
    src = """
    def f(*args, **kw):
        LOG.append(("f", args, kw))
        return len(args) + len(kw)
    def g(v):
        LOG.append(("g", v))
        return v * 2
    async def main():
        r = f(1, await suspend("a"), k=await suspend("b"))
        await suspend(r)
        r = f(g(await suspend("inner")), *(await suspend("star")), **(await suspend("kw")))
        out = []
        out.append(await suspend("append"))
        return r, out, "-".join([await suspend("j1"), await suspend("j2")])
    """
    # callees (functions / bound methods) are live while their arguments suspend
    run(src, [NEXT, send(1), send(2), NEXT, send(3), send((4, 5)), send({"z": 6}), send("x"),
              send("y"), send("z")], allow_unserializable=True)


@pytest.mark.parametrize("div", [3, 0])
def test_binary_operators_in_evaluation_order(div: int) -> None:
    run("""
    def v(tag, value):
        LOG.append(tag)
        return value
    async def main():
        a = 10
        r1 = v("left", a) + await suspend("add")
        r2 = await suspend("mul") * v("right", a)
        r3 = -(await suspend("neg"))
        r4 = not await suspend("not")
        r5 = a ** await suspend("pow") % 7
        r6 = (a | await suspend("or")) & 0xFF ^ 3
        r7 = await suspend("in") in [1, 2, 3]
        r8 = await suspend("is") is None
        r9 = "ab" * await suspend("rep")
        r10 = await suspend("a") + await suspend("b")
        r11 = v("x", 1) - await suspend("c") * v("y", 2) + await suspend("d")
        r12 = a // await suspend("div")
        return (r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12)
    """, [NEXT, send(1), send(2), send(3), send(0), send(2), send(5), send(2), send(None), send(2),
          send("p"), send("q"), send(7), send(8), send(div)])


@pytest.mark.parametrize("sends", [(1, 2, 0), (0, 9, 9)])
def test_chained_comparisons(sends: tuple[int, int, int]) -> None:
    run("""
    async def main():
        r = 0 < await suspend("a") <= await suspend("b") != 5 > await suspend("c")
        return r
    """, [NEXT] + [send(v) for v in sends])


@pytest.mark.parametrize("script", [
    [NEXT, send(0), send(2), send(1), send(0), send("z")],
    [NEXT, send([]), send(""), send(3), send(5), send(None)],
])
def test_boolean_short_circuit_and_conditional_expression(script: list[Any]) -> None:
    run("""
    async def main():
        r1 = await suspend("or1") or await suspend("or2")
        r2 = await suspend("and1") and await suspend("and2") and "all"
        r3 = "yes" if await suspend("cond") else (await suspend("else-val") or "default")
        return (r1, r2, r3)
    """, script)


def test_subscripts_and_slices() -> None:
    run("""
    async def main():
        d = {"a": 1, "b": 2}
        r1 = d[await suspend("key")]
        lst = [0, 1, 2, 3, 4, 5]
        r2 = lst[await suspend("lo"):await suspend("hi")]
        d[await suspend("set-key")] = await suspend("set-val")
        (await suspend("container"))[0] = "X"
        await suspend((r1, r2, d))
        return d[await suspend("missing")]
    """, [NEXT, send("b"), send(1), send(4), send("v"), send("k"), send([1]), NEXT, send("nope")])


def test_fstrings_and_displays() -> None:
    run("""
    async def main():
        name = "w"
        s = f"{name}:{await suspend(1)!s:>5}|{await suspend(2):.2f}|{name!r}"
        l = [1, await suspend("l"), *(await suspend("star")), 3]
        t = (await suspend("t1"), await suspend("t2"))
        d = {**(await suspend("dstar")), "k": await suspend("dv")}
        return s, l, t, d
    """, [NEXT, send("ab"), send(3.14159), send("x"), send((7, 8)), send(1), send(2), send({"a": 1}),
          send("v")])


def test_unpacking_and_walrus() -> None:
    run("""
    async def main():
        a, *b = await suspend("1")
        (x, y), *z = await suspend("2")
        total = 0
        while (n := await suspend(("total", total))) != 0:
            total += n
        return a, b, x, y, z, total
    """, [NEXT, send([1, 2, 3]), send(((1, 2), 3)), send(4), send(5), send(0)])


# ============================================================================ statements


@pytest.mark.parametrize("script", [nexts(10), [NEXT, send("stop")] + nexts(6)])
def test_loops_else_break_continue(script: list[Any]) -> None:
    run("""
    async def main():
        d = {"a": 1, "b": 2, "c": 3}
        for i, (k, v) in enumerate(d.items()):
            if k == "b":
                continue
            if await suspend((i, k, v)) == "stop":
                break
        else:
            await suspend("no break")
        n = 0
        while n < 10:
            n += 1
            if n % 2:
                continue
            if await suspend(n) == "stop" or n > 4:
                break
        else:
            LOG.append("while else")
        for key in d:
            await suspend(key)
        return "done"
    """, script)


def test_if_elif_else() -> None:
    run("""
    async def main():
        for _ in range(3):
            v = await suspend("cond")
            if v == 1:
                await suspend("one")
            elif await suspend("elif-test"):
                await suspend("elif-body")
            else:
                await suspend("else")
    """, [NEXT, send(1), NEXT, send(2), send(True), NEXT, send(3), send(False), NEXT])


@pytest.mark.parametrize("script", [
    [NEXT, send("raise"), NEXT, NEXT, send("key"), NEXT, NEXT, NEXT, NEXT],
    [NEXT, throw(TypeError("t")), NEXT, throw(ValueError("in finally"))],
    [NEXT, send("raise"), throw(OSError("in handler")), NEXT],
    [NEXT, NEXT, CLOSE],
])
def test_try_except_else_finally(script: list[Any]) -> None:
    run("""
    async def main():
        for mode in range(3):
            try:
                LOG.append(("try", mode))
                x = await suspend(("try", mode))
                if x == "raise":
                    raise ValueError(mode)
                if x == "key":
                    raise KeyError(mode)
            except ValueError as e:
                y = await suspend(("except V", e.args))
            except (KeyError, TypeError) as e:
                y = await suspend(("except KT", type(e).__name__))
            else:
                y = await suspend(("else", mode))
            finally:
                z = await suspend(("finally", mode))
                LOG.append(("finally got", z))
        return "end"
    """, script)


CHAIN_SRC = """
class MyErr(Exception):
    pass
async def main():
    try:
        await suspend("try")
    except KeyError as e:
        note = await suspend(("handling", e.args))
        try:
            raise ValueError(note)
        except ValueError:
            await suspend("inner handler")
            raise
    try:
        await suspend("second")
    except MyErr as e:
        await suspend("before raise from")
        raise RuntimeError("wrapped") from e
    try:
        await suspend("third")
    except OSError:
        await suspend("suppressing")
        raise TypeError("no context") from None
    return "clean"
"""


@pytest.mark.parametrize("script", [
    [NEXT, throw(KeyError("k")), send("n"), NEXT],
    [NEXT, throw(KeyError("k")), send("n"), throw(OSError("during handler"))],
    [NEXT, NEXT, throw(Expr("MyErr('m')")), NEXT],
    [NEXT, NEXT, NEXT, throw(OSError("o")), NEXT],
    [NEXT, NEXT, NEXT, NEXT],
])
def test_exception_context_cause_and_reraise(script: list[Any]) -> None:
    run(CHAIN_SRC, script)


def test_steps_taken_while_the_caller_handles_an_exception() -> None:
    run("""
    async def main():
        x = await suspend("start")
        try:
            raise ValueError(x)
        except ValueError:
            await suspend("in handler")
        raise KeyError("after")
    """, [in_handler(NEXT, OSError("caller")), in_handler(send(1), KeyError("c")), NEXT])


def test_return_raise_from_and_assert() -> None:
    src = """
    async def main():
        x = await suspend("assert")
        assert x != "bad", "assertion message"
        v = await suspend("maybe-raise")
        if v == "none":
            raise RuntimeError("no cause") from None
        if v == "cause":
            raise RuntimeError("with cause") from TypeError("t")
        try:
            return await suspend("return in try")
        finally:
            LOG.append(await suspend("finally after return"))
    """
    run(src, [NEXT, send("bad")])
    run(src, [NEXT, send("ok"), send("cause")])
    run(src, [NEXT, send("ok"), send(7), send("r"), send("f")])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is 3.11+ syntax")
@pytest.mark.parametrize("script", [
    nexts(5),
    [NEXT, send("none"), NEXT, NEXT],
    [throw(Expr('ExceptionGroup("t", [ValueError("x"), OSError("o")])'))],
    [NEXT, throw(Expr('ExceptionGroup("t", [KeyError("x"), OSError("o")])')), NEXT, NEXT],
    [NEXT, throw(KeyError("naked")), NEXT, NEXT],
])
def test_try_except_star(script: list[Any]) -> None:
    run("""
    async def main():
        try:
            x = await suspend("start")
            if x != "none":
                raise ExceptionGroup("g", [ValueError(1), KeyError(2)])
        except* ValueError as eg:
            await suspend(("V", repr(eg.exceptions)))
        except* KeyError as eg:
            await suspend(("K", repr(eg.exceptions)))
        else:
            await suspend("else")
        finally:
            await suspend("finally")
        return "after"
    """, script)


WITH_SRC = """
class CM:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress
    def __enter__(self):
        LOG.append(("enter", self.name))
        return self.name
    def __exit__(self, t, v, tb):
        LOG.append(("exit", self.name, t.__name__ if t else None))
        return self.suppress
async def main():
    with CM("a") as a, CM("b", suppress=True) as b:
        x = await suspend((a, b))
        if x == "raise":
            raise ValueError("body")
        await suspend("body end")
    await suspend("after1")
    with CM("c"):
        with CM("d", suppress=True) as d:
            await suspend(d)
            raise OSError("swallowed")
        x = await suspend("between")
        if x == "raise":
            raise KeyError("escapes c")
    return "end"
"""


@pytest.mark.parametrize("script", [
    nexts(6),
    [NEXT, send("raise"), NEXT, NEXT, send("raise")],
    [NEXT, throw(TypeError("suppressed by b")), NEXT],
    [NEXT, NEXT, NEXT, NEXT, throw(TypeError("suppressed by d")), send("raise")],
    [NEXT, NEXT, NEXT, NEXT, NEXT, CLOSE],
])
def test_with_around_awaits(script: list[Any]) -> None:
    run(WITH_SRC, script)


MATCH_SRC = """
class Point:
    __match_args__ = ("x", "y")
    def __init__(self, x, y):
        self.x = x
        self.y = y
async def main():
    while True:
        match await suspend("cmd"):
            case "quit":
                return "bye"
            case ["go", direction] | ["move", direction]:
                await suspend(("go", direction))
            case ["drop", *objs] if len(objs) > await suspend("threshold"):
                await suspend(("drop many", objs))
            case {"x": x, **rest}:
                await suspend(("map", x, rest))
            case Point(x=0, y=yy):
                await suspend(("on y axis", yy))
            case str() as s if s.startswith("p"):
                await suspend(("p-word", s))
            case other:
                await suspend(("other", other))
"""


def test_match_with_awaits_in_subject_guards_and_cases() -> None:
    run(MATCH_SRC, [
        NEXT, send(["go", "north"]), NEXT, send(["drop", 1, 2, 3]), send(2), NEXT, send(["drop", 1]),
        send(5), NEXT, send({"x": 1, "y": 2}), NEXT, send(Expr("Point(0, 5)")), NEXT, send("pear"), NEXT,
        send(42), NEXT, send("quit"),
    ])


# A case that suspends, then cases that do not, then an await after the ``match``: restoring at that
# later await read the match's case number (not saved there) in the restore body's test of the
# trailing cases (UnboundLocalError on ``_dg_mcN``).
MATCH_THEN_SUSPENSION_SRC = {
    "case": """
    async def main(v):
        match v:
            case 0:
                await suspend("zero")
            case 1:
                LOG.append("one")
        await suspend("after")
        LOG.append("done")
    """,
    "wildcard": """
    async def main(v):
        match v:
            case 0:
                await suspend("zero")
            case _:
                LOG.append("other")
        await suspend("after")
        LOG.append("done")
    """,
    "guard": """
    async def main(v):
        match v:
            case 1:
                LOG.append("one")
            case int() as n if n % 2 == 0:
                await suspend(("even", n))
            case n if n > 5:
                LOG.append(("big", n))
            case _:
                LOG.append("other")
        await suspend("after")
        LOG.append("done")
    """,
    "suspending guard": """
    async def main(v):
        match v:
            case n if n > await suspend("limit"):
                await suspend(("above", n))
            case 1:
                LOG.append("one")
            case n if n < 0:
                LOG.append(("negative", n))
            case _:
                LOG.append("other")
        await suspend("after")
        LOG.append("done")
    """,
    "suspending subject": """
    async def main(v):
        match await suspend(v):
            case 0:
                await suspend("zero")
            case 1:
                LOG.append("one")
            case _:
                LOG.append("other")
        await suspend("after")
        LOG.append("done")
    """,
}


@pytest.mark.parametrize("v", [0, 1, 2, 7, -3])
@pytest.mark.parametrize("shape", list(MATCH_THEN_SUSPENSION_SRC))
def test_match_case_that_suspends_then_cases_that_do_not(shape: str, v: int) -> None:
    script = [NEXT, send(v), NEXT, NEXT] if shape == "suspending subject" else [NEXT, send(4), NEXT, NEXT]
    run(MATCH_THEN_SUSPENSION_SRC[shape], script, entry=f"main({v})")


def test_del_global_and_class_defined_inside() -> None:
    src = """
    G = 0
    async def main():
        global G
        G += 1
        a, b = 1, [2]
        del a, b[0]
        G = await suspend(G)
        try:
            LOG.append(a)
        except UnboundLocalError as e:
            LOG.append(type(e).__name__)
        class Local:
            k = 3
            def m(self):
                return self.k * 2
        await suspend((Local().m(), Local.__qualname__, b))
        return G
    """
    # globals are not part of a snapshot: the fresh-process check starts from the beginning
    run(src, [NEXT, send(10), exec_("LOG.append(G)"), NEXT], fresh_at=0)


# ============================================================================ closures and methods


def test_closures_and_nonlocal_across_awaits() -> None:
    run("""
    async def main():
        count = 0
        def bump(by=1):
            nonlocal count
            count += by
            return count
        for _ in range(2):
            bump(await suspend(("count", count)) or 1)
        count += 10
        async def nested(tag):
            nonlocal count
            count += await suspend((tag, count))
            return bump()
        got = await nested("nested")
        f = lambda: count * 2
        return got, count, f()
    """, [NEXT, send(2), send(None), send(5)])


def test_methods_super_and_private_names() -> None:
    src = """
    class Base:
        async def run(self, n):
            x = await suspend(("base", n))
            return x * 2
        def tag(self):
            return "base-tag"
    class Child(Base):
        def __init__(self):
            self.__secret = 7
        async def run(self, n):
            first = await suspend(("child", n, self.__secret))
            got = await super().run(first)
            return got, super().tag(), self.__secret, await self.__helper()
        async def __helper(self):
            return await suspend("private method")
    async def main():
        return await Child().run(1)
    """
    run(src, [NEXT, send(3), send(4), send("p")])
    run(src, [NEXT, send(3), send(4), send("p")], entry="Child().run(2)")


# ============================================================================ chains of coroutines

CHAIN3_SRC = """
async def leaf(tag):
    try:
        return await suspend(tag)
    finally:
        LOG.append(("leaf done", tag))
async def mid(n):
    try:
        return await leaf((n, "a")) + await leaf((n, "b"))
    except KeyError as e:
        LOG.append(("mid caught", e.args))
        return await suspend("mid recovered")
async def main():
    total = 0
    for n in range(2):
        try:
            total += await mid(n)
        except ValueError as e:
            total += await leaf(("top caught", e.args))
    return total
"""


@pytest.mark.parametrize("script", [
    [NEXT, send(1), send(2), send(3), send(4)],
    [NEXT, throw(KeyError("inner")), send(10), send(3), send(4)],
    [NEXT, send(1), throw(ValueError("up two frames")), send(100), send(3), send(4)],
    [NEXT, send(1), send(2), throw(OSError("escapes all"))],
    [NEXT, send(1), CLOSE],
])
def test_three_deep_chain(script: list[Any]) -> None:
    run(CHAIN3_SRC, script)


HELD_SRC = """
async def child(n):
    LOG.append(("child starts", n))
    return await suspend(("child", n)) * n
async def main():
    c = child(3)
    first = await suspend("before")
    r = await c
    again = await suspend(("got", r))
    if again == "twice":
        await c
    return first, r
"""
HELD_SCRIPTS = [[NEXT, send("f"), send(2), send(None)], [NEXT, send("f"), send(2), send("twice")]]


@pytest.mark.parametrize("script", HELD_SCRIPTS)
def test_coroutine_held_in_a_local_round_trips_before_and_after_it_runs(script: list[Any]) -> None:
    run(HELD_SRC, script, snapshot_at={0, 1, 3})


@pytest.mark.parametrize("script", HELD_SCRIPTS)
def test_coroutine_held_in_a_local_round_trips_while_it_is_awaited(script: list[Any]) -> None:
    """Suspended inside ``await c`` with ``c`` also a local: restore gives the local and the await one coroutine
    (it used to be refused: restore handed out one pending frame at a time)."""
    run(HELD_SRC, script)


def test_exception_escaping_a_child_and_the_program() -> None:
    run("""
    class MyErr(Exception):
        pass
    async def child(kind):
        v = await suspend(("child", kind))
        if kind == "raise":
            raise MyErr(v)
        return v
    async def main():
        try:
            await child("raise")
        except MyErr as e:
            LOG.append(("caught", e.args))
        r = await child("plain")
        raise KeyError(r)
    """, [NEXT, send(1), send(2)])


# ============================================================================ close, throw and driving edge cases


FINALLY_SRC = """
async def child():
    try:
        await suspend("child")
    finally:
        LOG.append("child finally")
async def main():
    try:
        await suspend("first")
        await child()
    except GeneratorExit:
        LOG.append("saw GeneratorExit")
        raise
    finally:
        LOG.append("main finally")
"""


@pytest.mark.parametrize("script", [
    [CLOSE, NEXT],
    [throw(KeyError("before start"))],
    [NEXT, CLOSE, CLOSE],
    [NEXT, NEXT, CLOSE],
    [NEXT, NEXT, NEXT],
])
def test_close_and_throw_run_finally_blocks(script: list[Any]) -> None:
    run(FINALLY_SRC, script)


def test_an_await_in_finally_during_close() -> None:
    src = """
    async def main():
        try:
            await suspend("body")
        finally:
            LOG.append("cleanup")
            await suspend("await in finally")
            LOG.append("after the await")
    """
    run(src, [NEXT, CLOSE, NEXT])
    run(src, [NEXT, throw(KeyError("k")), NEXT])


def test_a_coroutine_driving_itself_is_refused() -> None:
    run("""
    async def main():
        x = await suspend("start")
        try:
            CURRENT_GEN.send(None)
        except ValueError as e:
            LOG.append(str(e))
        return x
    """, [NEXT, send(1)])


def test_arguments_defaults_and_comprehensions_between_awaits() -> None:
    run("""
    async def main(n=3, *rest, scale, **kw):
        squares = [i * scale for i in range(n)]
        base = await suspend((squares, rest, kw))
        evens = {i: base + i for i in range(n) if i % 2 == 0}
        items = await suspend(evens)
        return sum(x for x in items)
    """, [NEXT, send(10), send([1, 2, 3])], entry="main(4, 'r', scale=2, k=1)")
