"""The file work behind ``durable compile`` and ``durable check``: sources, targets, staleness, results."""
from __future__ import annotations

import difflib
import enum
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from . import artifact
from .config import Config, ConfigError
from .diagnostics import CompileError, UnreadableFile


class Mode(enum.Enum):
    OUTDIR = "outdir"
    IN_PLACE = "in-place"
    STDOUT = "stdout"


@dataclass(frozen=True)
class Source:
    path: Path
    relative: Path
    """Where the compiled file goes under an output directory."""


class Status(enum.Enum):
    CURRENT = "up to date"
    CHANGED = "compiled"
    FAILED = "failed"


@dataclass
class Result:
    source: Source
    status: Status
    text: str = ""
    """The compiled file (CHANGED), or the diagnostics (FAILED)."""
    target: Path | None = None
    previous: str | None = None
    """What the target held before, for ``--diff`` (None: it did not exist)."""

    def diff(self) -> str:
        old = self.previous or ""
        before = str(self.target) if self.previous is not None else "/dev/null"
        lines = difflib.unified_diff(old.splitlines(keepends=True), self.text.splitlines(keepends=True),
                                     fromfile=before, tofile=str(self.target or self.source.path))
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


class UsageProblem(Exception):
    """A path that does not exist, or a module the configuration names that cannot be found."""


def sources_of(paths: Iterable[str]) -> Iterator[Source]:
    """Every .py file named, or inside a package directory named (outputs keep the package path)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(path.rglob("*.py")):
                if "__pycache__" not in file.parts:
                    yield Source(file, Path(path.resolve().name) / file.relative_to(path))
        elif path.is_file():
            yield Source(path, Path(path.name))
        else:
            raise UsageProblem(f"no such file or directory: {raw}")


def sources_of_modules(found: list[tuple[Path, Path]]) -> Iterator[Source]:
    """Sources for ``Config.module_paths()``: outputs keep the module's path under its source root."""
    for path, relative in found:
        if path.is_dir():
            for file in sorted(path.rglob("*.py")):
                if "__pycache__" not in file.parts:
                    yield Source(file, relative / file.relative_to(path))
        else:
            yield Source(path, relative)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def process(source: Source, mode: Mode, outdir: Path | None, *, all_generators: bool, force: bool) -> Result:
    """Work out what ``source`` compiles to and whether its target is already up to date. Writes
    nothing. Raises nothing for problems in the user's file: they come back as FAILED."""
    data, problem = _read(source.path, str(source.path))
    if data is None:
        return Result(source, Status.FAILED, problem or "")
    options = artifact.options_tag(all_generators)
    target: Path | None = None
    previous: str | None = None
    if mode is Mode.IN_PLACE:
        target = source.path
        if artifact.is_compiled(data):
            return Result(source, Status.CURRENT, target=target)
    elif mode is Mode.OUTDIR:
        assert outdir is not None
        target = outdir / source.relative
        previous = _read_text(target) if target.exists() else None
        header = artifact.read_header(previous) if previous is not None else None
        if header is not None and not force and header.matches(artifact.source_digest(data), options):
            return Result(source, Status.CURRENT, target=target, previous=previous)
    text, problem = _compile(data, str(source.path), all_generators)
    if text is None:
        return Result(source, Status.FAILED, problem or "", target)
    if mode is Mode.IN_PLACE:
        original = importlib.util.decode_source(data)
        if artifact.strip_header(text) == original:
            return Result(source, Status.CURRENT, target=target)  # nothing durable in it: left alone
        previous = original
    if previous is not None and previous == text:
        return Result(source, Status.CURRENT, target=target, previous=previous)
    return Result(source, Status.CHANGED, text, target, previous)


def _read(path: Path, shown: str) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and the DG000 diagnostic saying why it cannot be read."""
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, UnreadableFile(shown, 1, 1, exc.strerror or str(exc)).text()


def _compile(data: bytes, shown: str, all_generators: bool) -> tuple[str | None, str | None]:
    """The compiled file's text, or None and the diagnostics (one per line) of the user's code."""
    try:
        return artifact.compile_file_text(data, shown, all_generators=all_generators), None
    except CompileError as exc:
        return None, "\n".join(d.text() for d in exc.diagnostics)
    except (UnicodeDecodeError, SyntaxError) as exc:  # undecodable bytes or a bad coding declaration
        return None, UnreadableFile(shown, 1, 1, f"cannot decode it: {exc}").text()


def write(result: Result) -> None:
    """Write a CHANGED result to its target, atomically."""
    assert result.target is not None and result.status is Status.CHANGED
    result.target.parent.mkdir(parents=True, exist_ok=True)
    temporary = result.target.with_name(result.target.name + ".durable-tmp")
    temporary.write_text(result.text, encoding="utf-8")
    temporary.replace(result.target)


class BuildError(Exception):
    """A build step cannot compile the configured modules; the message lists every problem, one per line."""


def compile_for_build(config: Config) -> list[tuple[Path, str]]:
    """(source file, compiled text) for every ``.py`` file of the modules ``config`` names (a package
    covers its submodules), leaving out files that are compiled already. Raises ``BuildError``."""
    if not config.modules:
        raise BuildError(f"{config.root / 'pyproject.toml'}: [tool.durable] modules is empty: nothing to compile")
    if importlib.util.find_spec("libcst") is None:
        raise BuildError("the compiler needs libcst: list 'durable-generators[compiler]' in the project's "
                         "[build-system] requires")
    try:
        # the same files `durable compile` takes from the configuration
        files = dict.fromkeys(source.path for source in sources_of_modules(config.module_paths()))
    except ConfigError as exc:
        raise BuildError(str(exc)) from None
    compiled: list[tuple[Path, str]] = []
    problems: list[str] = []
    for file in files:
        shown = os.path.relpath(file, config.root) if file.is_relative_to(config.root) else str(file)
        data, problem = _read(file, shown)
        if data is not None:
            if artifact.is_compiled(data):
                continue  # shipped as it is: never compiled twice
            text, problem = _compile(data, shown, config.all_generators)
            if text is not None:
                compiled.append((file, text))
                continue
        problems.append(problem or "")
    if problems:
        raise BuildError("\n".join(problems))
    return compiled
