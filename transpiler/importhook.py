"""The import hook: compiles the named modules and packages as they are imported, with a bytecode cache."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Iterable, Sequence

from . import artifact, cache
from .linemap import compile_mapped


class DurableImportWarning(UserWarning):
    """A module the import hook should compile was imported before the hook was installed."""


class _Loader(importlib.machinery.SourceFileLoader):
    """Loads a module compiled for durability; files already compiled by ``durable compile`` or the
    build step load as plain source (with the ordinary bytecode cache)."""

    def __init__(self, fullname: str, path: str, hook: "ImportHook") -> None:
        super().__init__(fullname, path)
        self.hook = hook

    def exec_module(self, module: types.ModuleType) -> None:
        if self.hook.chaos:
            from runtime import _support
            _support.CHAOS_MODULES.add(module.__name__)
        super().exec_module(module)

    def get_code(self, fullname: str) -> types.CodeType:  # type: ignore[override]
        options = artifact.options_tag(self.hook.all_generators)
        compiler = cache.compiler_id(options)
        where = cache.cache_path(self.path, options)  # memoized
        stamp = cache.stamp_of(self.path)
        entry = cache.read(where) if where else None
        if entry is not None and entry.compiler == compiler and entry.stamp == stamp:
            code = entry.code()  # the source is as it was when the entry was written
            if code is not None:
                return code
        data = self.get_data(self.path)
        if artifact.is_compiled(data):
            return super().get_code(fullname)
        digest = cache.source_digest(data)
        code = entry.code() if entry is not None and entry.compiler == compiler and entry.digest == digest else None
        if code is None:
            code = self._compile(data)
        if where:  # a new entry, or the same one with the source's new stamp
            cache.store(where, compiler, digest, stamp, code)
        return code

    def _compile(self, data: bytes) -> types.CodeType:
        from .generate import compile_module_mapped  # libcst loads only on a cache miss

        source = importlib.util.decode_source(data)
        compiled = compile_module_mapped(source, self.path, all_generators=self.hook.all_generators)
        if not compiled.changed:
            return compile(source, self.path, "exec", dont_inherit=True)
        return compile_mapped(compiled.code, self.path, compiled.lines)


_NEVER_SOURCE = (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)
"""Finders that never find a source file: skipped for speed (frozen modules are the standard library's)."""


_ALLOWED_BY_HOOKS: dict[str, int] = {}
"""Module names the installed hooks added to ``runtime.allow_modules``, with how many hooks hold each."""


def _allowed_elsewhere(name: str) -> bool:
    """True if ``name`` is already allowed by a prefix some hook did not add (the user's own
    ``allow_modules``): the hook then leaves it alone, and its uninstall does not take it back."""
    from runtime.values.allow import module_allowed

    # a probe submodule: allowed exactly when ``name`` or a parent is an allowed prefix (no registry entry)
    if not module_allowed(f"{name}._dg_probe_"):
        return False
    return not any(name == p or name.startswith(p + ".") for p in _ALLOWED_BY_HOOKS)


def _allow(names: Sequence[str]) -> list[str]:
    """Allow ``names`` for restore (modules named for compiling are durable code: restore may import
    them in a process that has not yet); returns the names this hook holds."""
    import runtime

    held = []
    for name in names:
        if name in _ALLOWED_BY_HOOKS:
            _ALLOWED_BY_HOOKS[name] += 1
        elif _allowed_elsewhere(name):
            continue
        else:
            runtime.allow_modules(name)
            _ALLOWED_BY_HOOKS[name] = 1
        held.append(name)
    return held


def _release(names: Sequence[str]) -> None:
    """Undo ``_allow``: a name goes back to not allowed when no installed hook holds it."""
    import runtime

    for name in names:
        _ALLOWED_BY_HOOKS[name] -= 1
        if not _ALLOWED_BY_HOOKS[name]:
            del _ALLOWED_BY_HOOKS[name]
            runtime.disallow_modules(name)


class ImportHook:
    """Finds modules named in ``modules`` (or inside those packages) and compiles them on import."""

    def __init__(self, modules: Sequence[str], all_generators: bool, chaos: bool) -> None:
        self.modules = tuple(modules)
        self.all_generators = all_generators
        self.chaos = chaos
        self._allowed: list[str] = []

    def wants(self, fullname: str) -> bool:
        return any(fullname == m or fullname.startswith(m + ".") for m in self.modules)

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if not self.wants(fullname) or fullname in sys.builtin_module_names:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, ImportHook) or finder in _NEVER_SOURCE \
                    or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if type(spec.loader) is importlib.machinery.SourceFileLoader and spec.origin:
                spec.loader = _Loader(fullname, spec.origin, self)
            return spec
        return None

    def uninstall(self) -> None:
        """Stop compiling the named modules, and take back what installing allowed (only that)."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        held, self._allowed = self._allowed, []
        _release(held)

    def __enter__(self) -> "ImportHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def _warn_already_imported(hook: ImportHook, caller: str | None) -> None:
    for name in sorted(n for n in list(sys.modules) if hook.wants(n)):
        if name == caller or sys.modules.get(name) is None:
            continue  # a package installing the hook for itself from its __init__
        loader = getattr(getattr(sys.modules[name], "__spec__", None), "loader", None)
        if isinstance(loader, _Loader) and (loader.hook.all_generators or not hook.all_generators):
            continue  # compiled already by another hook, as this one would
        import warnings

        warnings.warn(
            f"module {name!r} was imported before the durable import hook was installed, so its generators "
            "are not durable; install the hook before importing it (for example at the top of your entry "
            "point or in the package's __init__)", DurableImportWarning, stacklevel=3)


def install_import_hook(modules: Iterable[str] | str, *, all_generators: bool = False,
                        chaos: bool = False) -> ImportHook:
    """Compile ``modules`` (names of modules or packages) when they are imported from now on.

    Compiled code is cached in ``__pycache__``; a package may call ``install_import_hook(__name__)``
    from its ``__init__`` to compile its own submodules. The named modules hold durable code, so they are
    allowed for restore as with ``runtime.allow_modules`` (restore may import them; ``uninstall()`` takes
    back what this call allowed). Warns (``DurableImportWarning``) about a named module that was already
    imported."""
    names = [modules] if isinstance(modules, str) else list(modules)
    hook = ImportHook(names, all_generators, chaos)
    cache.compiler_id(artifact.options_tag(all_generators))  # worked out once, here rather than in an import
    caller = sys._getframe(1).f_globals.get("__name__")
    _warn_already_imported(hook, caller)
    hook._allowed = _allow(names)
    sys.meta_path.insert(0, hook)
    return hook
