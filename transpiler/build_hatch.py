"""Hatchling build hook ``durable``: ships the configured modules compiled in the wheel."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.plugin import hookimpl

from .batch import BuildError, compile_for_build
from .config import Config, ConfigError, load

HOOK_TABLE = "[tool.hatch.build.targets.wheel.hooks.durable]"


class DurableBuildError(SystemExit):
    """Stops the build with the message alone: build frontends print a SystemExit's message and exit
    with status 1, where any other exception would bury the diagnostics under a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"durable-generators: cannot build the wheel:\n{message}")


class DurableBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compiles the modules named by ``[tool.durable]`` (or this hook's own ``modules`` and
    ``all-generators`` options) and puts the compiled files in the wheel in place of the sources."""

    PLUGIN_NAME = "durable"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staging: tempfile.TemporaryDirectory[str] | None = None

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        # The sdist ships the sources; an editable install runs them through the import hook.
        if self.target_name != "wheel" or version == "editable":
            return
        try:
            config = self._config()
            compiled = compile_for_build(config)
        except (ConfigError, BuildError) as exc:
            raise DurableBuildError(str(exc)) from None
        staging = self._make_staging()
        for source, text in compiled:
            relative = self._project_relative(source, config)
            build_data["force_include"][str(_write(staging / relative, text))] = relative.as_posix()
        self.app.display_info(f"durable: compiled {len(compiled)} file(s) for the wheel")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._staging is None:
            return
        self._staging.cleanup()
        self._staging = None
        _check_single_copies(artifact_path)

    def _make_staging(self) -> Path:
        self._staging = tempfile.TemporaryDirectory(prefix="durable-build-")
        staging = Path(self._staging.name).resolve()
        # Hatchling leaves a source out of the wheel for a force-included file only when that file
        # lies outside the project; inside it, the wheel would get both.
        if staging.is_relative_to(Path(self.root).resolve()):
            raise DurableBuildError(f"the temporary directory {staging} is inside the project; "
                                    "set TMPDIR to a directory outside it")
        return staging

    def _config(self) -> Config:
        config = load(Path(self.root) / "pyproject.toml")
        options = self.config
        if "modules" in options:
            modules = options["modules"]
            if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
                raise ConfigError(f"{HOOK_TABLE} modules must be a list of module names")
            config = dataclasses.replace(config, modules=tuple(modules))
        if "all-generators" in options:
            if not isinstance(options["all-generators"], bool):
                raise ConfigError(f"{HOOK_TABLE} all-generators must be true or false")
            config = dataclasses.replace(config, all_generators=options["all-generators"])
        return config

    def _project_relative(self, source: Path, config: Config) -> Path:
        """The force-include target: the source's own path in the project, so hatchling maps the
        compiled file like the source (``packages``, ``sources``) and leaves the source out."""
        try:
            return source.relative_to(config.root)
        except ValueError:
            raise DurableBuildError(f"{source}: a configured module lies outside the project "
                                    f"{config.root}; hatchling cannot ship it") from None


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _check_single_copies(wheel: str) -> None:
    """Hatchling before 1.19 put a force-included file into the wheel beside the file it replaces."""
    with zipfile.ZipFile(wheel) as archive:
        twice = sorted(name for name, n in Counter(archive.namelist()).items() if n > 1)
    if twice:
        os.remove(wheel)
        raise DurableBuildError(f"{wheel}: these files are in the wheel twice (source and compiled): "
                                f"{', '.join(twice)}; build with hatchling>=1.19")


@hookimpl
def hatch_register_build_hook() -> type[DurableBuildHook]:
    return DurableBuildHook
