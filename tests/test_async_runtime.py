"""The runtime side of durable coroutines (issue 15, stage A): snapshot, detach and restore of a chain of
compiled ``async def`` frames awaiting each other, the transient-await error, coroutines held in locals,
and restored chains driven under asyncio."""
from __future__ import annotations

import asyncio
import gc
import json
import types
import warnings
import weakref
from typing import Any, Callable, Iterator

import pytest

from harness import load_compiled, run_python, tmp_module_dir, unload
from runtime import (GeneratorStateError, IncompatibleCodeError, UnserializableValueError, compat, detach, restore,
                     snapshot)
from runtime._support import AwaitedRequest, Resumed
from runtime.programs.requests import Awaiting, Step
from runtime.programs.versions import frames_of
from runtime.registry import FunctionMeta
from runtime.snapshot import suspended_at
from runtime.values.inspection import inspect_snapshot

CHAIN = """
from runtime.programs.requests import step, suspend

LOG = []

def fetch(x):
    return x * 10

async def leaf(n):
    total = 0
    try:
        for i in range(n):
            total += await suspend(("leaf", i))
        total += await step(fetch, total)
    finally:
        LOG.append("leaf finally")
    return total

async def middle(n):
    a = 1
    r = await leaf(n)
    return r + a

async def outer(n):
    try:
        r = await middle(n)
    finally:
        LOG.append("outer finally")
    return ("done", r)

async def no_await(n):
    return n * 2
"""


@pytest.fixture(scope="module")
def chain() -> Iterator[types.ModuleType]:
    module = load_compiled(CHAIN)
    yield module
    unload(module)


@pytest.fixture(autouse=True)
def warnings_are_errors() -> Iterator[None]:
    """No test here may leave a "never awaited" (or any other) warning behind."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in seen] == []


def run(coro: Any, answers: list[Any], first: Any = None) -> tuple[list[Any], Any]:
    """Drive a coroutine by hand: send ``first``, then each answer in turn; what it yielded and returned."""
    seen: list[Any] = []
    values = [first, *answers]
    for value in values:
        try:
            seen.append(coro.send(value))
        except StopIteration as stop:
            return seen, stop.value
    raise AssertionError(f"still running after {values!r}: {seen!r}")


def advance(module: types.ModuleType, n: int, sends: int) -> Any:
    coro = module.outer(n)
    coro.send(None)
    for i in range(sends):
        coro.send(i + 1)
    return coro


def first(coro: Any) -> Any:
    """``coro`` after its first step."""
    coro.send(None)
    return coro


def round_trip(coro: Any) -> Any:
    data = snapshot(coro)
    detach(coro)
    return restore(data)


# -- the chain ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sends", [0, 1, 2, 3])
def test_a_three_deep_chain_survives_a_round_trip_at_every_durable_await(chain: types.ModuleType, sends: int) -> None:
    answers = [1, 2, 3, 40]
    native = run(chain.outer(3), answers)
    coro = advance(chain, 3, sends)
    restored = round_trip(coro)
    assert type(restored) is types.CoroutineType and restored.__qualname__ == "outer"
    seen, result = run(restored, answers[sends + 1:], first=answers[sends])
    assert result == native[1] == ("done", 47)
    assert seen == native[0][sends + 1:]


def test_the_await_slot_holds_the_next_frame_or_the_kind_of_request(chain: types.ModuleType) -> None:
    coro = advance(chain, 1, 1)  # the leaf awaits step(fetch, 1)
    info = inspect_snapshot(snapshot(coro))
    detach(coro)
    assert [f.function.rpartition(":")[2] for f in info.frames] == ["outer", "middle", "leaf"]
    slots = [{n: v for n, v in f.locals.items() if n.startswith("_dg_aw")} for f in info.frames]
    assert [list(s.values()) for s in slots] == [["<frame 1>"], ["<frame 2>"], ["<awaited step>"]]
    assert info.frames[1].locals["a"] == "1"


def test_detach_runs_no_finally_and_leaves_no_frame(chain: types.ModuleType) -> None:
    chain.LOG.clear()
    coro = advance(chain, 3, 1)
    middle = coro.cr_await
    detach(coro)
    assert chain.LOG == []
    assert coro.cr_frame is None and middle.cr_frame is None and middle.cr_await is None


def test_a_restored_chain_snapshots_again_as_it_was(chain: types.ModuleType) -> None:
    coro = advance(chain, 3, 2)
    data = snapshot(coro)
    detach(coro)
    restored = restore(data)
    assert type(restored.cr_await.cr_await.cr_await) is Resumed  # outer -> middle -> leaf -> the marker's await
    assert snapshot(restored) == data
    again = round_trip(restored)
    assert snapshot(again) == data
    assert run(again, [40], first=3)[1] == ("done", 47)


def test_a_frame_with_an_unbound_local_keeps_its_await_slot() -> None:
    module = load_compiled("""
    from runtime.programs.requests import suspend

    async def leaf():
        return await suspend("leaf")

    async def middle(flag):
        if flag:
            early = "bound"
        got = await leaf()
        return got, early if flag else None
    """)
    coro = module.middle(False)
    coro.send(None)
    data = snapshot(coro)
    frame = inspect_snapshot(data).frames[0]
    assert sorted(n[:6] for n in frame.locals) == ["_dg_aw", "flag"]
    restored = round_trip(coro)
    assert snapshot(restored) == data
    assert run(restored, [], first=5)[1] == (5, None)
    unload(module)


def test_a_restored_chain_keeps_nothing_alive_that_its_frames_dropped() -> None:
    module = load_compiled("""
    from runtime.programs.requests import suspend

    class Big:
        pass

    async def inner(big):
        await suspend(1)
        big.seen = True
        big = None
        return await suspend(2)

    async def outer():
        return await inner(Big())
    """)
    restored = round_trip(first(module.outer()))
    big = weakref.ref(restored.cr_await.cr_frame.f_locals["big"])
    assert restored.send(None) == 2
    restored.cr_await.cr_frame.f_locals  # (before 3.13 the frame keeps a copy of its locals until read again)
    gc.collect()
    assert big() is None  # (the outer frame's await slot held the saved locals and the decoder's memo)
    detach(restored)
    unload(module)


def test_frames_of_and_suspended_at_follow_the_awaits(chain: types.ModuleType) -> None:
    coro = advance(chain, 3, 0)
    names = [(meta.qualname, state) for meta, state in frames_of(coro)]
    assert names == [("outer", 1), ("middle", 1), ("leaf", 1)]
    where = suspended_at(coro)
    restored = round_trip(coro)
    assert [(meta.qualname, state) for meta, state in frames_of(restored)] == names
    assert suspended_at(restored) == where and where is not None and where[0].endswith(":leaf")
    detach(restored)


def test_a_throw_reaches_the_innermost_await_of_a_restored_chain(chain: types.ModuleType) -> None:
    chain.LOG.clear()
    restored = round_trip(advance(chain, 3, 1))
    with pytest.raises(KeyError, match="boom"):
        restored.throw(KeyError("boom"))
    assert chain.LOG == ["leaf finally", "outer finally"]
    assert restored.cr_frame is None


def test_a_not_started_coroutine_snapshots_restores_and_detaches(chain: types.ModuleType) -> None:
    coro = chain.outer(2)
    data = snapshot(coro)
    detach(coro)  # closed before it started: no "never awaited" warning
    assert coro.cr_frame is None
    restored = restore(data)
    assert restored.cr_frame is not None and restored.cr_await is None
    assert run(restored, [5, 6, 7])[1] == ("done", 19)
    plain = chain.no_await(21)
    assert run(restore(snapshot(plain)), [])[1] == 42
    plain.close()


def test_a_coroutine_awaiting_one_it_also_holds_in_a_live_local() -> None:
    module = load_compiled("""
    from runtime.programs.requests import suspend

    LOG = []

    async def child():
        try:
            return await suspend("child")
        finally:
            LOG.append("child finally")

    async def top():
        c = child()
        got = await c
        return got, c
    """)
    coro = module.top()
    coro.send(None)
    held = coro.cr_frame.f_locals["c"]
    data = snapshot(coro)  # the local and the await: one coroutine, saved once (as the chain's frame 1)
    detach(coro)  # (the local is a frame of the chain: detached by it, not before it)
    assert module.LOG == [] and held.cr_frame is None and coro.cr_frame is None
    restored = restore(data)
    assert restored.cr_frame.f_locals["c"] is restored.cr_await
    with pytest.raises(StopIteration) as end:
        restored.send("answer")
    got, child = end.value.value
    assert got == "answer" and child.cr_frame is None and module.LOG == ["child finally"]
    unload(module)


def test_a_finished_or_running_coroutine_is_refused(chain: types.ModuleType) -> None:
    done = chain.no_await(1)
    run(done, [])
    with pytest.raises(GeneratorStateError, match="coroutine 'no_await'.*finished"):
        snapshot(done)
    detach(done)  # nothing to do


def test_a_restored_chain_resumes_under_asyncio_with_transient_awaits_between() -> None:
    module = load_compiled("""
    import asyncio
    from runtime.programs.requests import suspend

    async def leaf():
        a = await suspend("first")
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        b = await suspend("second")
        return a + b

    async def top():
        return await leaf() * 2
    """)

    async def drive(coro: Any, answers: list[Any]) -> tuple[list[Any], Any]:
        seen: list[Any] = []
        value = answers.pop(0)
        while True:
            try:
                out = coro.send(value)
            except StopIteration as stop:
                return seen, stop.value
            if out is None:  # a bare yield of asyncio.sleep(0): one turn of the loop
                await asyncio.sleep(0)
                value = None
            elif isinstance(out, asyncio.Future):
                out._asyncio_future_blocking = False
                await out
                value = None
            else:
                seen.append(out)
                value = answers.pop(0)

    coro = module.top()
    assert coro.send(None) == "first"
    restored = round_trip(coro)
    assert asyncio.run(drive(restored, [10, 5])) == (["second"], 30)
    unload(module)


def test_a_chain_restored_in_a_fresh_process(chain: types.ModuleType) -> None:
    coro = advance(chain, 3, 2)
    data = snapshot(coro)
    detach(coro)
    path = tmp_module_dir() / f"{chain.__name__}.snap"
    path.write_bytes(data)
    proc = run_python(f"""
        import json
        from pathlib import Path
        from runtime import restore, snapshot
        import {chain.__name__}

        data = Path({str(path)!r}).read_bytes()
        coro = restore(data)
        again = snapshot(coro) == data
        out = coro.send(3)
        try:
            coro.send(40)
        except StopIteration as stop:
            print(json.dumps([type(coro).__name__, again, type(out).__name__, out.args, list(stop.value)]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == ["coroutine", True, "Step", [6], ["done", 47]]


# -- transient awaits -----------------------------------------------------------------------------

TRANSIENT = """
import asyncio

async def at(awaitable, note):
    before = note
    got = await awaitable
    return before, got

async def top(awaitable):
    return await at(awaitable, "x")
"""


@pytest.fixture(scope="module")
def transient() -> Iterator[types.ModuleType]:
    module = load_compiled(TRANSIENT)
    yield module
    unload(module)


class GeneratorAwaitable:
    def __await__(self) -> Any:
        value = yield "from a generator"
        return value


async def not_durable() -> Any:
    return await Awaiting("inside a plain coroutine")


def transient_error(module: types.ModuleType, make: Callable[[], Any]) -> str:
    """The message of the snapshot error of ``top(make())``, driven under asyncio to its first suspension."""
    async def main() -> str:
        coro = module.top(make())
        coro.send(None)
        try:
            with pytest.raises(UnserializableValueError) as caught:
                snapshot(coro)
        finally:
            detach(coro)
        return str(caught.value)

    return asyncio.run(main())


@pytest.mark.parametrize("make, named", [
    (lambda: asyncio.sleep(0.01), "coroutine 'sleep' (asyncio.tasks)"),
    (lambda: asyncio.get_running_loop().create_future(), "an asyncio Future"),
    (not_durable, f"coroutine 'not_durable' ({__name__})"),
    (GeneratorAwaitable, f"generator 'GeneratorAwaitable.__await__' ({__name__})"),
], ids=["asyncio.sleep", "future", "plain-coroutine", "generator-awaitable"])
def test_a_transient_await_cannot_be_snapshotted(transient: types.ModuleType, make: Callable[[], Any],
                                                 named: str) -> None:
    module = transient
    message = transient_error(module, make)
    assert message.startswith(f"cannot snapshot {module.__name__}:at suspended at line 6: it is awaiting {named}, "
                              "which is not durable: a transient await (asyncio, I/O) runs again after a crash")
    assert message.endswith("step(), sleep(), wait(), checkpoint(), suspend(), or another durable coroutine")


def test_the_transient_error_names_the_slot_and_the_type(transient: types.ModuleType) -> None:
    module = transient

    async def main() -> UnserializableValueError:
        coro = module.top(asyncio.sleep(0.01))
        coro.send(None)
        try:
            with pytest.raises(UnserializableValueError) as caught:
                snapshot(coro)
        finally:
            detach(coro)
        return caught.value

    error = asyncio.run(main())
    assert error.path == ["the object the await at line 6 is waiting for"]
    assert error.type_name == "coroutine"


# -- runtime awaitables in the slot ---------------------------------------------------------------

def test_a_step_of_a_lambda_is_not_encoded() -> None:
    module = load_compiled("""
    from runtime.programs.requests import step

    async def top():
        return await step(lambda: 1)
    """)
    coro = module.top()
    assert isinstance(coro.send(None), Step)
    restored = round_trip(coro)
    assert type(restored.cr_await) is Resumed and restored.cr_await.delegate == AwaitedRequest("step")
    assert run(restored, [], first=7)[1] == 7
    unload(module)


# -- coroutines held in locals --------------------------------------------------------------------

HELD = """
from runtime.programs.requests import suspend

async def child(n):
    got = await suspend(("child", n))
    return got + n

def finish(coro, value):
    try:
        coro.send(value)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("not finished")

async def top():
    waiting = child(1)            # not started
    running = child(2)
    first = running.send(None)    # suspended at its await
    done = child(3)
    done.send(None)
    early = finish(done, 30)      # finished
    answer = await suspend((first, early))
    late = await waiting
    return late, finish(running, answer), done.cr_frame is None
"""


@pytest.fixture(scope="module")
def held() -> Iterator[types.ModuleType]:
    module = load_compiled(HELD)
    yield module
    unload(module)


@pytest.mark.parametrize("fresh", [False, True], ids=["live", "restored"])
def test_held_coroutines_travel_not_started_suspended_and_finished(held: types.ModuleType, fresh: bool) -> None:
    module = held
    coro = module.top()
    assert coro.send(None) == (("child", 2), 33)
    if fresh:
        before = {n: coro.cr_frame.f_locals[n] for n in ("waiting", "running", "done")}
        coro = round_trip(coro)
        assert before["waiting"].cr_frame is None and before["running"].cr_frame is None  # detached with it
        locals_ = coro.cr_frame.f_locals
        assert locals_["waiting"].cr_await is None and locals_["waiting"].cr_frame is not None
        assert type(locals_["running"].cr_await) is Resumed
        assert locals_["done"].cr_frame is None
    seen, result = run(coro, [5], first=100)
    assert seen == [("child", 1)]
    assert result == (6, 102, True)


def test_held_coroutines_are_shown_and_snapshot_again_unchanged(held: types.ModuleType) -> None:
    module = held
    coro = module.top()
    coro.send(None)
    data = snapshot(coro)
    shown = inspect_snapshot(data).frames[0].locals
    assert shown["waiting"].startswith(f"<durable coroutine {module.__name__}:child at line")
    assert shown["running"] == f"<durable coroutine {module.__name__}:child at line 5>"
    assert shown["done"] == "<finished durable coroutine>"
    restored = round_trip(coro)
    assert snapshot(restored) == data
    detach(restored)


def test_a_held_coroutine_awaiting_another_travels_with_its_chain() -> None:
    module = load_compiled("""
    from runtime.programs.requests import suspend

    async def inner():
        return await suspend("inner") * 2

    async def middle():
        return await inner() + 1

    async def top():
        held = middle()
        first = held.send(None)
        got = await suspend(first)
        try:
            held.send(got)
        except StopIteration as stop:
            return stop.value
    """)
    coro = module.top()
    assert coro.send(None) == "inner"
    restored = round_trip(coro)
    held = restored.cr_frame.f_locals["held"]
    assert held.cr_await.__qualname__ == "inner" and type(held.cr_await.cr_await) is Resumed
    assert run(restored, [], first=20)[1] == 41
    unload(module)


# -- versions --------------------------------------------------------------------------------------

def test_a_held_coroutine_whose_function_became_a_generator_function_is_refused() -> None:
    source = """
    from runtime.programs.requests import suspend

    async def child(n):
        return n

    async def top():
        held = child(1)
        got = await suspend("x")
        return await held + got
    """
    module = load_compiled(source)
    coro = module.top()
    coro.send(None)
    data = snapshot(coro)
    detach(coro)
    load_compiled(source.replace("async def child(n):\n        return n", "def child(n):\n        yield n"),
                  name=module.__name__)
    with pytest.raises(IncompatibleCodeError, match="holds a durable coroutine of .*:child, which the code loaded "
                                                    "now defines as a generator function"):
        restore(data)
    unload(module)


def test_a_point_that_no_longer_awaits_is_refused_by_kind() -> None:
    meta = FunctionMeta("m", "f", b"new", {1: ("x",)}, {1: 3}, (), (), version="v2",
                        points={1: ("k", "label", (), ())})
    header = compat.FrameHeader("m:f", b"old", "v1", "k", "label", 1, 3, ["_dg_aw1_0123abcd", "x"],
                                ["_dg_aw1_0123abcd", "x"], [])
    with pytest.raises(compat.PointMismatchError) as caught:
        compat.judge(header, meta)
    assert caught.value.reason == "kind" and caught.value.missing == ("_dg_aw1_0123abcd",)
    assert "the awaitable an `await` is waiting for" in str(caught.value)
