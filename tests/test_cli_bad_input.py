"""The program commands on bad input: a clear message and exit 2, never a traceback or exit 123."""
from __future__ import annotations

import os
import sqlite3
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from runtime.store import SQLiteStore
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


def raw(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


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
    (["flows.py:greet"], "'flows.py' is not a module name: leave out the .py"),
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
    assert raw(store_path(tmp_path), "SELECT COUNT(*) FROM signals") == [(0,)]
