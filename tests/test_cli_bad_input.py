"""The program commands on bad input, missing or damaged stores, damaged rows and odd stored values:
a clear message and exit 2 (or the usual exit code), never a traceback or exit 123, and read-only
commands never create or change a store."""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import raw_sql
from click.testing import CliRunner

from runtime.programs.store import FINISHED, WAITING, Change, SQLiteStore, StepRecord
from runtime.values import dump_value
from transpiler.cli import main

HINT = "use the dotted module name (like python -m), run from the project's directory"


def durable(*args: str, cwd: Path) -> Any:
    """Run a command in this process (fast: these are many, and fail early), in ``cwd``; never an
    exception other than the command's exit."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), env={"DURABLE_STORE": None})
    finally:
        os.chdir(before)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(*result.exc_info)))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def store_path(work: Path) -> Path:
    return work / ".durable" / "durable.db"


def new_store(work: Path) -> SQLiteStore:
    store_path(work).parent.mkdir(exist_ok=True)
    return SQLiteStore(store_path(work))


# ============================================================================ bad arguments


DEEP = "[" * 60000 + "]" * 60000


@pytest.mark.parametrize("args, message", [
    (["flows:greet", '["\\ud800"]'], "ARGS_JSON contains a lone surrogate"),
    (["flows:greet", DEEP], "ARGS_JSON is nested too deeply"),
    (["flows:greet", "[" + "9" * 5000 + "]"], "ARGS_JSON has an integer of more than 4300 digits"),
    (["flows:greet", "[NaN]"], "ARGS_JSON contains NaN, which is not portable JSON"),
    (["flows:greet", "[1, -Infinity]"], "ARGS_JSON contains -Infinity"),
    (["flows:greet", "[1e400]"], "ARGS_JSON contains a number too large for a float"),
    (["../x:f"], f"'../x' is not a module name: {HINT}"),
    ([".flows:echo"], f"'.flows' is not a module name: {HINT}"),
    (["a..b:f"], "'a..b' is not a module name"),
    (["pkg/flows.py:greet"], "'pkg/flows.py': no such file"),
    (["flows:greet", '{"args": "a"}'], "ARGS_JSON must be a JSON list of positional arguments"),
    (["flows:greet", '{"kwargs": {"a": 1}, "extra": 1}'], "or an object with both kinds"),
    (["flows:"], f"'flows:': name a function as MODULE:FUNCTION (for example flows:onboarding); {HINT}"),
    ([":f"], "name a function as MODULE:FUNCTION"),
    (["flows:1x"], "'1x' is not a function name"),
], ids=lambda value: str(value)[:40])
def test_bad_run_arguments_exit_2_and_create_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "flows.py").write_text("", encoding="utf-8")
    proc = durable("run", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["flows.py"]


def test_bad_signal_input_exits_2_and_queues_nothing(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        store.create("flows:approval", ["ada"], now=1.0, execution_id="e1")
    for payload, message in [('"\\udfff"', "the payload contains a lone surrogate"),
                             (DEEP, "the payload is nested too deeply"),
                             ('{"n": Infinity}', "the payload contains Infinity"),
                             ("1" * 4400, "the payload has an integer of more than 4300 digits")]:
        proc = durable("signal", "e1", "approve", payload, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    for args in (["signal", "e1", "\udcff"], ["signal", "\udcff", "go"], ["show", "\udcff"]):  # undecodable argv
        proc = durable(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "lone surrogate" in proc.stderr, proc.stderr
    assert raw_sql(store_path(tmp_path), "SELECT COUNT(*) FROM signals") == [(0,)]


# ============================================================================ missing, empty, damaged stores


def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    expected = f"no store at {store_path(tmp_path.resolve())} (the default store is .durable/durable.db"
    for command in (["ls"], ["show", "x"], ["result", "x"], ["signal", "x", "go"], ["cancel", "x"]):
        proc = durable(*command, cwd=tmp_path)
        assert proc.returncode == 2 and expected in proc.stderr and "--store" in proc.stderr, (command, proc.stderr)
    proc = durable("ls", "--store", "sqlite:///typo/store.db", cwd=tmp_path)
    assert proc.returncode == 2 and "no store at" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_store_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    store_path(tmp_path).parent.mkdir()
    store_path(tmp_path).touch()
    for command in (["ls"], ["show", "x"], ["worker"], ["run", "flows:greet"]):
        proc = durable(*command, cwd=tmp_path)
        assert proc.returncode == 2 and "is empty (0 bytes): not a durable store" in proc.stderr, proc.stderr
    assert [(p.name, p.stat().st_size) for p in store_path(tmp_path).parent.iterdir()] == [("durable.db", 0)]


def test_read_only_commands_leave_an_older_store_as_it_is(tmp_path: Path) -> None:
    from test_store import version_1_store

    store_path(tmp_path).parent.mkdir()
    version_1_store(store_path(tmp_path))
    before = store_path(tmp_path).read_bytes()
    assert "old" in durable("ls", cwd=tmp_path).stdout
    assert durable("show", "old", cwd=tmp_path).returncode == 0
    assert durable("result", "old", cwd=tmp_path).returncode == 4
    assert store_path(tmp_path).read_bytes() == before


def test_a_damaged_store_file_is_a_clear_error(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        for i in range(20):
            store.create("flows:greet", ["x" * 500], now=float(i), execution_id=f"e{i}")
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = store_path(tmp_path).read_bytes()
    store_path(tmp_path).write_bytes(data[:4096] + bytes(4096) + data[8192:])  # a zeroed page
    for command in (["ls"], ["show", "e19"], ["result", "e19"], ["cancel", "e19"]):
        proc = durable(*command, cwd=tmp_path)
        assert proc.returncode == 2 and "is damaged (database disk image is malformed)" in proc.stderr, proc.stderr
    store_path(tmp_path).write_bytes(b"not a database" * 500)
    proc = durable("ls", cwd=tmp_path)
    assert proc.returncode == 2 and "is not a SQLite database" in proc.stderr


# ============================================================================ damaged rows, odd values


def _finished(store: SQLiteStore, execution_id: str, value: Any, **fields: Any) -> None:
    e = store.create("flows:greet", ["ada"], now=1.0, execution_id=execution_id)
    store.commit(Change(e.id, e.version, fields={"status": FINISHED, "result": dump_value(value), **fields}), now=2.0)


def test_damaged_rows_are_shown_not_fatal(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        _finished(store, "fine", ["ADA"])
        _finished(store, "no-result", 1)
        store.create("flows:greet", ["bo"], now=3.0, execution_id="bad-args")
        store.commit(Change("bad-args", 1, new_step=StepRecord("bad-args", 0, "flows:shout", b"c", {}, "pending")),
                     now=3.0)
        store.send_signal("bad-args", "go", 1, now=3.0)
        store.create("flows:greet", ["cy"], now=4.0, execution_id="bad-status")
    db = store_path(tmp_path)
    raw_sql(db, "UPDATE executions SET args = 'oops' WHERE id = 'bad-args'")
    raw_sql(db, "UPDATE steps SET policy = 'oops'")
    raw_sql(db, "UPDATE signals SET payload = 'oops'")
    raw_sql(db, "UPDATE executions SET status = 'bogus', function = x'00' WHERE id = 'bad-status'")
    raw_sql(db, "UPDATE executions SET result = 'text' WHERE id = 'no-result'")

    listing = durable("ls", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert "damaged: column 'args' is not valid JSON" in lines["bad-args"]
    assert "column 'status' is 'bogus'" in lines["bad-status"] and "damaged" not in lines["fine"]
    listed = {e["id"]: e for e in json_of(durable("ls", "--json", cwd=tmp_path))}
    assert listed["bad-status"]["status"] is None and "column 'function' holds a blob" in listed["bad-status"]["damage"]
    assert listed["fine"]["damage"] is None

    shown = durable("show", "bad-args", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "damaged   column 'args' is not valid JSON" in shown.stdout
    assert "damaged: column 'policy' is not valid JSON" in shown.stdout  # the step
    assert "damaged: column 'payload' is not valid JSON" in shown.stdout  # the signal
    info = json_of(durable("show", "bad-status", "--json", cwd=tmp_path))
    assert info["status"] is None and "column 'status'" in info["damage"]
    assert durable("show", "bad-status", cwd=tmp_path).returncode == 0

    result = durable("result", "no-result", cwd=tmp_path)
    assert result.returncode == 2 and "column 'result' holds text" in result.stderr, result.stderr
    assert json_of(durable("result", "fine", cwd=tmp_path)) == ["ADA"]
    assert durable("result", "bad-status", cwd=tmp_path).returncode == 2

    refused = durable("cancel", "bad-args", cwd=tmp_path)
    assert refused.returncode == 2 and "column 'args'" in refused.stderr and "--force" in refused.stderr
    forced = durable("cancel", "bad-args", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert raw_sql(db, "SELECT status FROM executions WHERE id = 'bad-args'") == [("cancelled",)]


def json_of(proc: Any) -> Any:
    """The JSON a command printed; integers too long for int() as their digits (strings)."""
    import json

    assert proc.returncode in (0, 4), proc.stderr
    return json.loads(proc.stdout, parse_int=lambda text: int(text) if len(text) < 4000 else text)


def test_odd_times_and_huge_ints_are_printed(tmp_path: Path) -> None:
    big = 10 ** 5001 + 7
    with new_store(tmp_path) as store:
        for n, wake_at in enumerate([float("inf"), 1e300, -5.0]):
            e = store.create("flows:approval", ["ada"], now=1.0, execution_id=f"t{n}")
            store.commit(Change(e.id, 1, fields={"status": WAITING, "waiting_for": "go", "wake_at": wake_at}),
                         now=wake_at)
        _finished(store, "big", [big, -big])
        _finished(store, "huge", 10 ** 1_000_001)
    raw_sql(store_path(tmp_path), "UPDATE executions SET progress = ? WHERE id = 'big'",
        ('{"done": 1%s7}' % ("0" * 5000),))
    listing = durable("ls", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "inf (not a valid time)" in listing.stdout and "1e+300 (not a valid time)" in listing.stdout
    assert "-5.0 (not a valid time)" in listing.stdout
    shown = durable("show", "t0", cwd=tmp_path)
    assert shown.returncode == 0 and "updated   inf (not a valid time)" in shown.stdout, shown.stderr
    digits = "1" + "0" * 5000 + "7"
    result = durable("result", "big", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"[{digits}, -{digits}]", result.stderr
    info = json_of(durable("show", "big", "--json", cwd=tmp_path))
    assert info["result"] == [digits, f"-{digits}"] and info["progress"] == {"done": digits}
    assert json_of(durable("ls", "--json", cwd=tmp_path))[3]["progress"] == {"done": digits}
    assert durable("result", "huge", cwd=tmp_path).stdout.strip() == '"<int with 1000002 digits>"'
    listed = json_of(durable("ls", "--json", cwd=tmp_path))
    assert [e["wake_at"] for e in listed[:3]] == ["Infinity", 1e300, -5.0]


def test_times_that_are_no_date_are_shown_as_numbers() -> None:
    from runtime.programs.cli import _when

    assert _when(0.0) == "1970-01-01 00:00:00 UTC" and _when(None) == "-"
    for t in (float("nan"), float("inf"), float("-inf"), 1e300, -1.0):
        assert _when(t) == f"{t!r} (not a valid time)"


def test_a_worker_grace_out_of_range_is_refused_before_anything_runs(tmp_path: Path) -> None:
    for bad in ("-1", "nan-ish", "4000"):
        proc = durable("worker", "--grace", bad, cwd=tmp_path)
        assert proc.returncode == 2 and "--grace" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []  # (no store made)
