"""Chaos mode (``install_import_hook(..., chaos=True)``): every suspension round-trips through snapshot,
detach and restore in the same process; what it keeps and what it must not keep."""
from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import sys
import textwrap
import types
import warnings
from typing import Any, Callable, Iterator

import pytest

from harness import load_compiled, load_native, run_python, unique_module_name, unload
from runtime import NotDurableError, _support, detach, registry, restore, snapshot
from runtime.chaos import STATS, coroutine_inner
from runtime.programs.versions import frames_of
from runtime.snapshot import suspended_at
from runtime.values import code_kinds


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


# -- coroutines (issue 15, stage C) ------------------------------------------------------------------------

COROUTINES = '''
import asyncio
from runtime.programs.requests import suspend

LOG = []

async def leaf(n):
    total = 0
    try:
        for i in range(n):
            try:
                total += await suspend(("leaf", i))
            except ValueError as exc:
                LOG.append(("leaf caught", repr(exc), repr(exc.__context__)))
                total += await suspend("after catch")
    finally:
        LOG.append("leaf finally")
    return total

async def middle(n):
    try:
        raise KeyError("in middle")
    except KeyError:
        r = await leaf(n)
    return r + 1

async def outer(n):
    try:
        return ("done", await middle(n))
    finally:
        LOG.append("outer finally")

async def fails():
    try:
        await suspend("f")
    except ZeroDivisionError:
        raise RuntimeError("from a handler")

async def ignores_exit():
    try:
        await suspend(1)
    except GeneratorExit:
        await suspend(2)

async def stubborn():
    while True:
        try:
            await suspend("again")
        except GeneratorExit:
            LOG.append("ignored")

async def returns_on_exit():
    try:
        await suspend(1)
    except GeneratorExit:
        return "closed"

async def holds_a_child():
    child = leaf(1)
    first = await suspend("before")
    return first, await child

async def keeps_the_awaited_child():
    child = leaf(1)
    r = await child
    await suspend("after")
    return r, child.cr_frame is None

async def never_awaited():
    return 1

async def appends(items):
    await suspend("appending")
    items.append(len(items))
    await suspend("appended")

async def shares_a_list():
    items = []
    await appends(items)
    await appends(items)
    return items

class AsyncYield:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        return (yield self.value)

async def transient():
    a = await AsyncYield("generator-based")
    await asyncio.sleep(0)
    b = await suspend("durable")
    return a, b
'''

CLOSE = "close"


@pytest.fixture(scope="module")
def coroutines() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """COROUTINES imported natively and compiled in chaos mode."""
    name = unique_module_name("chaos")
    _support.CHAOS_MODULES.add(name)
    native, chaotic = load_native(COROUTINES), load_compiled(COROUTINES, name=name)
    yield native, chaotic
    unload(native)
    unload(chaotic)
    _support.CHAOS_MODULES.discard(name)


@pytest.fixture(autouse=True)
def no_warnings() -> Iterator[None]:
    """No test here may leave a warning behind ("never awaited", a coroutine closed twice, ...)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in seen] == []


def drive(coro: Any, plan: list[Any]) -> list[Any]:
    """What ``coro`` does under ``plan``: each item is sent, thrown (an exception) or ``CLOSE``; how each call
    ended, exceptions with their context and cause."""
    trace: list[Any] = []
    for op in plan:
        try:
            if op is CLOSE:
                trace.append(("closed", coro.close()))
            elif isinstance(op, BaseException):
                trace.append(("yielded", coro.throw(op)))
            else:
                trace.append(("yielded", coro.send(op)))
        except StopIteration as stop:
            trace.append(("returned", stop.value))
            break
        except BaseException as exc:
            trace.append(("raised", repr(exc), repr(exc.__context__), repr(exc.__cause__)))
            break
    return trace


def both(modules: tuple[types.ModuleType, types.ModuleType], call: Callable[[types.ModuleType], Any]
         ) -> tuple[Any, Any]:
    """``call`` on the native module, then on the chaos one (each with its LOG cleared), with its LOG."""
    results = []
    for module in modules:
        module.LOG.clear()
        results.append((call(module), list(module.LOG)))
    return results[0], results[1]


def counted(call: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """What ``call`` returns and what it added to the chaos counts."""
    before = dict(STATS)
    result = call()
    return result, {key: STATS[key] - before[key] for key in STATS}


@pytest.mark.parametrize("plan", [
    pytest.param([None, 1, 2, 3], id="sends"),
    pytest.param([None, 1, ValueError("thrown"), 5, 6], id="throw-caught-in-a-frame"),
    pytest.param([None, 1, CLOSE], id="close"),
    pytest.param([None, 1, KeyError("out")], id="throw-through-the-chain"),
])
def test_a_chain_of_durable_coroutines_round_trips_at_every_await_and_does_what_it_does_natively(
        coroutines: tuple[types.ModuleType, types.ModuleType], plan: list[Any]) -> None:
    native, chaotic = both(coroutines, lambda m: drive(m.outer(3), plan))
    assert chaotic == native
    assert native[0][0] == ("yielded", ("leaf", 0))


def test_every_suspension_of_the_chain_is_a_round_trip_of_a_new_coroutine_under_the_same_object(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    """Each suspension is one round trip of the whole chain, by the outermost wrapper (at the first one, the
    chain runs through the live wrappers of middle and leaf, which leave it to the outermost). The caller keeps
    its object; the compiled coroutine under it is a new one each time."""
    _, chaotic = coroutines
    chaotic.LOG.clear()
    coro = chaotic.outer(2)
    assert type(coro) is types.CoroutineType and coro.__qualname__ == "outer"
    assert inspect.iscoroutinefunction(chaotic.outer)
    seen, counts = counted(lambda: coro.send(None))
    assert seen == ("leaf", 0)
    assert counts == {"round_trips": 1, "unserializable": 0, "coroutine_round_trips": 1,
                      "coroutine_unserializable": 0}
    inner = coroutine_inner(coro)
    assert inner is not None and inner.cr_code is registry.code_for(chaotic.outer.__durable__)
    assert [meta.qualname for meta, _ in frames_of(coro)] == ["outer", "middle", "leaf"]
    seen, counts = counted(lambda: coro.send(10))
    assert seen == ("leaf", 1) and counts["coroutine_round_trips"] == 1
    assert coroutine_inner(coro) is not inner and inner.cr_frame is None  # detached, its finally not run
    assert chaotic.LOG == []
    assert drive(coro, [20]) == [("returned", ("done", 31))]


@pytest.mark.parametrize("call, plan", [
    pytest.param("fails", [None, ZeroDivisionError("z")], id="raise-in-a-handler-keeps-the-context"),
    pytest.param("ignores_exit", [None, CLOSE], id="coroutine-ignored-GeneratorExit"),
    pytest.param("returns_on_exit", [None, CLOSE], id="close-returns-what-it-returned-on-3.13"),
    pytest.param("returns_on_exit", [CLOSE, None], id="close-before-start"),
    pytest.param("holds_a_child", [None, "first", 7], id="a-held-wrapper-stays-the-programs-object"),
    pytest.param("keeps_the_awaited_child", [None, 4, None], id="an-awaited-wrapper-held-in-a-local"),
    pytest.param("shares_a_list", [None] * 5, id="an-object-shared-along-the-chain-stays-one"),
])
def test_coroutine_semantics_are_native_under_chaos(coroutines: tuple[types.ModuleType, types.ModuleType],
                                                    call: str, plan: list[Any]) -> None:
    native, chaotic = both(coroutines, lambda m: drive(getattr(m, call)(), plan))
    assert chaotic == native


def test_a_coroutine_that_ignored_GeneratorExit_is_closed_once_when_it_is_collected(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    """It stays suspended: a second close() is ignored too, a send resumes it. Natively the finalizer closes
    it once more (its handler runs, CPython reports the ignored exit); under chaos the wrapper's finalizer
    does that, and the compiled coroutine under it is not closed again."""
    def ignored_then_dropped(module: types.ModuleType) -> list[str]:
        reported: list[str] = []
        hook, sys.unraisablehook = sys.unraisablehook, lambda u: reported.append(repr(u.exc_value))
        try:
            coro = module.stubborn()
            coro.send(None)
            for _ in range(2):
                with pytest.raises(RuntimeError, match="coroutine ignored GeneratorExit"):
                    coro.close()
            assert coro.send("on") == "again"
            del coro
            gc.collect()
        finally:
            sys.unraisablehook = hook
        return reported

    native, chaotic = both(coroutines, ignored_then_dropped)
    assert chaotic == native == (["RuntimeError('coroutine ignored GeneratorExit')"], ["ignored"] * 3)


def test_a_transient_await_is_counted_and_the_live_coroutine_goes_on(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    """At a generator-based awaitable and at asyncio.sleep no snapshot can be taken: chaos counts the
    suspension as unserializable and keeps the compiled coroutine it has; the durable await round-trips."""
    native, chaotic = coroutines
    plan = [None, "a", None, "b"]
    coro = chaotic.transient()
    trace, counts, inners = [], [], []
    for value in plan:
        step, added = counted(lambda: drive(coro, [value]))
        trace += step
        counts.append((added["coroutine_round_trips"], added["coroutine_unserializable"]))
        inners.append(coroutine_inner(coro))
    assert trace == drive(native.transient(), plan)
    assert trace[-1] == ("returned", ("a", "b"))
    assert counts == [(0, 1), (0, 1), (1, 0), (0, 0)]
    assert inners[1] is inners[0] and inners[2] is not inners[1]


def test_an_awaited_wrapper_that_cannot_be_saved_is_counted_and_the_program_goes_on(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    """``child = leaf(1); r = await child`` keeps in a local the coroutine a frame of the chain awaits: the
    snapshot refuses it (restore would make two of it), through the chaos wrapper as without it."""
    _, chaotic = coroutines
    coro = chaotic.keeps_the_awaited_child()
    _, counts = counted(lambda: coro.send(None))
    assert counts["coroutine_unserializable"] >= 1
    assert drive(coro, [4, None]) == [("yielded", "after"), ("returned", (4, True))]


def test_under_asyncio_chaos_coroutines_run_as_native_ones(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    source = '''
import asyncio

LOG = []

async def work(i, delay):
    try:
        await asyncio.sleep(delay)
        return i * 2
    except asyncio.CancelledError:
        LOG.append(("cancelled", i))
        raise

async def main():
    got = await asyncio.gather(work(1, 0), work(2, 0.001))
    try:
        await asyncio.wait_for(work(3, 1), 0.001)
    except asyncio.TimeoutError:
        LOG.append("timeout")
    return got
'''
    name = unique_module_name("chaos_asyncio")
    _support.CHAOS_MODULES.add(name)
    modules = load_native(source), load_compiled(source, name=name)
    try:
        native, chaotic = both(modules, lambda m: asyncio.run(m.main()))
        assert chaotic == native == ([2, 4], [("cancelled", 3), "timeout"])
    finally:
        _support.CHAOS_MODULES.discard(name)
        for module in modules:
            unload(module)


def test_a_plain_compiled_coroutine_awaiting_a_chaos_one_snapshots_as_a_chain(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    """Snapshot, frames_of, restore and detach see through the chaos wrapper a compiled coroutine awaits."""
    native, chaotic = coroutines
    top = load_compiled(f"import {chaotic.__name__} as inner\n\nasync def top(n):\n    return await inner.outer(n)\n")
    try:
        chaotic.LOG.clear()
        coro = top.top(2)
        assert coro.send(None) == ("leaf", 0)
        awaited = coro.cr_await
        assert awaited.cr_code in code_kinds.WRAPPER_CODES
        assert [meta.qualname for meta, _ in frames_of(coro)] == ["top", "outer", "middle", "leaf"]
        assert suspended_at(coro)[0].endswith(":leaf")
        restored = restore(snapshot(coro))
        detach(coro)
        assert chaotic.LOG == [] and coro.cr_frame is None and awaited.cr_frame is None
        assert [meta.qualname for meta, _ in frames_of(restored)] == ["top", "outer", "middle", "leaf"]
        assert drive(restored, [1, 2]) == [("yielded", ("leaf", 1)), ("returned", ("done", 4))]
        assert chaotic.LOG == ["leaf finally", "outer finally"]
    finally:
        unload(top)


def test_snapshot_detach_and_close_of_a_wrapped_coroutine(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    native, chaotic = coroutines
    chaotic.LOG.clear()
    coro = chaotic.outer(2)
    detach(coro)  # not started: closed, no "never awaited"
    coro = chaotic.outer(2)
    coro.send(None)
    data = snapshot(coro)
    detach(coro)
    assert coro.cr_frame is None and chaotic.LOG == []  # no finally block ran
    restored = restore(data)
    assert type(restored) is types.CoroutineType and restored.cr_code is not chaotic.outer.__code__
    assert drive(restored, [1, 2]) == [("yielded", ("leaf", 1)), ("returned", ("done", 4))]
    coro = chaotic.outer(2)
    coro.send(None)
    chaotic.LOG.clear()
    assert coro.close() is None and coro.cr_frame is None
    assert chaotic.LOG == ["leaf finally", "outer finally"]
    unstarted = chaotic.never_awaited()
    with pytest.raises(NotDurableError, match="chaos mode's wrapper, and it drives no compiled coroutine now"):
        snapshot(unstarted)  # not started: there is no compiled coroutine under it yet
    unstarted.close()


def test_a_wrapper_never_awaited_warns_about_the_function_as_natively(
        coroutines: tuple[types.ModuleType, types.ModuleType]) -> None:
    native, chaotic = coroutines
    messages = []
    for module in (native, chaotic):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            module.never_awaited()
            gc.collect()
        messages.append([(w.category, str(w.message)) for w in seen])
    assert messages[1] == messages[0] == [(RuntimeWarning, "coroutine 'never_awaited' was never awaited")]


def test_frames_of_sees_through_chaos_wrappers_of_generators_too(tmp_path):
    code = """
        import transpiler
        transpiler.install_import_hook(["dg_chaos_frames"], all_generators=True, chaos=True)
        import dg_chaos_frames as m
        from runtime.programs.versions import frames_of
        g = m.outer()
        next(g)
        print("FRAMES", [meta.qualname for meta, _ in frames_of(g)])
    """
    (tmp_path / "dg_chaos_frames.py").write_text(textwrap.dedent('''
        def inner():
            yield 1

        def outer():
            yield from inner()
    '''))
    proc = run_python(code, paths=[tmp_path])
    assert proc.returncode == 0, proc.stderr
    assert "FRAMES ['outer', 'inner']" in proc.stdout, proc.stdout


RANDOM_SEEDS = int(os.environ.get("DG_CHAOS_RANDOM_ASYNC", "16"))
"""Random async programs (tests/program_gen.py) run under chaos by this file; more with the variable."""


def observe(module: types.ModuleType, entry: str, script: list[Any]) -> list[Any]:
    """What ``entry`` does in ``module`` started, then under a random script (``program_gen.build_script``):
    each step's outcome, then the module's LOG and the warnings and unraisable exceptions (finalizers) seen,
    its garbage collected before it returns."""
    unraisable: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u.exc_value))
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            trace = _run_script(module, entry, script)
            gc.collect()  # (what the run left in reference cycles: a thrown exception's frames, say)
    finally:
        sys.unraisablehook = hook
    return [*trace, list(module.LOG), [str(w.message) for w in seen], unraisable]


def _run_script(module: types.ModuleType, entry: str, script: list[Any]) -> list[str]:
    coro = eval(entry, module.__dict__)
    plan = [None] + [op.arg if op.kind == "send" else eval(op.arg.code, module.__dict__)
                     if op.kind == "throw" else CLOSE if op.kind == "close" else None for op in script]
    trace = []
    for op in plan:  # (each outcome written down at once: chaos copies what a frame yielded)
        (step,) = drive(coro, [op])
        trace.append(repr(step))
        if step[0] in ("returned", "raised"):
            break
    trace.append(repr(drive(coro, [CLOSE])))
    return trace


@pytest.mark.parametrize("seed", range(RANDOM_SEEDS))
def test_random_async_programs_do_under_chaos_what_they_do_natively(seed: int) -> None:
    from program_gen import RandomChooser, build_script, random_program

    program = random_program(seed, async_=True)
    script = build_script(RandomChooser(random.Random(seed)))
    name = unique_module_name("chaos_random")
    _support.CHAOS_MODULES.add(name)
    modules = load_native(program.source), load_compiled(program.source, name=name)
    try:
        native, chaotic = (observe(module, program.entry, script) for module in modules)
        assert chaotic == native, f"{program.entry}\n{program.source}\nscript: {script}"
    finally:
        _support.CHAOS_MODULES.discard(name)
        for module in modules:
            unload(module)
