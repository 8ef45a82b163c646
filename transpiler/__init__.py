"""Durable generators compiler: rewrites generator functions into resumable state machines (libcst)."""
from __future__ import annotations

__version__ = "0.1.0"

from .diagnostics import CompileError, Diagnostic  # noqa: E402
from .generate import compile_module  # noqa: E402
from .importhook import install_import_hook  # noqa: E402


def compile_source(source: str, filename: str = "<string>", *, all_generators: bool = False) -> str:
    """Compile a module's source: every ``@durable`` function (or every generator function when
    ``all_generators`` is true) becomes a resumable state machine. Raises ``CompileError``."""
    return compile_module(source, filename, all_generators=all_generators)


__all__ = ["compile_source", "install_import_hook", "CompileError", "Diagnostic"]
