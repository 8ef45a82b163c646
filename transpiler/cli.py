"""The ``durable`` command line: compile modules ahead of time, check them, and inspect snapshots."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

from . import __version__, batch

if TYPE_CHECKING:
    from .config import Config

ERROR_LINE = re.compile(r"^.+?:\d+:\d+: error: ", re.M)

EXIT_OK, EXIT_WORK, EXIT_USAGE, EXIT_USER_CODE, EXIT_INTERNAL = 0, 1, 2, 3, 123
PROGRESS_FROM = 10
"""Show a progress bar (on a terminal) when this many files or more are compiled."""
REPORT = "durable: internal error while compiling {path}: {error}\nplease report this at the project's issue tracker with the file that triggered it"


def _need_compiler() -> None:
    import importlib.util

    if importlib.util.find_spec("libcst") is None:
        raise click.UsageError("the compiler is not installed: pip install 'durable-generators[compiler]'")


def _config(config_file: str | None) -> Config:
    from .config import Config, ConfigError, find_pyproject, load

    _need_compiler()

    try:
        pyproject = Path(config_file) if config_file else find_pyproject(Path.cwd())
        if pyproject is None:
            return Config(root=Path.cwd().resolve(), source_roots=(Path.cwd().resolve(),))
        return load(pyproject)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _sources(paths: tuple[str, ...], config: Config) -> list[batch.Source]:
    from .config import ConfigError

    try:
        if paths:
            return list(batch.sources_of(paths))
        if not config.modules:
            raise click.UsageError("no PATHS given and no modules in [tool.durable] of pyproject.toml")
        return list(batch.sources_of_modules(config.module_paths()))
    except (batch.UsageProblem, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None


def _progress(items: list[batch.Source], label: str, enabled: bool) -> Iterator[batch.Source]:
    if not enabled or len(items) < PROGRESS_FROM or not sys.stderr.isatty():
        yield from items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


def _run_all(sources: list[batch.Source], mode: batch.Mode, outdir: Path | None, *, all_generators: bool,
             force: bool, label: str, progress: bool = True) -> tuple[list[batch.Result], bool]:
    """Process every source; returns the results and whether an internal error happened."""
    results: list[batch.Result] = []
    for source in _progress(sources, label, enabled=progress):
        try:
            results.append(batch.process(source, mode, outdir, all_generators=all_generators, force=force))
        except Exception as exc:  # a bug in the compiler: say so, stop, exit 123 after the report
            click.echo(REPORT.format(path=source.path, error=f"{type(exc).__name__}: {exc}"), err=True)
            return results, True
    return results, False


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.group()
@click.version_option(version=__version__, prog_name="durable")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Durable generators: compile generator functions into resumable state machines, inspect their
    snapshots, and run durable programs on a store (run, worker, ls, show, signal, cancel, result), and
    deploy changes to them (plan, relabel).

    Snapshots and store rows are signed and verified with the key in DURABLE_SIGNING_KEY (older keys
    that still verify: DURABLE_ACCEPTED_KEYS, comma-separated) by every command."""
    if ctx.invoked_subcommand not in (None, "compile", "check"):
        from runtime.values import settings

        if settings.current.problem is not None:
            click.echo(f"durable: error: {settings.current.problem}", err=True)
            sys.exit(EXIT_USAGE)


@main.command("compile", short_help="Compile files and packages ahead of time.")
@click.argument("paths", nargs=-1)
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Write compiled files under this directory.")
@click.option("--in-place", is_flag=True, help="Overwrite the source files with their compiled form.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the compiled code to standard output.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when an output is missing or stale.")
@click.option("--diff", "show_diff", is_flag=True, help="Write nothing; print a unified diff of what would change.")
@click.option("--all-generators", is_flag=True, default=None,
              help="Compile every generator function, not only @durable ones.")
@click.option("--force", is_flag=True, help="Compile even files whose output is up to date.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="The pyproject.toml to read [tool.durable] from (default: the nearest one).")
def compile_command(paths: tuple[str, ...], outdir: str | None, in_place: bool, to_stdout: bool, check: bool,
                    show_diff: bool, all_generators: bool | None, force: bool, config_file: str | None) -> None:
    """Compile Python files and packages (PATHS, or the modules of [tool.durable]) so their durable
    generators can be snapshotted.

    Where the output goes: -o OUTDIR, --in-place, --stdout, or output-dir in [tool.durable]; a single
    FILE with none of these is printed to standard output. Each output starts with a header naming the
    compiler version, the options and the source's SHA-256; outputs whose header matches are up to date
    and are not compiled again."""
    config = _config(config_file)
    chosen = sum([outdir is not None, in_place, to_stdout])
    if chosen > 1:
        raise click.UsageError("choose one of -o OUTDIR, --in-place or --stdout")
    if chosen == 0:
        if config.output_dir is not None:
            outdir = str(config.output_dir)
        elif check or show_diff:
            raise click.UsageError("--check and --diff compare with the compiled files on disk: say where they are "
                                   "with -o OUTDIR or --in-place (or set output-dir in [tool.durable])")
        elif len(paths) == 1 and not Path(paths[0]).is_dir():
            to_stdout = True  # one file, nowhere to write it: print it, as formatters do
        else:
            what = (f"{paths[0]} is a package" if len(paths) == 1 else f"{len(paths)} paths" if paths
                    else "the modules of [tool.durable]")
            raise click.UsageError(f"{what}: say where the compiled files go with -o OUTDIR or --in-place (or "
                                   "set output-dir in [tool.durable]); --stdout prints them one after another")
    if to_stdout and (check or show_diff):
        raise click.UsageError("--check and --diff compare with files on disk: use them with -o or --in-place")
    mode = batch.Mode.STDOUT if to_stdout else batch.Mode.IN_PLACE if in_place else batch.Mode.OUTDIR
    generators = config.all_generators if all_generators is None else all_generators
    sources = _sources(paths, config)
    results, internal = _run_all(sources, mode, Path(outdir) if outdir else None, all_generators=generators,
                                 force=force or to_stdout, label="compiling", progress=not to_stdout)
    changed = [r for r in results if r.status is batch.Status.CHANGED]
    failed = [r for r in results if r.status is batch.Status.FAILED]
    for result in failed:
        click.echo(result.text, err=True)
    for result in changed:
        if to_stdout:
            click.echo(result.text, nl=False)
        elif show_diff:
            click.echo(result.diff(), nl=False)
        elif not check:
            batch.write(result)
    current = len(results) - len(changed) - len(failed)
    if not results and not internal:
        click.echo("no files to compile", err=True)
    elif check or show_diff:
        verb = "would compile"
        for result in changed:
            click.echo(f"{verb} {result.source.path} -> {result.target}", err=True)
        click.echo(f"{_plural(len(changed), 'file')} {verb}, {current} up to date, {len(failed)} with errors", err=True)
    else:
        click.echo(f"compiled {_plural(len(changed), 'file')}, {current} up to date, {len(failed)} with errors",
                   err=True)
    if internal:
        sys.exit(EXIT_INTERNAL)
    if failed:
        sys.exit(EXIT_USER_CODE)
    sys.exit(EXIT_WORK if check and changed else EXIT_OK)


@main.command("check", short_help="Report problems in the code without writing anything.")
@click.argument("paths", nargs=-1)
@click.option("--all-generators", is_flag=True, default=None,
              help="Check every generator function, not only @durable ones.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="The pyproject.toml to read [tool.durable] from (default: the nearest one).")
def check_command(paths: tuple[str, ...], all_generators: bool | None, config_file: str | None) -> None:
    """Report problems in PATHS (or the modules of [tool.durable]) without writing anything: each as
    path:line:col: error: CODE message, then a summary. Exit 3 when there are problems."""
    config = _config(config_file)
    generators = config.all_generators if all_generators is None else all_generators
    sources = _sources(paths, config)
    # STDOUT mode: compile every file, compare with no output on disk
    results, internal = _run_all(sources, batch.Mode.STDOUT, None, all_generators=generators, force=True,
                                 label="checking")
    failed = [r for r in results if r.status is batch.Status.FAILED]
    problems = sum(len(ERROR_LINE.findall(r.text)) for r in failed)
    for result in failed:
        click.echo(result.text, err=True)
    if not results and not internal:
        click.echo("no files to check", err=True)
    else:
        click.echo(f"checked {_plural(len(results), 'file')}: {_plural(problems, 'problem')} in "
                   f"{_plural(len(failed), 'file')}", err=True)
    if internal:
        sys.exit(EXIT_INTERNAL)
    sys.exit(EXIT_USER_CODE if failed else EXIT_OK)


@main.command("inspect", short_help="Describe a snapshot file without running it.")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect_command(file: str, as_json: bool) -> None:
    """Describe the snapshot in FILE ('-' for standard input) without importing any module it names.

    The signature is verified when DURABLE_SIGNING_KEY (or DURABLE_ACCEPTED_KEYS) holds the key, as
    for every command.
    """
    import runtime
    from runtime.errors import SnapshotError

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        click.echo(f"{file}: error: cannot read the file: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        info = runtime.inspect_snapshot(data)
    except SnapshotError as exc:
        click.echo(f"{file}: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_USER_CODE)
    click.echo(json.dumps(info.to_dict(), indent=2) if as_json else str(info))


from runtime.programs.cli import commands as _program_commands  # noqa: E402  (run, worker, ls, show, ...)

for _name, _command in _program_commands.commands.items():
    main.add_command(_command, _name)


def run() -> None:  # pragma: no cover - exercised through the console script
    try:
        main(prog_name="durable", standalone_mode=True)
    except Exception as exc:  # an internal error: never a bare traceback for the user
        click.echo(f"durable: internal error: {type(exc).__name__}: {exc}\n"
                   "please report this with the file that triggered it", err=True)
        sys.exit(EXIT_INTERNAL)
