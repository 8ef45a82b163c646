"""Self-checks of the differential harness (native-vs-native mode: no compiler needed)."""
from __future__ import annotations

import pytest

from harness import (
    CLOSE, NATIVE_VS_NATIVE, NEXT, Expr, _gen_finished, describe_exc, differential, encode_value,
    in_handler, load_native, norm, resolve_value, run_native, runner_kind, send, throw,
)

PROGRAM = """
LOG = []
class MyErr(Exception):
    pass
def gen(a=1):
    x = yield a
    LOG.append(x)
    try:
        y = yield x
    except KeyError as e:
        LOG.append(repr(e))
        raise ValueError("boom") from e
    except MyErr as e:
        y = yield ("myerr", e.args)
    return y
"""


def test_native_vs_native_passes_and_checks_fresh_process():
    r = differential(PROGRAM, [NEXT, send(5), throw(KeyError("k")), NEXT], mode=NATIVE_VS_NATIVE)
    assert r.fresh_at == 2 and r.fresh == r.native[2:]
    raised = r.native[2]
    assert raised["outcome"] == "raise"
    assert raised["value"]["type"] == "ValueError"
    assert raised["value"]["cause"]["type"] == "KeyError"
    assert raised["value"]["suppress_context"] is True
    assert raised["log"] == [repr("KeyError('k')")]


def test_program_classes_and_handler_steps():
    r = differential(PROGRAM, [in_handler(NEXT, OSError("caller")), send(1),
                               throw(Expr("MyErr('m')")), send("done")], mode=NATIVE_VS_NATIVE)
    assert r.native[2]["value"] == "('myerr', ('m',))"
    assert r.native[3] == {"op": "send('done')", "outcome": "return", "value": "'done'",
                           "finished": True, "log": []}


def test_mismatch_is_reported_side_by_side():
    src = """
    import itertools
    LOG = []
    def gen():
        yield id(LOG) % 1000003
    """
    with pytest.raises(AssertionError) as ei:
        differential(src, [NEXT], mode=NATIVE_VS_NATIVE)
    text = str(ei.value)
    assert "!! step  0 next()" in text and "native2:" in text


def test_log_mismatch_is_reported():
    src = """
    import itertools
    LOG = []
    N = itertools.count()
    def gen():
        yield 1
        LOG.append(id(LOG) % 1000003)
    """
    with pytest.raises(AssertionError, match="LOG"):
        differential(src, [NEXT, NEXT], mode=NATIVE_VS_NATIVE)


def test_values_normalised():
    nan = float("nan")
    assert norm([nan, {1, 2}, (1,), {"a": b"x"}]) == "[nan, set({1, 2}), (1,), {'a': b'x'}]"
    cyc: list = [1]
    cyc.append(cyc)
    assert norm(cyc) == "[1, <cycle>]"
    assert norm(KeyError("k")) == "KeyError('k',)"
    assert "0x" not in norm(object())


def test_value_specs_make_fresh_instances():
    spec = encode_value(lambda: KeyError("x", 1))
    a, b = resolve_value(spec, {}), resolve_value(spec, {})
    assert a is not b and a.args == b.args == ("x", 1)
    assert resolve_value(encode_value(KeyError), {}) is KeyError
    assert resolve_value(encode_value(float("inf")), {}) == float("inf")
    assert resolve_value(encode_value(Expr("N + 1")), {"N": 2}) == 3
    with pytest.raises(TypeError):
        encode_value(object())


def test_exception_chain_description():
    try:
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("outer")
    except ValueError as e:
        d = describe_exc(e)
    assert d["context"]["type"] == "KeyError" and d["cause"] is None


def test_run_native_and_final_close():
    trace = run_native("""
    LOG = []
    def gen():
        try:
            yield 1
        finally:
            LOG.append("fin")
    """, [NEXT])
    assert [e["op"] for e in trace] == ["next()", "close() [end of script]"]
    assert trace[-1]["log"] == ["'fin'"]
    assert run_native(PROGRAM, [CLOSE])[-1]["finished"] is True


ASYNC_PROGRAM = """
from runtime.programs.requests import suspend
LOG = []
class MyErr(Exception):
    pass
async def child(v):
    return await suspend(("child", v))
async def main(a=1):
    x = await suspend(a)
    LOG.append(x)
    try:
        y = await child(x)
    except KeyError as e:
        LOG.append(repr(e))
        raise ValueError("boom") from e
    except MyErr as e:
        y = await suspend(("myerr", e.args))
    return y
"""


def test_a_coroutine_is_driven_as_one() -> None:
    r = differential(ASYNC_PROGRAM, [NEXT, send(5), throw(KeyError("k")), NEXT], entry="main()",
                     mode=NATIVE_VS_NATIVE)
    assert [(e["outcome"], e["finished"]) for e in r.native] == [
        ("yield", False), ("yield", False), ("raise", True), ("raise", True)]
    assert r.native[1]["value"] == "('child', 5)"
    assert r.native[2]["value"]["cause"]["type"] == "KeyError"
    assert r.native[3]["value"]["args"] == "('cannot reuse already awaited coroutine',)"
    assert r.fresh_at == 2 and r.fresh == r.native[2:]


def test_a_coroutine_returns_and_takes_program_exceptions() -> None:
    r = differential(ASYNC_PROGRAM, [NEXT, send(1), throw(Expr("MyErr('m')")), send("done")],
                     entry="main()", mode=NATIVE_VS_NATIVE)
    assert r.native[2]["value"] == "('myerr', ('m',))"
    assert r.native[3] == {"op": "send('done')", "outcome": "return", "value": "'done'",
                           "finished": True, "log": []}


def test_the_end_of_script_close_runs_a_coroutines_finally() -> None:
    trace = run_native("""
    from runtime.programs.requests import suspend
    LOG = []
    async def main():
        try:
            await suspend(1)
        finally:
            LOG.append("fin")
    """, [NEXT], entry="main()")
    assert [e["op"] for e in trace] == ["next()", "close() [end of script]"]
    assert trace[-1]["log"] == ["'fin'"] and trace[-1]["finished"] is True


def test_coroutine_states() -> None:
    module = load_native(ASYNC_PROGRAM)
    coro = module.main()
    assert runner_kind(coro) == "coroutine" and not _gen_finished(coro)
    assert coro.send(None) == 1 and not _gen_finished(coro)
    coro.close()
    assert _gen_finished(coro)
    assert runner_kind(iter(())) == "tuple_iterator"
