"""Compile-time diagnostics: one small class per problem, each with a stable code and a hint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Diagnostic:
    """A problem found in the user's code, reported as ``path:line:col: error: CODE message``."""

    path: str
    line: int
    column: int
    detail: str = ""

    code: ClassVar[str] = "DG000"
    message: ClassVar[str] = "problem"
    hint: ClassVar[str] = ""

    def text(self) -> str:
        body = self.message.format(detail=self.detail)
        out = f"{self.path}:{self.line}:{self.column}: error: {self.code} {body}"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out


class UnreadableFile(Diagnostic):
    code = "DG000"
    message = "cannot read the file: {detail}"
    hint = "check the path and its permissions; source must be UTF-8 or declare its encoding"


class SyntaxProblem(Diagnostic):
    code = "DG001"
    message = "invalid Python syntax: {detail}"
    hint = "the file must parse as Python 3.10-3.13 source"


class ReservedName(Diagnostic):
    code = "DG002"
    message = "the name {detail!r} is reserved for compiler-generated variables"
    hint = "rename the variable: names starting with '_dg_' are reserved"


class AsyncNotSupported(Diagnostic):
    code = "DG003"
    message = "@durable async generators are not supported yet: {detail}"
    hint = ("an async generator suspends two ways (yield to its consumer, await to its runner); use an async def "
            "that returns the items, or a durable generator (def with yield)")


class NotAGenerator(Diagnostic):
    code = "DG004"
    message = "@durable function {detail!r} is not a generator function"
    hint = "a durable function must contain 'yield' or 'yield from', or be an 'async def'"


class UnsupportedConstruct(Diagnostic):
    code = "DG006"
    message = "unsupported construct in a durable function: {detail}"
    hint = "move the suspension out of this construct into a separate statement"


class CoroutineDecorator(Diagnostic):
    code = "DG007"
    message = "{detail}: a generator-based coroutine cannot be durable"
    hint = ("remove the coroutine decorator (it replaces the function's code, so the generator would silently "
            "not be durable); a separate coroutine can drive the durable generator with 'yield from'")


class BadPoint(Diagnostic):
    code = "DG008"
    message = "invalid point label: {detail}"
    hint = ("name a suspension point as 'yield point(\"name\", value)', 'yield from point(\"name\", generator)' or "
            "'await point(\"name\", awaitable)', with the name a string literal")


class DuplicatePoint(Diagnostic):
    code = "DG009"
    message = "the point name {detail!r} is used twice in this function"
    hint = "each named point of a function needs a name of its own: rename one of them"


class CompileError(Exception):
    """Raised by ``compile_source`` with every diagnostic found in the module."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.text() for d in diagnostics))
