"""A ``yield from`` restored over an iterator that is not a durable generator (a generator-like object
with ``send``, ``throw`` and ``close``): every operation of the caller after the restore reaches the
iterator as it does natively (PEP 380), the first one included.
"""
from __future__ import annotations

import pytest

from harness import NEXT, differential, send, throw

ECHO = """
LOG = []


class Echo:
    \"\"\"A generator-like iterator: what it is sent comes back, a thrown KeyError is answered.\"\"\"

    def __init__(self):
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.n += 1
        if self.n > 6:
            raise StopIteration("done")
        return ("next", self.n)

    def send(self, value):
        LOG.append(("send", value))
        if value == "stop":
            raise StopIteration("stopped")
        return ("sent", value)

    def throw(self, exc, *rest):
        LOG.append(("throw", type(exc).__name__ if isinstance(exc, BaseException) else exc.__name__))
        if isinstance(exc, KeyError) or exc is KeyError:
            return "answered"
        raise exc

    def close(self):
        LOG.append("close")


def gen():
    try:
        result = yield from Echo()
        LOG.append(("result", result))
        yield "after"
    except ValueError as e:
        LOG.append(("caught", e.args))
        yield "handled"
    finally:
        LOG.append("finally")
"""


@pytest.mark.parametrize("script", [
    pytest.param([NEXT, send(5), send(None), NEXT], id="send"),
    pytest.param([NEXT, throw(KeyError("k")), send(1), NEXT], id="throw-answered"),
    pytest.param([NEXT, throw(ValueError("v")), NEXT], id="throw-through"),
    pytest.param([NEXT, send("stop"), NEXT], id="send-stops"),
    pytest.param([NEXT, NEXT, "close"], id="close"),
])
def test_operations_after_a_restore_reach_the_iterator(script):
    differential(ECHO, script)
