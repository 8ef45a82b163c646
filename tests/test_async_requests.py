"""Requests are awaitable (issue 15, stage A): ``await step(...)`` in a native coroutine yields the request to
its driver, as ``yield step(...)`` does in a generator, and gets the answer back."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterator

import pytest

from runtime import SignalTimeout, checkpoint, sleep, step, wait
from runtime.programs.requests import Awaiting, Checkpoint, Request, Sleep, Step, Wait, suspend


def fetch(i: int) -> int:
    return i * 10


async def as_coroutine(n: int) -> Any:
    total = 0
    for i in range(n):
        total += await step(fetch, i)
    try:
        decision = await wait("go", timeout=5)
    except SignalTimeout as exc:
        decision = f"none ({exc.signal})"
    await sleep(3)
    await checkpoint()
    note = await suspend({"progress": total})
    return total, decision, note


def as_generator(n: int) -> Iterator[Any]:
    total = 0
    for i in range(n):
        total += yield step(fetch, i)
    try:
        decision = yield wait("go", timeout=5)
    except SignalTimeout as exc:
        decision = f"none ({exc.signal})"
    yield sleep(3)
    yield checkpoint()
    note = yield {"progress": total}
    return total, decision, note


def drive(start: Callable[[], Any], answer: Callable[[Any], tuple[str, Any]]) -> tuple[list[Any], Any]:
    """Run a coroutine or a generator by hand, answering each request; the requests seen and the result."""
    runner = start()
    seen: list[Any] = []
    action: tuple[str, Any] = ("send", None)
    while True:
        try:
            request = runner.send(action[1]) if action[0] == "send" else runner.throw(action[1])
        except StopIteration as stop:
            return seen, stop.value
        seen.append(request)
        action = answer(request)


def answers(timeout: bool) -> Callable[[Any], tuple[str, Any]]:
    def answer(request: Any) -> tuple[str, Any]:
        if isinstance(request, Step):
            return "send", request.fn(*request.args)
        if isinstance(request, Wait):
            return ("throw", SignalTimeout(request.signal, request.timeout)) if timeout else ("send", "yes")
        if isinstance(request, (Sleep, Checkpoint)):
            return "send", None
        return "send", "noted"
    return answer


@pytest.mark.parametrize("timeout", [False, True])
def test_an_async_program_makes_the_requests_a_generator_program_makes(timeout: bool) -> None:
    awaited = drive(lambda: as_coroutine(3), answers(timeout))
    yielded = drive(lambda: as_generator(3), answers(timeout))
    assert awaited == yielded
    assert awaited[1] == (sum(fetch(i) for i in range(3)), "none (go)" if timeout else "yes", "noted")
    assert [type(r).__name__ for r in awaited[0]] == ["Step"] * 3 + ["Wait", "Sleep", "Checkpoint", "dict"]


def test_the_awaiting_coroutine_shows_the_await_as_its_cr_await() -> None:
    coro = as_coroutine(1)
    request = coro.send(None)
    assert isinstance(request, Step) and isinstance(coro.cr_await, Awaiting)
    assert coro.cr_await.request is request
    coro.close()


def test_an_await_on_a_request_is_its_own_iterator() -> None:
    request = sleep(1)
    assert isinstance(request, Request)
    it = request.__await__()
    assert iter(it) is it and next(it) is request
    with pytest.raises(StopIteration) as stop:
        it.send(7)
    assert stop.value.value == 7
    again = request.__await__()  # each await is a fresh one
    assert again.send(None) is request
    with pytest.raises(KeyError):
        again.throw(KeyError("k"))


def test_asyncio_refuses_a_request_awaited_in_its_task() -> None:
    async def main() -> Any:
        return await step(fetch, 1)

    with pytest.raises(RuntimeError, match="bad yield"):
        asyncio.run(main())
