"""A deploy in the middle of a simulated run: the program's module is swapped for a new version of its source,
as a worker started after the deploy would load it, and put back when the simulation ends."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import migrations, registry
from ..programs.store.base import Execution
from .errors import SimulationError


@dataclass
class Upgrade:
    """Deploy ``source`` (the new version of the program's module: a path to its file, or its text) ``at`` a
    point of the run: after the commit of request number ``at`` (an int), the first time the run is
    suspended at a point whose key or label is ``at`` or whose label contains it (a str), or when ``at(execution)``
    is true. The worker running it dies there and a new one, with the new code (and the migrations of the
    modules named in ``migrations``), resumes the run — upgraded, migrated, or blocked as a real deploy would."""

    source: str | os.PathLike[str]
    at: int | str | Callable[[Execution], bool]
    migrations: Sequence[str] = ()
    applied: bool = field(default=False, init=False)
    _saved: Any = field(default=None, init=False, repr=False)

    def due(self, ex: Execution, requests: int) -> bool:
        if self.applied:
            return False
        if callable(self.at):
            return bool(self.at(ex))
        if isinstance(self.at, int) and not isinstance(self.at, bool):
            return requests >= self.at and ex.snapshot is not None
        frames = ex.frames or []
        innermost = frames[-1] if frames and isinstance(frames[-1], list) and len(frames[-1]) > 4 else None
        if innermost is None or not isinstance(self.at, str):
            return False
        key, label = str(innermost[3]), str(innermost[4])
        return self.at in (key, label) or self.at in label

    def apply(self, module_name: str) -> None:
        """Load the new source as ``module_name`` (compiled as the import hook would)."""
        text = self._text()
        old = sys.modules.get(module_name)
        self._saved = (module_name, old, {i: m for i, m in registry.BY_NAME.items() if m.module == module_name},
                       {f: list(ms) for f, ms in migrations.REGISTERED.items()})
        folder = tempfile.mkdtemp(prefix="durable-upgrade-")
        path = os.path.join(folder, module_name.rpartition(".")[2] + ".py")
        Path(path).write_text(text, encoding="utf-8")
        module = _load(module_name, path)
        self.applied = True
        from ..programs.runner import import_migrations
        import_migrations(list(self.migrations))
        _set_parent_attribute(module_name, module)

    def undo(self) -> None:
        """Put the module as it was before the upgrade back (and its functions and migrations)."""
        if self._saved is None:
            return
        module_name, old, metas, moves = self._saved
        self._saved = None
        self.applied = False
        if old is not None:
            sys.modules[module_name] = old
            _set_parent_attribute(module_name, old)
        else:
            sys.modules.pop(module_name, None)
        for ident in [i for i, m in registry.BY_NAME.items() if m.module == module_name]:
            registry.BY_NAME.pop(ident)
        registry.BY_NAME.update(metas)
        registry.DECLARED[0] += 1
        migrations.REGISTERED.clear()
        migrations.REGISTERED.update(moves)
        migrations.GENERATION[0] += 1

    def _text(self) -> str:
        source = self.source
        if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                               and source.endswith(".py")):
            try:
                return Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise SimulationError(f"upgrade: cannot read the new source {os.fspath(source)!r}: {exc}") from None
        if not isinstance(source, str):
            raise SimulationError(f"upgrade: the new source must be a path or the module's text, not {source!r}")
        return source


def _load(module_name: str, path: str) -> types.ModuleType:
    try:
        from transpiler.importhook import ImportHook, _Loader
    except ImportError:  # runtime-only: the new source must be compiled already
        loader: importlib.machinery.SourceFileLoader = importlib.machinery.SourceFileLoader(module_name, path)
    else:
        loader = _Loader(module_name, path, ImportHook([module_name], False, False))
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except Exception as exc:
        raise SimulationError(f"upgrade: the new version of {module_name} does not load: {type(exc).__name__}: "
                              f"{exc}") from exc
    return module


def _set_parent_attribute(module_name: str, module: types.ModuleType) -> None:
    parent, _, leaf = module_name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], leaf, module)
