"""The import hook: compiles the named modules and packages as they are imported."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Iterable, Sequence

from .linemap import compile_mapped


class _Loader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, hook: "ImportHook") -> None:
        super().__init__(fullname, path)
        self.hook = hook

    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        from .generate import compile_module
        source = importlib.util.decode_source(data)
        compiled = compile_module(source, path, all_generators=self.hook.all_generators)
        if compiled is source:
            return compile(source, path, "exec", dont_inherit=True, optimize=_optimize)
        return compile_mapped(compiled, path)

    def exec_module(self, module: types.ModuleType) -> None:
        if self.hook.chaos:
            from runtime import _support
            _support.CHAOS_MODULES.add(module.__name__)
        super().exec_module(module)

    def get_code(self, fullname):  # type: ignore[override]
        # Never use or write the normal bytecode cache: it would hold the uncompiled module.
        source = self.get_data(self.path)
        return self.source_to_code(source, self.path)


class ImportHook(importlib.abc.MetaPathFinder):
    """Finds modules named in ``modules`` (or inside those packages) and compiles them on import."""

    def __init__(self, modules: Sequence[str], all_generators: bool, chaos: bool) -> None:
        self.modules = tuple(modules)
        self.all_generators = all_generators
        self.chaos = chaos

    def _wanted(self, fullname: str) -> bool:
        return any(fullname == m or fullname.startswith(m + ".") for m in self.modules)

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if not self._wanted(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if isinstance(spec.loader, importlib.machinery.SourceFileLoader) and spec.origin:
                spec.loader = _Loader(fullname, spec.origin, self)
            return spec
        return None

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def __enter__(self) -> "ImportHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def install_import_hook(modules: Iterable[str] | str, *, all_generators: bool = False,
                        chaos: bool = False) -> ImportHook:
    """Compile ``modules`` (names of modules or packages) when they are imported from now on."""
    names = [modules] if isinstance(modules, str) else list(modules)
    hook = ImportHook(names, all_generators, chaos)
    sys.meta_path.insert(0, hook)
    return hook
