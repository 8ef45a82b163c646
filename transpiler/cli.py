"""The ``durable`` command line: compile modules ahead of time, check them, and inspect snapshots."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

import click

from . import __version__
from .diagnostics import CompileError
from .generate import compile_module

EXIT_OK, EXIT_USAGE, EXIT_USER_CODE, EXIT_INTERNAL = 0, 2, 3, 123


def _sources(paths: tuple[str, ...]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to the argument it came from) for every .py file named or inside a package."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(path.rglob("*.py")):
                yield file, Path(path.name) / file.relative_to(path)
        elif path.is_file():
            yield path, Path(path.name)
        else:
            raise click.UsageError(f"no such file or directory: {raw}")


def _compile(file: Path, all_generators: bool) -> str | None:
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"{file}:1:1: error: DG000 cannot read the file: {exc}", err=True)
        return None
    try:
        return compile_module(source, str(file), all_generators=all_generators)
    except CompileError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(diagnostic.text(), err=True)
        return None


@click.group()
@click.version_option(version=__version__, prog_name="durable")
def main() -> None:
    """Durable generators: compile generator functions into resumable state machines."""


@main.command("compile")
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Write compiled files under this directory.")
@click.option("--in-place", is_flag=True, help="Overwrite the source files with their compiled form.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the compiled code to standard output.")
@click.option("--all-generators", is_flag=True, help="Compile every generator function, not only @durable ones.")
def compile_command(paths: tuple[str, ...], outdir: str | None, in_place: bool, to_stdout: bool,
                    all_generators: bool) -> None:
    """Compile Python files and packages (PATHS) so their durable generators can be snapshotted."""
    if sum([outdir is not None, in_place, to_stdout]) != 1:
        raise click.UsageError("choose exactly one of -o OUTDIR, --in-place or --stdout")
    failed = 0
    count = 0
    for file, relative in _sources(paths):
        compiled = _compile(file, all_generators)
        if compiled is None:
            failed += 1
            continue
        count += 1
        if to_stdout:
            click.echo(compiled, nl=False)
        elif in_place:
            file.write_text(compiled, encoding="utf-8")
        else:
            target = Path(outdir) / relative  # type: ignore[arg-type]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(compiled, encoding="utf-8")
    click.echo(f"compiled {count} file(s), {failed} with errors", err=True)
    sys.exit(EXIT_USER_CODE if failed else EXIT_OK)


@main.command("check")
@click.argument("paths", nargs=-1, required=True)
@click.option("--all-generators", is_flag=True, help="Check every generator function, not only @durable ones.")
def check_command(paths: tuple[str, ...], all_generators: bool) -> None:
    """Report problems in PATHS without writing anything."""
    failed = sum(_compile(file, all_generators) is None for file, _ in _sources(paths))
    click.echo(f"checked files: {failed} with errors", err=True)
    sys.exit(EXIT_USER_CODE if failed else EXIT_OK)


@main.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect_command(file: str, as_json: bool) -> None:
    """Describe the snapshot in FILE ('-' for standard input) without importing any module it names.

    The signature is verified when the environment variable DURABLE_SIGNING_KEY holds the key.
    """
    import runtime
    from runtime.errors import SnapshotError

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        click.echo(f"{file}: error: cannot read the file: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USER_CODE)
    key = os.environ.get("DURABLE_SIGNING_KEY")
    previous = runtime.configure(signing_key=key) if key else None
    try:
        info = runtime.inspect_snapshot(data)
    except SnapshotError as exc:
        click.echo(f"{file}: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_USER_CODE)
    except ValueError as exc:  # a signing key that is too short
        click.echo(f"durable inspect: error: DURABLE_SIGNING_KEY: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        if previous is not None:
            runtime.restore_settings(previous)
    click.echo(json.dumps(info.to_dict(), indent=2) if as_json else str(info))


def run() -> None:  # pragma: no cover - exercised through the console script
    try:
        main(standalone_mode=True)
    except Exception as exc:  # an internal error: never a bare traceback for the user
        click.echo(f"durable: internal error: {type(exc).__name__}: {exc}\n"
                   "please report this with the file that triggered it", err=True)
        sys.exit(EXIT_INTERNAL)
