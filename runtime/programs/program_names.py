"""Names a store row holds, turned into code: the program's function and the functions of its steps.

A row names functions as ``module:qualname``. A worker imports such a module only when it may:

* it is allowed by the allow rules (``runtime.allow_modules``, a module that declared durable
  functions and is imported, a module the import hook compiles), or
* it is a module of the project: its file lies under the current directory, where ``durable run``
  and ``python -m`` find modules, or
* it is one of the modules a worker was told about (``DURABLE_MODULES``, comma-separated prefixes).

Nothing else a row names is imported (``os:system`` is refused before anything is imported), and a
name is looked up in the module's own namespace: it must be defined there, under that name.
"""
from __future__ import annotations

import os
import types
from typing import Any, Callable

from ..values import allow

ENV_MODULES = "DURABLE_MODULES"


class NameError_(Exception):
    """A row (or a command line) names a function that cannot or may not be found; the message says why."""


def split(ref: str, what: str) -> tuple[str, str]:
    """``(module, qualname)`` of a ``module:qualname`` reference, both checked to be dotted identifiers."""
    module, colon, qualname = ref.partition(":") if isinstance(ref, str) else ("", "", "")
    if not colon or not dotted(module) or not dotted(qualname):
        raise NameError_(f"{what} {ref!r} is not MODULE:FUNCTION with a dotted module name (as python -m takes it, "
                         "run from the project's directory), for example flows:onboarding")
    return module, qualname


def dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def project_module(module: str) -> bool:
    """True if ``module``'s file lies under the current directory (found without importing anything)."""
    if not dotted(module):
        return False
    path = os.path.join(os.getcwd(), *module.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def configured(module: str) -> bool:
    prefixes = [p.strip() for p in os.environ.get(ENV_MODULES, "").split(",") if p.strip()]
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def may_import(module: str) -> bool:
    return allow.module_allowed(module) or project_module(module) or configured(module)


def import_module(module: str, what: str, importer: Callable[[str], types.ModuleType]) -> types.ModuleType:
    """The module, imported with ``importer`` only if a worker may import it (``importer`` also waits for
    an import of it that another thread has in progress: a module in sys.modules may be half made)."""
    if not may_import(module):
        raise NameError_(
            f"{what} is in module {module!r}, which a worker does not import: it is not a module of the project "
            f"(no {module.replace('.', '/')}.py under {os.getcwd()}), not allowed (runtime.allow_modules) and not "
            f"in ${ENV_MODULES}")
    return importer(module)


def find(module: str, qualname: str, what: str) -> Any:
    """What ``qualname`` names in the imported ``module``, defined there under that name (looked up in
    its namespace, never through ``getattr`` hooks)."""
    found = allow.find(module, qualname)
    if found is None:
        raise NameError_(f"module {module!r} has no {what} {qualname!r}")
    return found


def step_ref(fn: Any) -> str:
    """``module:qualname`` of a step's function, checked to be found again by a worker; raises TypeError."""
    if isinstance(fn, types.BuiltinFunctionType) and allow.safe_builtin(fn) is not None:
        return f"builtins:{fn.__name__}"
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)) or not isinstance(module, str) \
            or not dotted(qualname):
        raise TypeError(f"step() needs a module-level function, not {fn!r} (lambdas and nested functions "
                        "cannot be found again after a restart)")
    if not may_import(module) or allow.find(module, qualname) is not fn:
        raise TypeError(f"step() function {module}:{qualname} could not be found again by a worker: its module "
                        f"must be a module of the project (under {os.getcwd()}), allowed with "
                        f"runtime.allow_modules({module!r}), or named in ${ENV_MODULES}")
    return f"{module}:{qualname}"


def step_function(ref: str, importer: Callable[[str], types.ModuleType]) -> Callable[..., Any]:
    """The function a step row names, found under the rules above (or a safe builtin)."""
    module, qualname = split(ref, "step function")
    if module == "builtins":
        try:
            return allow.builtin(qualname)  # type: ignore[no-any-return]
        except Exception as exc:  # NotAllowedError: not a safe builtin
            raise NameError_(str(exc)) from None
    import_module(module, f"step function {ref}", importer)
    found = find(module, qualname, "step function")
    if not callable(found):
        raise NameError_(f"step function {ref} is not callable")
    return found  # type: ignore[no-any-return]
