"""Finding a program's code: its module imported (compiled by the import hook when needed), its function."""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
import types
from typing import Any, Callable

from . import program_names


class ProgramError(Exception):
    """The program cannot be started or resumed: an unknown function, arguments that do not fit, a
    module that cannot be imported, code that changed under a snapshot. Nothing was written."""


_IMPORT_LOCK = threading.RLock()
"""Imports of program modules are serialized: with a cold compile cache, threads importing the same
module at once must not see it half-imported (a module that has no function yet)."""


def import_program_module(module_name: str) -> types.ModuleType:
    """Import a program's module as ``python -m`` would find it (the current directory first),
    compiling it with the import hook when the compiler is installed and the module is not compiled."""
    if not program_names.dotted(module_name):
        raise ProgramError(f"{module_name!r} is not a dotted module name (as python -m takes it, run from the "
                           "project's directory)")
    with _IMPORT_LOCK:
        if module_name in sys.modules:  # imported, or being imported by a thread outside this lock: wait for it
            return importlib.import_module(module_name)
        return _import(module_name)


def _import(module_name: str) -> types.ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        from transpiler import install_import_hook
    except ImportError:  # runtime-only install: the module must be compiled ahead of time
        pass
    else:
        _hooked(install_import_hook, module_name)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ProgramError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module does not compile, or raises while it runs: the user's code, not ours
        sys.modules.pop(module_name, None)
        detail = str(exc) if type(exc).__name__ == "CompileError" else f"{type(exc).__name__}: {exc}"
        raise ProgramError(f"cannot import module {module_name!r}:\n{detail}") from None


_HOOKED: set[str] = set()
_HOOK_LOCK = threading.Lock()


def _hooked(install: Callable[..., Any], module_name: str) -> None:
    top = module_name.split(".")[0]
    with _HOOK_LOCK:
        if top not in _HOOKED:
            _HOOKED.add(top)
            install([top])


def load_function(ref: str, *, named_by_operator: bool = False) -> Callable[..., Any]:
    """The durable generator function (or ``async def``) named ``module:qualname``; raises ProgramError.

    A name read from a store row is found only in a module a worker may import (``program_names``);
    ``named_by_operator`` (``durable run``, ``Runner.start``) also imports the module the command names.
    """
    try:
        module, qualname = program_names.split(ref, "program")
        if named_by_operator:
            import_program_module(module)
        else:
            program_names.import_module(module, f"program {ref}", import_program_module)
        obj = program_names.find(module, qualname, "function")
    except program_names.NameError_ as exc:
        raise ProgramError(str(exc)) from None
    if not getattr(obj, "__durable__", None) or not (inspect.isgeneratorfunction(obj)
                                                      or inspect.iscoroutinefunction(obj)):
        raise ProgramError(f"{ref} is not a @durable generator function or async def (mark it with "
                           "@runtime.durable)")
    return obj  # type: ignore[no-any-return]


