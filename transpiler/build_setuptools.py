"""Setuptools ``build_py`` command that ships the modules named by ``[tool.durable]`` compiled."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from setuptools.command.build_py import build_py as _build_py
from setuptools.errors import BaseError

from .batch import BuildError, compile_for_build
from .config import ConfigError, load


class DurableBuildError(BaseError):  # type: ignore[misc, valid-type]
    """Setuptools turns this into ``error: <message>`` and exit status 1, without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"durable-generators: cannot build the wheel:\n{message}")


class build_py(_build_py):
    """``build_py`` that writes the compiled form of each configured module into the build tree.
    Editable installs are left to the import hook."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self._compiled: dict[Path, str] = {}
        self._written: set[Path] = set()

    def run(self) -> None:
        if not self.editable_mode:
            self._compiled = self._compile()
        super().run()
        missing = sorted(set(self._compiled) - self._written)
        if missing:
            raise DurableBuildError("\n".join(f"{path}: configured in [tool.durable] but not part of the "
                                              "wheel (setuptools did not build it)" for path in missing))

    def build_module(self, module: str, module_file: str, package: Any) -> tuple[str, bool]:
        built = super().build_module(module, module_file, package)
        source = Path(module_file).resolve()
        text = self._compiled.get(source)
        if text is not None:
            _replace(Path(built[0]), text)
            self._written.add(source)
        return built

    def _compile(self) -> dict[Path, str]:
        try:
            config = load(Path(os.path.abspath("pyproject.toml")))
            return {source.resolve(): text for source, text in compile_for_build(config)}
        except (ConfigError, BuildError) as exc:
            raise DurableBuildError(str(exc)) from None


def _replace(target: Path, text: str) -> None:
    """Write ``text`` as a new file: the built file may be a link to the source, which must stay as it is."""
    target.unlink(missing_ok=True)
    target.write_text(text, encoding="utf-8")
