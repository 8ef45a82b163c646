"""The allow-list: which classes, functions and modules a snapshot may name, and how names resolve.

A snapshot refers to classes and functions as ``module:qualname``. Restore resolves such a
name only when it is allowed:

* the module declared durable functions (it was compiled: the import hook, the CLI or the build
  step), and is imported;
* the class was registered with ``@serializable`` (or ``register_codec``);
* the module matches a prefix given to ``allow_modules`` (``"myapp"`` covers ``myapp`` and
  ``myapp.sub``); only such modules are imported by restore when they are not imported yet.

The object found must really be what the name says (its ``__module__`` and ``__qualname__``), so
a name cannot reach, through an allowed module, something that module merely imported.
"""
from __future__ import annotations

import builtins
import importlib
import sys
import types
from typing import Any, TypeVar

from .. import registry
from . import kinds
from ..errors import IncompatibleCodeError, NotAllowedError

T = TypeVar("T", bound=type)

SERIALIZABLE: dict[str, type] = {}
"""Classes registered with ``@serializable``, by ``module:qualname``."""

_PREFIXES: set[str] = set()

SAFE_BUILTINS: frozenset[str] = frozenset({
    # functions: no access to code, files, the interpreter or other objects' attributes
    "abs", "all", "any", "ascii", "bin", "callable", "chr", "divmod", "format", "hash", "hex", "id",
    "isinstance", "issubclass", "iter", "len", "max", "min", "next", "oct", "ord", "pow", "print",
    "repr", "round", "sorted", "sum", "aiter", "anext",
    # types
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list", "object",
    "range", "set", "slice", "str", "tuple", "enumerate", "filter", "map", "reversed", "zip",
    # every exception and warning class (a class as a value: `except_type = ValueError`)
    *(name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)),
})
"""Builtins a snapshot may refer to (``eval``, ``exec``, ``open``, ``__import__``, ``getattr``, … are not)."""

STANDARD_MODULES: frozenset[str] = frozenset({
    "math", "cmath", "operator", "_operator", "functools", "_functools", "itertools", "heapq", "_heapq", "bisect",
    "_bisect", "string", "statistics", "json", "json.decoder", "json.encoder", "textwrap", "unicodedata",
    "contextlib", "collections", "collections.abc", "_collections_abc", "datetime", "_datetime", "decimal",
    "_decimal", "_pydecimal", "fractions", "numbers", "enum", "re", "posixpath", "ntpath", "copy", "keyword",
    "difflib", "fnmatch", "dataclasses", "typing",
})
"""Standard-library modules whose functions and classes a snapshot may name (and whose instances it may
carry): they compute on the values they are given and touch no file, process or interpreter state.
Others (``os``, ``subprocess``, ``random``, ...) need ``allow_modules``."""


def serializable(cls: T) -> T:
    """Class decorator: snapshots may carry instances of ``cls`` (and restore may rebuild them)."""
    if not isinstance(cls, type):
        raise TypeError(f"@serializable needs a class, not {type(cls).__name__!r}")
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"@serializable needs a class defined at module level, not {cls.__qualname__!r}")
    SERIALIZABLE[f"{cls.__module__}:{cls.__qualname__}"] = cls
    kinds.changed()
    return cls


def allow_modules(*prefixes: str) -> None:
    """Let snapshots name classes and functions of these modules (and their submodules)."""
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix or prefix.startswith(".") or prefix.endswith("."):
            raise ValueError(f"allow_modules() needs module names such as 'myapp.models', not {prefix!r}")
        _PREFIXES.add(prefix)
    kinds.changed()


def disallow_modules(*prefixes: str) -> None:
    """Undo ``allow_modules`` for these prefixes."""
    for prefix in prefixes:
        _PREFIXES.discard(prefix)
    kinds.changed()


def module_allowed(module: str) -> bool:
    """True if restore may import ``module`` and resolve names in it."""
    if module in registry.MODULES or module in STANDARD_MODULES:
        return True
    return any(module == p or module.startswith(p + ".") for p in _PREFIXES)


def ref_of(obj: Any) -> str | None:
    """``module:qualname`` of a module-level class or function a snapshot may name, else None."""
    module, qualname = _name_of(obj)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<locals>" in qualname:
        return None
    ref = f"{module}:{qualname}"
    if SERIALIZABLE.get(ref) is obj:
        return ref
    if module_allowed(module) and find(module, qualname) is obj:
        return ref
    return None


def resolve(ref: str, kind: str = "class or function") -> Any:
    """The class or function named ``module:qualname``; NotAllowedError unless the allow-list permits it."""
    found = SERIALIZABLE.get(ref)
    if found is not None:
        return found
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname or "<locals>" in qualname:
        raise NotAllowedError(f"snapshot names {kind} {ref!r}, which is not a module-level name")
    import_allowed(module, f"snapshot names {kind} {ref!r}")
    obj = find(module, qualname)
    if obj is None:
        raise IncompatibleCodeError(f"snapshot names {kind} {ref!r}, which no longer exists (or is not defined there)")
    return obj


def import_allowed(module: str, what: str) -> None:
    """Make sure ``module`` is imported, importing it only if the allow-list permits it.

    ``what`` starts the error messages (``"snapshot names class 'm:C'"``): NotAllowedError for a
    module that is not allowed, IncompatibleCodeError for an allowed one that fails to import.
    """
    if not module_allowed(module):
        raise NotAllowedError(
            f"{what}, but module {module!r} is not allowed: restore imports and resolves names only in compiled "
            f"modules, @serializable classes and modules given to runtime.allow_modules(); import {module!r} "
            f"before restore, or call runtime.allow_modules({module!r})")
    if module not in sys.modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or the allowed module itself failing while it runs
            raise IncompatibleCodeError(
                f"{what}, but module {module!r} cannot be imported: {type(exc).__name__}: {exc}") from None


def find(module: str, qualname: str) -> Any:
    """The object at ``qualname`` in an imported module, if it is defined there under that name.

    Names are looked up in the module's and classes' own dictionaries: no module ``__getattr__``,
    metaclass or descriptor of the user's runs for a name a snapshot chose."""
    obj: Any = sys.modules.get(module)
    namespace = getattr(obj, "__dict__", None) if isinstance(obj, types.ModuleType) else None
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        found = namespace.get(part) if type(namespace) in (dict, types.MappingProxyType) else None
        if found is None:
            return None
        obj = found.__func__ if isinstance(found, (staticmethod, classmethod)) else found
        if i + 1 < len(parts):
            if not isinstance(obj, type):
                return None
            namespace = type.__getattribute__(obj, "__dict__")
    if _name_of(obj) != (module, qualname):
        return None
    return obj


CODE_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
              types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
              types.ClassMethodDescriptorType, classmethod, staticmethod)
"""What a module global carried by reference may not be: code travels only by the names the allow rules
resolve (a name cannot reach ``os.system`` through a module that did ``from os import system``)."""


def find_global(obj: Any) -> tuple[str, str] | None:
    """``(module, name)`` if an allowed, imported module holds the data object ``obj`` as one of its
    globals (the first such name in the module's namespace), else None."""
    if isinstance(obj, CODE_TYPES):
        return None
    for module in sorted(_allowed_imported()):
        namespace = getattr(sys.modules.get(module), "__dict__", None)
        if type(namespace) is dict:
            for name, value in namespace.items():
                if value is obj and isinstance(name, str) and not name.startswith("__"):
                    return module, name
    return None


def _allowed_imported() -> set[str]:
    found = {m for m in registry.MODULES if m in sys.modules}
    if _PREFIXES:
        found.update(m for m in list(sys.modules) if any(m == p or m.startswith(p + ".") for p in _PREFIXES))
    return found


def global_value(module: str, name: str) -> Any:
    """The value of global ``name`` of ``module`` (imported only if allowed), looked up in its namespace."""
    import_allowed(module, f"snapshot names global {module}.{name}")
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    if type(namespace) is not dict or name not in namespace:
        raise IncompatibleCodeError(f"snapshot names global {module}.{name}, which the module no longer has")
    value = namespace[name]
    if isinstance(value, CODE_TYPES):
        raise NotAllowedError(f"snapshot names global {module}.{name}, a {type(value).__name__}: code travels only "
                              "by the names the allow rules resolve")
    return value


def _name_of(obj: Any) -> tuple[Any, Any]:
    """``(__module__, __qualname__)`` of a class or function, read without running a metaclass's code."""
    if isinstance(obj, type):
        return type.__getattribute__(obj, "__module__"), type.__getattribute__(obj, "__qualname__")
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)


def safe_builtin(obj: Any) -> str | None:
    """The name of an allowed builtin function or type, else None."""
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and name in SAFE_BUILTINS and getattr(builtins, name, None) is obj:
        return name
    return None


def builtin(name: str) -> Any:
    """The allowed builtin called ``name``; NotAllowedError for any other name."""
    if name not in SAFE_BUILTINS:
        raise NotAllowedError(f"snapshot names builtin {name!r}, which restore does not allow")
    return getattr(builtins, name)
