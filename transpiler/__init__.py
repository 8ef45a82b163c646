"""Durable generators compiler: rewrites generator functions into resumable state machines (libcst)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

FORMAT_VERSION = 1
"""Bumped whenever the compiled form or the snapshot layout changes incompatibly."""

from .importhook import install_import_hook  # noqa: E402

if TYPE_CHECKING:
    from .diagnostics import CompileError, Diagnostic
    from .generate import CompiledModule


def compile_source(source: str, filename: str = "<string>", *, all_generators: bool = False) -> str:
    """Compile a module's source: every ``@durable`` function (or every generator function when
    ``all_generators`` is true) becomes a resumable state machine. Raises ``CompileError``."""
    from .generate import compile_module  # libcst loads here, not with the package

    return compile_module(source, filename, all_generators=all_generators)


def compile_source_mapped(source: str, filename: str = "<string>", *, all_generators: bool = False
                          ) -> "CompiledModule":
    """``compile_source`` plus the table mapping each generated line to its source line."""
    from .generate import compile_module_mapped

    return compile_module_mapped(source, filename, all_generators=all_generators)


def __getattr__(name: str) -> Any:
    if name in ("CompileError", "Diagnostic"):
        from . import diagnostics

        return getattr(diagnostics, name)
    if name == "compile_module":  # kept for older callers; prefer compile_source
        from .generate import compile_module

        return compile_module
    raise AttributeError(f"module 'transpiler' has no attribute {name!r}")


__all__ = ["compile_source", "compile_source_mapped", "install_import_hook", "CompileError", "Diagnostic",
           "__version__"]
