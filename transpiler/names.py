"""What each local the compiler makes holds, said in the terms of the user's code (for error messages)."""
from __future__ import annotations

import re

_WHAT = {
    "it": "the iterator of the `for` loop at line {line}",
    "v": "the current item of the `for` loop at line {line}, before it is assigned",
    "we": "whether the `while` loop at line {line} ended by its condition (for its `else`)",
    "yf": "the iterator the `yield from` at line {line} delegates to",
    "y": "the value sent into the yield at line {line}",
    "a": "the value of the await at line {line}",
    "aw": "the object the await at line {line} is waiting for",
    "t": "the value of `{text}`, evaluated before the {suspension} at line {line}",
    "b": "the value of `{text}` at line {line}, as far as it is evaluated",
    "c": "the value of `{text}` at line {line}",
    "f": "the formatted value of `{text}` in the f-string at line {line}",
    "u": "a value unpacked for the assignment at line {line}",
    "wm": "the context manager of the `with` at line {line}",
    "wx": "the `__exit__` method of the context manager of the `with` at line {line}",
    "wv": "the value `__enter__` returned for the `with` at line {line}",
    "wok": "whether the body of the `with` at line {line} is running without an exception",
    "fk": "how the `try` at line {line} was left, for its `finally`",
    "fx": "the exception the `finally` of the `try` at line {line} is to raise again",
    "fv": "the value the `finally` of the `try` at line {line} is to return",
    "g": "the exception group that entered the `except*` clauses of the `try` at line {line}",
    "x": "the exception raised by the `except*` handler at line {line}",
    "e": "the exception caught by the `except` at line {line}",
    "mc": "the case the `match` at line {line} chose",
    "ai": "the asynchronous iterator of the `async for` loop at line {line}",
    "ae": "whether the `async for` loop at line {line} ran out of items (for its `else`)",
    "am": "the asynchronous context manager of the `async with` at line {line}",
    "ax": "the `__aexit__` method of the asynchronous context manager of the `async with` at line {line}",
    "av": "the value `__aenter__` gave for the `async with` at line {line}",
    "aok": "whether the body of the `async with` at line {line} is running without an exception",
}

_LONGEST = 40
_COMPILER_NAME = re.compile(r"_dg_[A-Za-z]+\d*")


def describe(kind: str, line: int, text: str = "", suspension: str = "yield") -> str:
    """What a compiler-made local of ``kind`` holds; ``text`` is the source of the expression it keeps,
    ``suspension`` what suspends the function (``yield`` or ``await``)."""
    template = _WHAT.get(kind, "a value the compiler keeps for the statement at line {line}")
    return template.format(line=line, text=_shorten(text), suspension=suspension)


def _shorten(text: str) -> str:
    """An expression's source on one short line; the compiler's own names inside it read as ``...``."""
    text = _COMPILER_NAME.sub("...", " ".join(text.split()))
    return text if len(text) <= _LONGEST else text[:_LONGEST - 3].rstrip() + "..."
