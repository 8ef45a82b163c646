"""Project configuration: the ``[tool.durable]`` table of ``pyproject.toml``."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = ("modules", "all-generators", "output-dir", "source-roots")


class ConfigError(Exception):
    """``[tool.durable]`` is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Config:
    """What ``[tool.durable]`` says, with paths resolved against the project root."""

    root: Path
    modules: tuple[str, ...] = ()
    all_generators: bool = False
    output_dir: Path | None = None
    source_roots: tuple[Path, ...] = field(default_factory=tuple)

    def module_paths(self) -> list[tuple[Path, Path]]:
        """(file or package directory, its path relative to a source root) for every configured
        module. Raises ConfigError for a module that cannot be found."""
        found = []
        for name in self.modules:
            relative = Path(*name.split("."))
            for base in self.source_roots:
                for candidate in (base / relative, base / relative.with_suffix(".py")):
                    if candidate.is_dir() or candidate.is_file():
                        found.append((candidate, candidate.relative_to(base)))
                        break
                else:
                    continue
                break
            else:
                roots = ", ".join(str(r) for r in self.source_roots)
                raise ConfigError(f"[tool.durable] modules: cannot find module {name!r} under {roots}")
        return found


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` in ``start`` or one of its parents."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _expect(value: Any, kind: type | tuple[type, ...], key: str, path: Path, what: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: [tool.durable] {key} must be {what}, not {type(value).__name__}")
    return value


def load(pyproject: Path) -> Config:
    """Read ``[tool.durable]`` from ``pyproject`` (an absent table gives the defaults)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only; tomli comes with the `compiler` extra
        import tomli as tomllib
    try:
        with open(pyproject, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read: {exc}") from None
    table = data.get("tool", {}).get("durable", {})
    _expect(table, dict, "", pyproject, "a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{pyproject}: [tool.durable] unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    root = pyproject.parent.resolve()
    modules = _expect(table.get("modules", []), list, "modules", pyproject, "a list of module names")
    for name in modules:
        _expect(name, str, "modules", pyproject, "a list of module names")
    all_generators = _expect(table.get("all-generators", False), bool, "all-generators", pyproject, "true or false")
    output = table.get("output-dir")
    if output is not None:
        _expect(output, str, "output-dir", pyproject, "a path")
    roots = _expect(table.get("source-roots", [".", "src"]), list, "source-roots", pyproject, "a list of paths")
    for item in roots:
        _expect(item, str, "source-roots", pyproject, "a list of paths")
    return Config(root=root, modules=tuple(modules), all_generators=all_generators,
                  output_dir=root / output if output is not None else None,
                  source_roots=tuple(root / r for r in roots))
