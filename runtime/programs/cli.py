"""The ``durable`` commands for durable programs: run, worker, ls, show, plan, signal, cancel, result, prune."""
from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import os
import re
import signal as signals
import sys
import uuid
from typing import Any, Callable, NoReturn, TypeVar

import click

EXIT_OK, EXIT_USAGE, EXIT_RUNNING, EXIT_FAILED = 0, 2, 4, 5
"""Exit codes: 0 and 2 as the compiler's commands (``transpiler.cli``) use them; ``durable result`` (and
``durable run``): 4 while the execution is not finished, 5 when it failed or was cancelled."""

STORE_HELP = ("Store URL: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
              "postgresql://USER@HOST:PORT/DATABASE[?schema=NAME] (default: $DURABLE_STORE, else "
              "sqlite:///.durable/durable.db).")
NAME_HINT = "use the dotted module name (like python -m), run from the project's directory"
ARGS_HELP = ("a JSON list of positional arguments ('[\"ada@example.com\", 3]'), or an object with both kinds "
             "('{\"args\": [\"ada@example.com\"], \"kwargs\": {\"nudge_after\": 3}}')")
MAX_DIGITS = 1_000_000
"""Integers longer than this are shown as "<int with N digits>" instead of their digits."""

commands = click.Group("programs")
"""The program commands; ``durable`` (transpiler.cli) adds each of them as its own."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"durable: error: {message}", err=True)
    sys.exit(code)


def _store_errors(command: _F) -> _F:
    """A store that fails under a command (a damaged file, a lock held too long) is reported like
    bad input: a message and exit 2, never an internal error."""
    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from runtime.programs.store import StoreError

        try:
            return command(*args, **kwargs)
        except StoreError as exc:
            _fail(str(exc))

    return guarded  # type: ignore[return-value]


def _open(url: str | None, *, create: bool = False, readonly: bool = False) -> Any:
    """The store; only ``create`` makes a new one (run, worker), ``readonly`` changes nothing (ls,
    show, result)."""
    from runtime.programs.store import StoreError, open_store

    try:
        store = open_store(url, create=create, readonly=readonly)
    except StoreError as exc:
        _fail(str(exc))
    click.get_current_context().call_on_close(store.close)
    return store


class _NotPortable(ValueError):
    pass


def _json_argument(text: str, what: str) -> Any:
    """Parse a JSON argument (ARGS_JSON, a signal's payload), refusing what could not be stored and
    read back the same: NaN and infinities (not portable JSON), lone surrogates (not Unicode text),
    nesting too deep to read, integers longer than Python reads from text."""
    def constant(name: str) -> Any:
        raise _NotPortable(f"{what} contains {name}, which is not portable JSON (JSON has no NaN or infinities)")

    try:
        value = json.loads(text, parse_constant=constant)
    except _NotPortable as exc:
        _fail(str(exc))
    except json.JSONDecodeError as exc:
        _fail(f"{what} is not valid JSON: {exc}")
    except RecursionError:
        _fail(f"{what} is nested too deeply to read")
    except ValueError:  # an integer longer than int() reads from text
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        _fail(f"{what} has an integer of more than {limit} digits, more than Python reads from text: "
              "pass it as a string")
    try:
        stored = json.dumps(value, ensure_ascii=False, allow_nan=False)
        stored.encode("utf-8")
        same = json.loads(stored) == value
    except UnicodeEncodeError as exc:
        _fail(f"{what} contains a lone surrogate ({exc.object[exc.start:exc.end]!r}), which is not Unicode text "
              "and cannot be stored")
    except RecursionError:
        _fail(f"{what} is nested too deeply to read")
    except ValueError:  # 1e400 reads as inf
        _fail(f"{what} contains a number too large for a float (like 1e400), which reads as Infinity: "
              "not portable JSON")
    if not same:
        _fail(f"{what} does not read back the same once stored")
    return value


def _check_function(ref: str) -> str:
    """MODULE:FUNCTION, both dotted identifiers (exit 2 otherwise, before anything is imported); a path
    to a .py file under the current directory is turned into its dotted module name. Returns the name."""
    module, colon, qualname = ref.partition(":")
    if not colon or not module or not qualname:
        _fail(f"{ref!r}: name a function as MODULE:FUNCTION (for example flows:onboarding); {NAME_HINT}")
    if module.endswith(".py") and (os.path.isfile(module) or "/" in module or os.sep in module):
        module = _module_of_path(module)
    if not all(part.isidentifier() for part in module.split(".")):
        _fail(f"{module!r} is not a module name: {NAME_HINT} (for example pkg.flows:onboarding for "
              "pkg/flows.py)")
    if not all(part.isidentifier() for part in qualname.split(".")):
        _fail(f"{qualname!r} is not a function name: name a function as MODULE:FUNCTION (for example "
              f"flows:onboarding); {NAME_HINT}")
    return f"{module}:{qualname}"


def _module_of_path(path: str) -> str:
    """The dotted name of the module in ``path`` (a .py file under the current directory, as python -m
    would import it from here: ``pkg/flows.py`` is ``pkg.flows``); exit 2 for a file elsewhere."""
    here = os.path.realpath(os.getcwd())
    where = os.path.realpath(path)
    if not os.path.isfile(where):
        _fail(f"{path!r}: no such file ({NAME_HINT}, or the path of a .py file under it)")
    relative = os.path.relpath(where, here)
    if relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        _fail(f"{path!r} is outside the current directory, so it cannot be imported by name from here: "
              f"{NAME_HINT} (cd to the directory that holds the top package)")
    parts = relative[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        _fail(f"{path!r} is not a module python -m can import from here (its name is not a dotted name); "
              f"{NAME_HINT}")
    return ".".join(parts)


def _call_parts(stored: Any) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The positional and keyword arguments of a stored execution (None, None when the cell is damaged)."""
    from runtime.programs.store.base import call_of

    try:
        args, kwargs = call_of(stored)
        return args, {str(k): v for k, v in kwargs.items()}
    except Exception:  # a damaged or hand-edited cell: shown as unknown
        return None, None


def _call_text(stored: Any) -> str:
    """``"ada", times=2``: an execution's arguments as output shows them; ``?`` when unreadable."""
    args, kwargs = _call_parts(stored)
    if args is None or kwargs is None:
        return "?"
    return ", ".join([*(_json(a) for a in args), *(f"{k}={_json(v)}" for k, v in kwargs.items())])


def _arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    """ARGS_JSON: a JSON list of positional arguments, or an object {"args": [...], "kwargs": {...}}
    (either key may be left out); exit 2 for anything else."""
    value = _json_argument(text, "ARGS_JSON")
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict) and value and set(value) <= {"args", "kwargs"}:
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        if isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    _fail(f"ARGS_JSON must be {ARGS_HELP}")


def _get(store: Any, execution_id: str) -> Any:
    from runtime.programs.store import NotFoundError

    try:
        return store.get(execution_id)
    except NotFoundError:
        _fail(f"no execution {execution_id!r} in {store.url}")


def _event_text(execution_id: str, kind: str, text: str) -> str:
    """``[ID] kind: text`` (the kind left out when the text starts with it: ``[ID] cancelled``)."""
    if text.startswith(kind) and text[len(kind):len(kind) + 1] in ("", " ", ";", ","):  # "cancelled: cancelled"
        return f"[{execution_id}] {text}"
    return f"[{execution_id}] {kind}: {text}"


def _print_event(execution_id: str, kind: str, text: str) -> None:
    """An event as ``run`` and ``cancel`` print it: no time (they run it in front of you); a message of
    several lines stays one indented block."""
    click.echo(_event_text(execution_id, kind, text.replace("\n", "\n  ")), err=True)


def _stamp(t: float) -> str:
    """``2026-12-05T18:40:01.123Z``: a time as the worker's log lines start (ISO 8601, UTC, milliseconds)."""
    moment = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _log(line: str) -> None:
    """One log line of ``worker``, on standard error, after the time it is written."""
    click.echo(f"{_stamp(_now())} {line}", err=True)


def _log_from_handler(line: str) -> None:
    """``_log`` for a signal handler: straight to file descriptor 2, as the handler may have interrupted a
    write to sys.stderr, which must not be entered again."""
    try:
        os.write(2, f"{_stamp(_now())} {line}\n".encode("utf-8", "replace"))
    except OSError:  # standard error is gone: nothing to tell
        pass


def _log_event(execution_id: str, kind: str, text: str) -> None:
    """An event as ``worker`` logs it: one line per event, after its time; the line breaks of a message
    of several lines (an exception's notes) are written as ``\\n`` so that the line stays one."""
    flat = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    _log(_event_text(execution_id, kind, flat))


def _when(t: float | None) -> str:
    """A stored time as a UTC date; one that is no date (negative, infinite, NaN, past year 9999)
    as its number with a note."""
    if t is None:
        return "-"
    try:
        if not t >= 0:
            raise ValueError(t)
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError, TypeError):
        return f"{t!r} (not a valid time)"


def _span(seconds: float) -> str:
    """A length of time for people: ``12.3 s``, ``4.5 min``, ``2.0 h``, ``3.0 d``."""
    size = abs(seconds)
    if not math.isfinite(size):
        return f"{seconds!r} s"
    for unit, length in (("d", 86400.0), ("h", 3600.0), ("min", 120.0)):
        if size >= length:
            length = 60.0 if unit == "min" else length
            return f"{size / length:.1f} {unit}"
    return f"{size:.1f} s"


def _lease(ex: Any, now: float) -> dict[str, Any] | None:
    """The lease an execution is held under (``owner``, ``until``, ``lapsed``: True once its time has
    passed, so that another worker may take the execution over), or None when none is held."""
    if not ex.lease_owner:
        return None
    until = ex.lease_until
    lapsed = None if not isinstance(until, (int, float)) or until != until else bool(until <= now)
    return {"owner": ex.lease_owner, "until": until, "lapsed": lapsed}


def _lease_text(lease: dict[str, Any], now: float) -> str:
    """``worker-12-ab3f9c-0 until 2026-12-05 18:40:31 UTC (in 12.3 s)``, or ``(lapsed 4.0 s ago ...)``."""
    text = f"{lease['owner']} until {_when(lease['until'])}"
    if lease["lapsed"] is None:
        return text
    if lease["lapsed"]:
        return f"{text} (lapsed {_span(now - lease['until'])} ago: another worker may take it over)"
    return f"{text} (in {_span(lease['until'] - now)})"


def _set_aside(ex: Any) -> dict[str, Any] | None:
    """When the execution is set aside (``held_until``: no worker claims it before then for a signal or
    a timer): ``until`` and ``reason`` (its ``error`` while it is held); else None."""
    if ex.held_until is None:
        return None
    return {"until": ex.held_until, "reason": ex.error}


def _set_aside_text(ex: Any, now: float) -> str:
    """``set aside until 2026-12-05 18:41:00 UTC (in 59.8 s): <reason>``."""
    until = ex.held_until
    text = f"set aside until {_when(until)}"
    if isinstance(until, (int, float)) and until == until:
        text += f" (in {_span(until - now)})" if until > now else f" (over {_span(now - until)} ago: a worker " \
                                                                  "may take it again)"
    reason = (ex.error or "").strip()
    return text + (": " + reason.replace("\n", "\n            ") if reason else "")


SIGNALS_SHOWN = 5  # the names of a wait for several that a line shows


def _signal_names(ex: Any) -> list[str]:
    """The signal names a WAITING execution waits for: ``waiting_for``, then those of ``waits`` (distinct)."""
    names = [] if ex.waiting_for is None else [ex.waiting_for]
    for name in ex.waits or ():
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def _detail(ex: Any, held: bool = True) -> str:
    """What a running execution waits for (``signal 'approve' until ...``), after ``set aside until
    ...`` when it is set aside (unless ``held`` is False), and its damage."""
    from runtime.programs.store import SLEEPING, WAITING

    detail = ""
    if held and ex.held_until is not None:
        detail = f"set aside until {_when(ex.held_until)}; "
    if ex.status == WAITING:
        names = _signal_names(ex)
        shown = ", ".join(map(repr, names[:SIGNALS_SHOWN])) + (f", ... ({len(names)} in all)"
                                                               if len(names) > SIGNALS_SHOWN else "")
        detail += (f"signals {shown}" if len(names) > 1 else f"signal {(names or [None])[0]!r}") \
            + (f" until {_when(ex.wake_at)}" if ex.wake_at is not None else "")
    elif ex.status == SLEEPING:
        detail += f"until {_when(ex.wake_at)}"
    elif ex.cancel_requested and ex.status not in ("finished", "failed", "cancelled"):
        detail += "cancel requested"
    detail = detail.removesuffix("; ")
    if ex.damage:
        detail += ("; " if detail else "") + f"damaged: {ex.damage}"
    return detail


def _json(value: Any, indent: int | None = None) -> str:
    """JSON text of a value for output, which never fails: integers of any length as their digits
    (up to MAX_DIGITS; beyond, the string "<int with N digits>"), NaN and infinities as the strings
    "NaN", "Infinity", "-Infinity" (JSON has no such numbers), anything else JSON cannot carry as its
    repr."""
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        pass
    numbers: list[str] = []
    marker = f"int-{uuid.uuid4().hex}-"
    try:
        text = json.dumps(_plain(value, numbers, marker), indent=indent)
    except RecursionError:
        return json.dumps("<a value nested too deeply to show>")
    return re.sub(f'"{marker}(\\d+)"', lambda m: numbers[int(m.group(1))], text) if numbers else text


def _plain(value: Any, numbers: list[str] | None, marker: str, strict: bool = False) -> Any:
    """``value`` with what json.dumps cannot write replaced (see _json): long integers by markers
    for their JSON text in ``numbers`` (None: only check); anything else by its repr, or TypeError
    when ``strict``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if value.bit_length() <= 14000 or numbers is None:  # fewer than 4,300 digits: json writes it
            return int(value)
        numbers.append(_int_json(value))
        return f"{marker}{len(numbers) - 1}"
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (list, tuple)):
        return [_plain(item, numbers, marker, strict) for item in value]
    if isinstance(value, dict):
        return {_key(key, strict): _plain(item, numbers, marker, strict) for key, item in value.items()}
    if strict:
        raise TypeError(value)
    return _repr(value)


def _key(key: Any, strict: bool) -> str:
    """A dict key as JSON writes it (keys are strings)."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        text = str(key) if key.bit_length() <= 14000 else _int_json(key)
        return json.loads(text) if text.startswith('"') else text
    if isinstance(key, float):
        return repr(key) if math.isfinite(key) else _plain(key, None, "")
    if strict:
        raise TypeError(key)
    return _repr(key)


def _int_json(n: int) -> str:
    """The digits of ``n`` (no length limit, unlike str(); fast, by halves in decimal), or the JSON
    string "<int with N digits>" beyond MAX_DIGITS."""
    size = abs(n)
    if (size.bit_length() - 1) * math.log10(2) >= MAX_DIGITS:
        return json.dumps(f"<int with {_digit_count(size)} digits>")
    digits = str(_decimal(size))
    if len(digits) > MAX_DIGITS:
        return json.dumps(f"<int with {len(digits)} digits>")
    return ("-" if n < 0 else "") + digits


def _digit_count(n: int) -> int:
    log = math.log10(n)
    k = math.floor(log)
    if min(log - k, k + 1 - log) < 1e-9:  # close to a power of ten: settle it exactly
        k = round(log)
        return k + 1 if n >= 10 ** k else k
    return k + 1


def _decimal(n: int) -> decimal.Decimal:
    """``n >= 0`` as an exact Decimal: halves joined with exact decimal arithmetic (fast for a
    million digits, where Decimal(n) and str(n) are quadratic or limited)."""
    powers: dict[int, decimal.Decimal] = {}

    def power(w: int) -> decimal.Decimal:  # 2 ** w
        if w not in powers:
            powers[w] = decimal.Decimal(2) ** w if w <= 128 else power(w >> 1) * power(w - (w >> 1))
        return powers[w]

    def convert(n: int, w: int) -> decimal.Decimal:
        if w <= 128:
            return decimal.Decimal(n)
        half = w >> 1
        high = n >> half
        return convert(n - (high << half), half) + convert(high, w - half) * power(half)

    with decimal.localcontext() as context:
        context.prec, context.Emax, context.Emin = decimal.MAX_PREC, decimal.MAX_EMAX, decimal.MIN_EMIN
        context.traps[decimal.Inexact] = True
        return convert(n, n.bit_length())


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a set of huge ints, a value nested too deeply
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"


def _shown(value: Any) -> Any:
    """What output shows of a program's value: itself when JSON can carry it, else its repr (when
    even that fails, on huge integers, the value: _json shows what JSON cannot carry part by part)."""
    try:
        _plain(value, None, "", strict=True)
        return value
    except TypeError:
        pass
    except RecursionError:
        return "<a value nested too deeply to show>"
    try:
        return repr(value)
    except RecursionError:
        return "<a value nested too deeply to show>"
    except Exception:
        return value


def _exit_for(status: str) -> int:
    from runtime.programs.store import CANCELLED, FAILED, FINISHED

    return EXIT_OK if status == FINISHED else EXIT_FAILED if status in (FAILED, CANCELLED) else EXIT_RUNNING


class _Unreadable(Exception):
    pass


def _result(ex: Any) -> Any:
    """A finished execution's result as output shows it (see _shown); _Unreadable when it cannot be
    read (a damaged row, bytes that do not decode)."""
    from runtime.values import load_value

    if ex.result is None:
        raise _Unreadable(f"execution {ex.id} is finished but has no readable result"
                          + (f" (damaged: {ex.damage})" if ex.damage else ""))
    try:
        return _shown(load_value(ex.result))
    except Exception as exc:
        raise _Unreadable(f"the result of execution {ex.id} cannot be decoded: {type(exc).__name__}: {exc}") from None


@commands.command("run", short_help="Start a durable program and run it until it finishes or waits.")
@click.argument("function")
@click.argument("args_json", required=False, default="[]")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--detach", is_flag=True, help="Only record the execution; print its id alone on stdout.")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="If the program fails, also print its traceback.")
@_store_errors
def run_command(function: str, args_json: str, store_url: str | None, detach: bool, show_traceback: bool) -> None:
    """Start FUNCTION with the arguments in ARGS_JSON and run it in this process until it finishes,
    sleeps or waits (a worker continues it); with --detach only record it.

    FUNCTION is MODULE:FUNCTION with a dotted module name found from the current directory, as with
    python -m (pkg.flows:onboarding), or the path of a .py file under the current directory
    (pkg/flows.py:onboarding). ARGS_JSON is a JSON list of positional arguments ('["ada", 3]'), or an
    object with both kinds ('{"args": ["ada"], "kwargs": {"nudge_after": 3}}').

    Exit 0 finished (the result is printed as JSON), 4 not finished yet, 5 failed or cancelled."""
    from runtime.programs.runner import ProgramError, Runner

    function = _check_function(function)
    args, kwargs = _arguments(args_json)
    store = _open(store_url, create=True)
    runner = Runner(store, on_event=None if detach else _print_event)
    try:
        execution = runner.start(function, args, kwargs)
    except ProgramError as exc:
        _fail(str(exc))
    if detach:
        click.echo(execution.id)
        return
    final = runner.claim_and_advance(execution.id) or store.get(execution.id)
    _report_final(final, show_traceback)
    sys.exit(_exit_for(final.status))


TRACEBACK_HEADER = "Traceback (most recent call last):"


def _report_final(ex: Any, show_traceback: bool = False) -> None:
    """The outcome of ``run``/``result``: the result as JSON on stdout, else a summary on stderr (a
    failure's exception; its stored traceback after it with ``show_traceback``); exits 2 when the
    execution cannot be read (a damaged row)."""
    if ex.damage:
        click.echo(f"execution {ex.id} is damaged: {ex.damage}", err=True)
    if ex.status is None:
        _fail(f"execution {ex.id} has no readable status, so it cannot be told whether it finished")
    if ex.status == "finished":
        try:
            click.echo(_json(_result(ex)))
        except _Unreadable as exc:
            _fail(str(exc))
    elif ex.status == "failed":
        error = (ex.error or "").strip()
        exception = _exception_of(error)
        click.echo(f"execution {ex.id} failed" + (": " + exception.replace("\n", "\n  ") if exception else ""),
                   err=True)
        if TRACEBACK_HEADER in error:
            click.echo(error if show_traceback else f"(the traceback: durable result {ex.id} --traceback)", err=True)
    elif ex.status == "cancelled":
        click.echo(_cancelled(ex), err=True)
    else:
        click.echo(f"execution {ex.id} is {_state(ex)}; `durable worker` continues it", err=True)


def _exception_of(error: str) -> str:
    """The exception a failure's stored text names (type, message, notes), without the traceback in
    front of it; the whole text when it holds no traceback (a reason written by the runner)."""
    lines = error.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith(TRACEBACK_HEADER)]
    if not starts:
        return error
    for n in range(starts[-1] + 1, len(lines)):  # frames are indented; the exception is not
        if lines[n] and not lines[n][0].isspace():
            return "\n".join(lines[n:])
    return lines[-1].strip()


def _cancelled(ex: Any) -> str:
    """``execution X was cancelled``, with the reason when the record has one beyond the word."""
    note = (ex.error or "").strip()
    reason = note[len("cancelled"):] if note.startswith("cancelled") else f": {note}" if note else ""
    return f"execution {ex.id} was cancelled{reason}"


def _state(ex: Any) -> str:
    """What a running execution is doing, as a phrase: ``waiting for signal 'approval' until ...``."""
    from runtime.programs.store import WAITING

    held = f", set aside until {_when(ex.held_until)}" if ex.held_until is not None else ""
    if ex.status == WAITING:
        return f"waiting for {_detail(ex, held=False)}{held}"
    detail = _detail(ex, held=False)
    if ex.status == "pending" and detail:
        return f"pending ({detail}){held}"
    return f"{ex.status} {detail}".rstrip() + held


@commands.command("worker", short_help="Run due executions until stopped.")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Steps run at the same time (threads).")
@click.option("--in-flight", "in_flight", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Executions claimed and advanced at the same time (their transitions are written together).")
@click.option("--lease", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds an execution stays leased to this worker without news from it.")
@click.option("--poll", type=click.FloatRange(0.01), default=0.5, show_default=True,
              help="Seconds between looks at the store when nothing is due.")
@click.option("--grace", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Seconds an async program in a transient await (asyncio) gets, once the worker stops, to reach "
                   "its next durable await; then it is detached and continues elsewhere from its last commit.")
@click.option("--quiet", is_flag=True, help="Do not log what happens to each execution.")
@click.option("--migrations", "migration_modules", multiple=True, metavar="MODULE",
              help="A module that registers migrations (runtime.migration), imported first; repeat for more "
                   "(default: $DURABLE_MIGRATIONS, comma-separated).")
@_store_errors
def worker_command(store_url: str | None, concurrency: int, in_flight: int, lease: float, poll: float,
                   grace: float, quiet: bool, migration_modules: tuple[str, ...]) -> None:
    """Run due executions (new ones, timers, signals) until stopped, logging each event on standard
    error as one line after its time (2026-12-05T18:40:01.123Z [ID] step: ...). Several workers may
    share a store. SIGTERM or Ctrl-C stops claiming, lets the current transitions end, releases this
    worker's leases (so another worker takes its runs at once) and exits 0; a second one exits at once."""
    from runtime.programs.runner import ProgramError
    from runtime.programs.worker import Worker

    store = _open(store_url, create=True)
    try:
        worker = Worker(store, concurrency=concurrency, in_flight=in_flight, lease=lease, poll=poll, grace=grace,
                        on_event=None if quiet else _log_event, migrations=migration_modules or None)
    except ProgramError as exc:
        _fail(f"cannot import the migrations: {exc}")
    name = worker.name

    def stop(signum: int, frame: Any) -> None:
        signal_name = signals.Signals(signum).name
        if worker.stop.is_set():  # asked twice: do not wait for the current transitions
            _log_from_handler(f"durable worker {name}: {signal_name} again: exiting at once; its leases lapse "
                              f"within {lease:g} s")
            os._exit(128 + signum)
        worker.stop.set()
        _log_from_handler(f"durable worker {name}: {signal_name}: stopping: no new claims, finishing the current "
                          "transitions (send it again to exit at once)")

    signals.signal(signals.SIGTERM, stop)
    signals.signal(signals.SIGINT, stop)
    _log(f"durable worker {name}: {store.url}, concurrency {concurrency}, in flight {in_flight}, lease {lease:g} s")
    worker.run()  # on its way out, it releases its leases (worker.released)
    released = worker.released
    _log(f"durable worker {name}: stopped after advancing executions {worker.advanced} "
         f"time{'' if worker.advanced == 1 else 's'}; released {released} lease{'' if released == 1 else 's'}")


STATUS_HELP = ("Only executions in this status: pending (not started yet, or due to run: a worker takes it), "
               "sleeping (until a timer), waiting (for a signal), finished (has a result), failed (raised, "
               "or could not continue), cancelled.")


@commands.command("ls", short_help="List executions, oldest first.")
@click.option("--status", type=click.Choice(["pending", "sleeping", "waiting", "finished", "failed", "cancelled"]),
              help=STATUS_HELP)
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (with each execution's args and kwargs).")
@_store_errors
def ls_command(status: str | None, store_url: str | None, as_json: bool) -> None:
    """List executions, oldest first: id, status, last update, function, the version of its code (8 hex
    digits of the outermost frame's version as last committed, - before the first suspension), the point
    it is suspended at (its label, cut to 40 characters) and what it waits for (a run set aside, which no
    worker takes before a time, says so first: set aside until ...). A run that workers could not resume
    under their code (a deploy changed it) keeps its status and says BLOCKED first: it waits for a worker
    with the code that suspended it, or a deploy or migration that takes it (durable plan tells which).

    --json adds code_version, point, frames (per frame, outermost first: [function, version, source
    digest, point key, point label, line]) and blocked_on (the code keys of the workers that could not
    resume it)."""
    store = _open(store_url, readonly=True)
    rows = store.list(status=status)
    now = _now()
    if as_json:
        click.echo(_json([{"id": e.id, "function": e.function, "status": e.status, "args": _call_parts(e.args)[0],
                           "kwargs": _call_parts(e.args)[1], "created_at": e.created_at,
                           "updated_at": e.updated_at, "wake_at": e.wake_at, "waiting_for": e.waiting_for,
                           "waits": e.waits,
                           "progress": e.progress, "lease": _lease(e, now), "set_aside": _set_aside(e),
                           "code_version": e.code_version, "point": e.point, "frames": e.frames,
                           "blocked_on": e.blocked_on, "damage": e.damage}
                          for e in rows], indent=2))
        return
    click.echo(f"{'ID':14} {'STATUS':10} {'UPDATED':24} {'FUNCTION':32} {'VERSION':8} {'POINT':{POINT_WIDTH}} DETAIL")
    for e in rows:
        detail = _detail(e)
        if e.blocked_on and e.status not in ("finished", "failed", "cancelled"):
            detail = "BLOCKED (no worker seen so far can resume it: durable show, durable plan)" \
                + (f"; {detail}" if detail else "")
        click.echo(f"{e.id or '?':14} {e.status or '?':10} {_when(e.updated_at):24} {e.function or '?':32} "
                   f"{_short_version(e.code_version):8} {_clip(e.point or '-', POINT_WIDTH):{POINT_WIDTH}} "
                   f"{detail}".rstrip())


POINT_WIDTH = 40
"""How much of a point's label ``ls`` shows."""


def _short_version(version: Any) -> str:
    return version[:8] if isinstance(version, str) and version else "-"


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())  # a label of several lines stays on one row
    return text if len(text) <= width else text[:width - 1] + "…"


def _source_line(function: str | None, line: int | None) -> str | None:
    """The text of ``line`` in the file of ``function``'s module (``module:qualname``), found on the
    current directory and sys.path without importing anything; None when not found."""
    module = (function or "").partition(":")[0]
    if not isinstance(line, int) or not module or not all(part.isidentifier() for part in module.split(".")):
        return None
    relative = os.path.join(*module.split("."))
    for base in [os.getcwd(), *sys.path]:
        for candidate in (relative + ".py", os.path.join(relative, "__init__.py")):
            path = os.path.join(base or os.getcwd(), candidate)
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8") as fh:
                        lines = fh.read().splitlines()
                except (OSError, UnicodeDecodeError):
                    return None
                return lines[line - 1].strip() if 0 < line <= len(lines) else None
    return None


def _frame_source(store: Any, ex: Any, index: int, frame: dict[str, Any]) -> tuple[str | None, str | None]:
    """The text of a suspended frame's line in the text of the version that saved it (the store keeps it
    per version and text digest), or else in today's file, with a note saying so: (text, note)."""
    function, version, line = frame["function"], frame.get("version"), frame["line"]
    if isinstance(version, str) and isinstance(line, int):
        from runtime.programs import versions

        stored = store.code_version(function, version, versions.recorded_digest(ex.frames, index, function, version))
        if stored is not None and isinstance(stored.source, str):
            first, lines = versions.source_lines(stored.first_line, stored.source)
            if 0 <= line - first < len(lines):
                return lines[line - first].strip(), None
    text = _source_line(function, line)
    if text is None:
        return None, None
    return text, (f"(today's file: the text of version {_short_version(version)} is not recorded; it may have "
                  "moved)")


def _describe(store: Any, ex: Any, now: float) -> dict[str, Any]:
    args, kwargs = _call_parts(ex.args)
    info: dict[str, Any] = {
        "id": ex.id, "function": ex.function, "args": args, "kwargs": kwargs, "status": ex.status,
        "version": ex.version,
        "created_at": ex.created_at, "updated_at": ex.updated_at, "request": ex.request, "wake_at": ex.wake_at,
        "waiting_for": ex.waiting_for, "waits": ex.waits, "progress": ex.progress,
        "cancel_requested": ex.cancel_requested,
        "lease": _lease(ex, now), "set_aside": _set_aside(ex),
        "error": ex.error, "damage": ex.damage, "code_version": ex.code_version, "point": ex.point,
        "frames": ex.frames, "blocked_on": ex.blocked_on, "migrations": ex.migrations, "suspended_at": None,
    }
    if ex.snapshot is not None:
        import runtime

        try:
            frames = runtime.inspect_snapshot(ex.snapshot).to_dict()["frames"]
            for index, frame in enumerate(frames):
                frame["source"], frame["source_note"] = _frame_source(store, ex, index, frame)
            info["suspended_at"] = frames
        except Exception as exc:  # a damaged snapshot: say so, show the rest
            info["suspended_at"] = f"unreadable snapshot: {type(exc).__name__}: {exc}"
    if ex.status == "finished":
        try:
            info["result"] = _result(ex)
        except _Unreadable as exc:
            info["result"] = f"<unreadable: {exc}>"
    info["steps"] = [{"index": s.index, "function": s.function, "status": s.status, "attempts": s.attempts,
                      "error": s.error, "started_at": s.started_at, "finished_at": s.finished_at, "damage": s.damage}
                     for s in store.steps(ex.id)]
    info["signals"] = [{"name": s.name, "payload": s.payload, "consumed": s.consumed, "at": s.created_at,
                        "damage": s.damage} for s in store.signals(ex.id)]
    return info


def _composite_lines(request: dict[str, Any]) -> list[str]:
    """``durable show``'s lines for a run parked on ``runtime.gather``/``race``: one per pending part of the
    stored request (``composite.py``), its key (the path of child indices) and what it waits for. The row is
    data from outside: a part that is not one is shown as its JSON."""
    parts = request.get("parts")
    if not isinstance(parts, list):
        return [f"  awaiting  runtime.gather/race, with no list of parts: {_json(request)[:200]}"]
    keys = [".".join(map(str, p["key"])) if isinstance(p, dict) and isinstance(p.get("key"), list) and p["key"]
            and all(type(i) is int for i in p["key"]) else "?" for p in parts]
    keys = [k if len(k) <= 40 else k[:37] + "..." for k in keys]
    width = max([len(k) for k in keys] + [1])
    lines = [f"  awaiting  runtime.gather/race of {len(parts)} part{'s' if len(parts) != 1 else ''}:"]
    for key, part in zip(keys, parts):
        kind = part.get("kind") if isinstance(part, dict) else None
        if kind == "step":
            what = f"step {part.get('index', '?')} {part.get('function') or '?'}" + \
                (f", retry at {_when(part['retry_at'])}" if part.get("retry_at") is not None else "")
        elif kind == "sleep":
            what = f"sleep until {_when(part.get('wake_at'))}"
        elif kind == "wait":
            timeout = part.get("timeout")
            what = f"wait for signal {part.get('signal')!r}" + (
                f" until {_when(part['timeout_at'])}" if part.get("timeout_at") is not None else "") + (
                ", no timeout" if timeout is None else f" (timeout {_span(timeout)})"
                if type(timeout) in (int, float) else f" (timeout {_json(timeout)[:40]})")
        elif kind == "checkpoint":
            what = "checkpoint"
        else:
            what = _json(part)[:200]
        lines.append(f"    part {key:<{width}}  {what}")
    return lines


@commands.command("show", short_help="Show an execution: status, where it is suspended, steps, signals.")
@click.argument("execution_id")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@_store_errors
def show_command(execution_id: str, store_url: str | None, as_json: bool) -> None:
    """Show an execution: status, whether it is set aside (until when, and why) or blocked (the code keys
    of the workers that could not resume it, and why) and which worker holds its lease (until when, or
    that it lapsed), where it is suspended (per frame: the line, the code's version and the point's
    label, the line's text in the text of THAT version as the store recorded it, else in today's file
    with a note; the live locals, read from the snapshot without importing anything), its steps and
    signals."""
    store = _open(store_url, readonly=True)
    ex = _get(store, execution_id)
    now = _now()
    info = _describe(store, ex, now)
    if as_json:
        click.echo(_json(info, indent=2))
        return
    click.echo(f"execution {info['id']}: {info['function'] or '?'}({_call_text(ex.args)})")
    detail = _detail(ex, held=False)
    detail = detail if not ex.damage else detail.rpartition("damaged: ")[0].rstrip("; ")
    click.echo(f"  status    {info['status'] or '?'}" + (f" ({detail})" if detail else ""))
    if ex.held_until is not None:  # its reason is the error: shown here, not again below
        click.echo(f"  {_set_aside_text(ex, now)}")
    if ex.blocked_on and ex.status not in ("finished", "failed", "cancelled"):
        click.echo(f"  blocked   on {', '.join(map(str, ex.blocked_on))}: the workers with this code cannot resume "
                   "it; it waits for a worker with the code that suspended it, or a deploy or migration that "
                   "takes it (durable plan tells which); why: see error")
    if info["lease"] is not None:
        click.echo(f"  lease     {_lease_text(info['lease'], now)}")
    if ex.damage:
        click.echo(f"  damaged   {ex.damage}")
    click.echo(f"  created   {_when(info['created_at'])}\n  updated   {_when(info['updated_at'])}")
    if info["progress"] is not None:
        click.echo(f"  progress  {_json(info['progress'])}")
    if isinstance(ex.request, dict) and ex.request.get("kind") == "all":
        for text in _composite_lines(ex.request):
            click.echo(text)
    frames = info["suspended_at"]
    if isinstance(frames, list):
        for frame in frames:
            where = [f"version {_short_version(frame.get('version'))}" if frame.get("version") else
                     f"state {frame['state']}"]
            if frame.get("point"):
                where.append(f"point '{frame['point']}'")
            click.echo(f"  suspended in {frame['function']} at line {frame['line']} ({', '.join(where)})"
                       + (f": {frame['source']}" if frame.get("source") else ""))
            if frame.get("source_note"):
                click.echo(f"      {frame['source_note']}")
            notes = frame.get("notes", {})
            for name, value in frame["locals"].items():
                click.echo(f"      {name} = {value}" + (f"  ({notes[name]})" if name in notes else ""))
    elif frames:
        click.echo(f"  {frames}")
    if "result" in info:
        click.echo(f"  result    {_json(info['result'])}")
    if info["error"] and ex.held_until is None:
        click.echo("  error     " + info["error"].replace("\n", "\n            "))
    for m in ex.migrations or []:
        if isinstance(m, dict):  # recorded by the runner; a hand-edited cell is shown as it is
            what = (f"cancelled it: {m.get('cancel')}" if "cancel" in m
                    else f"from '{m.get('from_point')}' to '{m.get('to_point')}'")
            click.echo(f"  migrated  by {m.get('migration')} at {_when(m.get('at'))}: {what}")
        else:
            click.echo(f"  migrated  {_json(m)}")
    for s in info["steps"]:
        click.echo(f"  step {s['index'] if s['index'] is not None else '?':<3} {s['function'] or '?':40} "
                   f"{s['status'] or '?':9} attempts {s['attempts'] if s['attempts'] is not None else '?'}"
                   + (f"  last error: {s['error']}" if s["error"] else "")
                   + (f"  damaged: {s['damage']}" if s["damage"] else ""))
    for s in info["signals"]:
        click.echo(f"  signal {s['name']!r} {_json(s['payload'])} {'consumed' if s['consumed'] else 'queued'}"
                   + (f"  damaged: {s['damage']}" if s["damage"] else ""))


@commands.command("plan", short_help="Say what the code importable now does to each live run (read-only).")
@click.argument("modules", nargs=-1, metavar="[MODULE]...")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object: runs, summary, functions.")
@click.option("--migrations", "migration_modules", multiple=True, metavar="MODULE",
              help="A module that registers migrations (runtime.migration), imported first; repeat for more "
                   "(default: $DURABLE_MIGRATIONS, comma-separated).")
@_store_errors
def plan_command(modules: tuple[str, ...], store_url: str | None, as_json: bool,
                 migration_modules: tuple[str, ...]) -> None:
    """Before a deploy: judge every live run (pending, sleeping, waiting) of the store against the code
    importable now, as a worker with this code would resume it, without changing anything (the store is
    opened read-only, no value of a snapshot is decoded, no user code runs but the modules' imports).

    Imports MODULE... (dotted names, as python -m takes them, from the current directory), else the
    modules of the live runs' functions and the modules of [tool.durable]. Each frame of a run is
    judged; the run's outcome is the worst of its frames': unchanged (the same version), upgrade
    (resumes under the new code), migrate (a registered migration moves it: migrations are found in the
    program modules and in --migrations; plan does not run them), pinned (its function keeps runs on
    their version: it waits for a worker with that version; does not fail the plan), stranded (the code
    cannot resume it: an old worker or a migration must; an unreadable snapshot is stranded too). A run
    not started yet is judged at <start>: its function must exist and take its arguments.

    Prints, per function and point, how many runs, their outcome and why; for each function whose
    version changed, a unified diff of the old version's text as the store recorded it against today's
    (numbered as in their files); then a summary line. --json prints {"runs": [{"id", "function",
    "point", "line", "outcome", "reason"}], "summary": {"unchanged", "upgrade", "migrate", "pinned",
    "stranded"}, "store", "functions": [{"function", "old_version", "new_version", "diff"}]}.

    Exit 0 when no run is stranded, 1 when one is, 2 on bad input (an unknown store, a module that
    fails to import, an unreadable configuration)."""
    from runtime.programs.plan import PlanInputError, make_plan
    from runtime.programs.runner import ProgramError, import_migrations

    for name in modules:
        if not all(part.isidentifier() for part in name.split(".")):
            _fail(f"{name!r} is not a module name: {NAME_HINT}")
    store = _open(store_url, readonly=True)
    try:
        import_migrations(migration_modules or None)
    except ProgramError as exc:
        _fail(f"cannot import the migrations: {exc}")
    try:
        plan = make_plan(store, modules)
    except PlanInputError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(_json(plan.to_json(), indent=2))
    else:
        _print_plan(plan)
    sys.exit(1 if plan.stranded else EXIT_OK)


@commands.command("relabel", short_help="Store runs saved before points had labels in the current format.")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--limit", type=click.IntRange(1), default=None, help="Relabel at most this many runs.")
@_store_errors
def relabel_command(store_url: str | None, limit: int | None) -> None:
    """Once, after upgrading to a runtime with point labels and before deploying code changes: restore every
    live run whose snapshot predates labels (format 1 or 2) under the code it was saved by, and store it
    again with its points' labels, so that later deploys can upgrade it (see durable plan). Nothing else
    changes (status, request, timers, steps, signals) and no user code runs. Runs a worker holds now,
    whose code changed since, or whose seal does not verify are left as they are, with the reason."""
    from runtime.programs.relabel import relabel

    store = _open(store_url)
    done = relabel(store, limit=limit)
    for execution_id, why in done.left:
        _log(f"left {execution_id}: {why}")
    _log(f"relabelled {len(done.done)} run{'' if len(done.done) == 1 else 's'}; {done.current} already labelled; "
         f"{len(done.left)} left")


def _print_plan(plan: Any) -> None:
    count = len(plan.runs)
    click.echo(f"plan: {count} live run{'' if count == 1 else 's'} in {plan.store}, judged against the code "
               "importable now")
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for run in plan.runs:
        groups.setdefault((run.function, run.point, run.outcome, run.reason), []).append(run)
    functions = list(dict.fromkeys([run.function for run in plan.runs] + [f.function for f in plan.functions]))
    for function in functions:
        click.echo(f"\n{function}")
        for (name, point, outcome, reason), runs in groups.items():
            if name != function:
                continue
            line = runs[0].line
            where = f"at {point}" if point in (None, "<start>") else f"at '{point}'"
            where += f" (line {line})" if line is not None else ""
            click.echo(f"  {len(runs)} run{'' if len(runs) == 1 else 's'}: {outcome} {where}"
                       + (": " + reason.replace("\n", "\n    ") if reason else ""))
            if len(runs) <= 5:
                click.echo(f"    ({', '.join(run.id for run in runs)})")
            if outcome == "stranded":
                click.echo(_migration_hint(runs[0], reason or ""))
        for change in plan.functions:
            if change.function != function:
                continue
            new = (change.new_version or "")[:8] or "(removed)"
            click.echo(f"  version {(change.old_version or '?')[:8]} -> {new}:")
            click.echo("\n".join(f"    {line}" for line in change.diff.splitlines()))
    summary = plan.summary
    click.echo("\nsummary: " + ", ".join(f"{n} {outcome}" for outcome, n in summary.items())
               + ("" if not summary["stranded"] else " (stranded runs need the old code or a migration)"))


def _migration_hint(run: Any, reason: str) -> str:
    """What to do about stranded runs: the old code, or a migration (a stub naming their version)."""
    frame = next((f for f in run.frames if f.outcome == "stranded"), None)
    if frame is None or frame.version is None or not reason.startswith(("missing-local", "no-point")):
        return "    to do: finish them with workers that still have their code, or cancel them"
    missing = re.findall(r"local '(\w+)' is needed", reason)
    to = "old.key" if reason.startswith("missing-local") else '"<a point of the new code>"'
    changes = "".join(f", {name}=..." for name in missing)
    return (f"    to do: finish them with workers that still have version {frame.version[:8]}, or move them with a "
            f"migration (README: Deploying changes):\n"
            f"      @runtime.migration({frame.function!r}, from_version={frame.version[:8]!r})\n"
            f"      def move(old):\n"
            f"          return old.to({to}{changes})")


@commands.command("signal", short_help="Send a signal (a JSON payload) to an execution.")
@click.argument("execution_id")
@click.argument("name")
@click.argument("payload_json", required=False, default="null")
@click.option("--store", "store_url", help=STORE_HELP)
@_store_errors
def signal_command(execution_id: str, name: str, payload_json: str, store_url: str | None) -> None:
    """Send signal NAME with a JSON payload (default null) to an execution: queued until the program
    waits for NAME, which then gets the payload. Warns when the execution is waiting for another name."""
    from runtime.programs.store import WAITING, InvalidStateError, NotFoundError

    payload = _json_argument(payload_json, "the payload")
    store = _open(store_url)
    try:
        store.send_signal(execution_id, name, payload, now=_now())
    except NotFoundError:
        _fail(f"no execution {execution_id!r} in {store.url}")
    except InvalidStateError as exc:
        _fail(str(exc))
    click.echo(f"signal {name!r} sent to {execution_id}", err=True)
    ex = store.get(execution_id)
    names = _signal_names(ex) if ex.status == WAITING else []
    if names and name not in names:
        waited = f"signal {names[0]!r}" if len(names) == 1 else f"signals {', '.join(map(repr, names))}"
        click.echo(f"warning: execution {execution_id} is waiting for {waited}; {name!r} is "
                   "queued until the program waits for it", err=True)


def _now() -> float:
    from runtime.programs.clock import SYSTEM

    return SYSTEM.now()


def _check_closable(ex: Any) -> None:
    """Refuse (exit 2, nothing changed) to cancel a program whose finally blocks could not run here."""
    import runtime
    from runtime.programs.runner import ProgramError, load_function

    if ex.snapshot is None or ex.status in ("finished", "failed", "cancelled"):
        return
    try:
        load_function(ex.function)
        runtime.detach(runtime.restore(ex.snapshot))
    except (ProgramError, runtime.SnapshotError) as exc:
        _fail(f"cannot cancel {ex.id} cleanly: its finally blocks could not run here ({type(exc).__name__}: {exc}); "
              "deploy the code it was started with, or use --force to cancel it without running them")


def _cancel_damaged(store: Any, ex: Any) -> None:
    """--force on a damaged execution: record it cancelled without resuming it (a runner cannot)."""
    from runtime.programs.store import CANCELLED, Change

    owner = f"durable-cancel-{os.getpid()}"
    claimed = store.claim(owner, now=_now(), lease=30.0, execution_id=ex.id)
    if claimed is None:
        click.echo(f"cancellation of {ex.id} requested; the worker holding it will record it", err=True)
        return
    note = f"cancelled without running its finally blocks: the execution is damaged ({ex.damage})"
    store.commit(Change(ex.id, claimed.version, owner=owner, release=True,
                        fields={"status": CANCELLED, "error": note, "snapshot": None, "request": None,
                                "wake_at": None, "waiting_for": None, "waits": None}), now=_now())
    click.echo(f"execution {ex.id} cancelled (it is damaged: its finally blocks did not run)", err=True)


@commands.command("cancel", short_help="Cancel an execution (its finally blocks run).")
@click.argument("execution_id")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--force", is_flag=True, help="Cancel even if the program's code changed and its finally blocks "
                                              "cannot run.")
@_store_errors
def cancel_command(execution_id: str, store_url: str | None, force: bool) -> None:
    """Cancel an execution: its generator is closed (its finally blocks run) and it is recorded cancelled.
    If a worker holds it right now, that worker does it at its next transition."""
    from runtime.programs.runner import Runner
    from runtime.programs.store import InvalidStateError, NotFoundError

    store = _open(store_url)
    ex = _get(store, execution_id)
    if ex.damage:
        click.echo(f"execution {ex.id} is damaged: {ex.damage}", err=True)
        if ex.status is None:
            _fail(f"cannot cancel {ex.id}: it has no readable status")
        if not force:
            _fail(f"cannot cancel {ex.id} cleanly: it is damaged, so its finally blocks cannot run; "
                  "use --force to record it cancelled without running them")
    elif not force:
        _check_closable(ex)
    try:
        store.request_cancel(execution_id, now=_now())
    except NotFoundError:
        _fail(f"no execution {execution_id!r} in {store.url}")
    except InvalidStateError as exc:
        _fail(str(exc))
    if ex.damage:
        _cancel_damaged(store, ex)
        return
    final = Runner(store, on_event=_print_event).claim_and_advance(execution_id)
    if final is None:
        click.echo(f"cancellation of {execution_id} requested; the worker running it will close it", err=True)
    elif final.status == "cancelled":
        click.echo(_cancelled(final), err=True)
    else:
        click.echo(f"execution {execution_id} {final.status}", err=True)


@commands.command("result", short_help="Print an execution's result as JSON, or why there is none.")
@click.argument("execution_id")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--traceback", "show_traceback", is_flag=True,
              help="For a failed execution, also print the stored traceback.")
@_store_errors
def result_command(execution_id: str, store_url: str | None, show_traceback: bool) -> None:
    """Print the result as JSON on standard output. A failed execution prints its exception on standard
    error (with --traceback, the stored traceback after it); a cancelled one, the reason.

    Exit 0 when finished, 4 while still running, 5 if failed or cancelled."""
    store = _open(store_url, readonly=True)
    ex = _get(store, execution_id)
    if ex.status not in (None, "finished", "failed", "cancelled"):
        if ex.damage:
            click.echo(f"execution {ex.id} is damaged: {ex.damage}", err=True)
        click.echo(f"execution {ex.id} is {_state(ex)}", err=True)
    else:
        _report_final(ex, show_traceback)
    sys.exit(_exit_for(ex.status))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DATE_FORMS = ("an ISO 8601 date or time (2026-11-01, 2026-11-01T12:00:00Z, 2026-11-01T12:00:00+02:00; UTC "
              "when it has no offset) or how long ago (30d, 12h, 90m, 45s, 2w)")


def _cutoff(text: str, now: float) -> float:
    """The time (epoch seconds) ``--finished-before`` names: an ISO 8601 date or date and time (UTC
    unless it has an offset), or a duration before ``now``; exit 2 for anything else, or a time in the
    future."""
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration:
        seconds = float(duration.group(1)) * _UNITS[duration.group(2)]
        cutoff = now - seconds
        if not math.isfinite(cutoff) or cutoff < 0:
            _fail(f"--finished-before {text!r} reaches back before 1970")
        return cutoff
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value  # Python 3.10 reads no Z
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", iso):  # the same forms on every Python
            raise ValueError(iso)
        moment = dt.datetime.fromisoformat(iso)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        cutoff = moment.timestamp()
    except (ValueError, OverflowError):
        _fail(f"--finished-before {text!r} is not a date: give {DATE_FORMS}")
    if cutoff > now:
        _fail(f"--finished-before {text!r} is in the future ({_when(cutoff)}); to delete every run that "
              "ended, give 0s")
    return cutoff


@commands.command("prune", short_help="Delete runs that ended before a date, with their steps and signals.")
@click.option("--finished-before", "finished_before", required=True, metavar="DATE",
              help="Delete runs that ended (finished, failed, cancelled) before this: " + DATE_FORMS + ".")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--batch", type=click.IntRange(1), default=1000, show_default=True,
              help="Runs deleted per transaction (workers wait at most one batch for the store).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted; change nothing.")
@_store_errors
def prune_command(finished_before: str, store_url: str | None, batch: int, dry_run: bool) -> None:
    """Delete the runs that ended (finished, failed or cancelled) before DATE — their last update is
    older — with their steps and signals, a batch at a time. Runs still going (pending, sleeping,
    waiting, set aside) are never deleted. Prints how many runs were deleted on standard error.

    DATE is an ISO 8601 date or time (2026-11-01 is midnight UTC; 2026-11-01T12:00:00Z;
    2026-11-01T12:00:00+02:00) or how long ago (30d, 12h, 90m, 45s, 2w). Needs an existing store."""
    from runtime.programs.store import TERMINAL

    cutoff = _cutoff(finished_before, _now())
    when = _when(cutoff)
    if dry_run:
        store = _open(store_url, readonly=True)
        count = sum(1 for status in TERMINAL for e in store.list(status=status)
                    if isinstance(e.updated_at, (int, float)) and e.updated_at < cutoff)
        click.echo(f"would delete {count} run{'' if count == 1 else 's'} that ended before {when} "
                   "(--dry-run: nothing deleted)", err=True)
        return
    store = _open(store_url)
    count = store.prune(finished_before=cutoff, batch=batch)
    click.echo(f"deleted {count} run{'' if count == 1 else 's'} that ended before {when}, with their steps and "
               "signals", err=True)
