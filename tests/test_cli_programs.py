"""The commands for durable programs (README: "Durable programs"): run, worker, ls, show, signal,
cancel, result, prune — each in a real interpreter on a real SQLite store, with its bad inputs.

Exit codes: 0 success (``result``/``run``: finished), 2 bad input (nothing changed in the store),
4 not finished yet, 5 failed or cancelled.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest

from crafting import FIRST_VALUE_SLOT, shared_tuple_dag

ROOT = Path(__file__).resolve().parent.parent

FLOWS = textwrap.dedent('''
    from runtime import durable, sleep, step, wait, checkpoint


    def shout(text):
        return text.upper()


    @durable
    def greet(name, times=1):
        out = []
        for i in range(times):
            out.append((yield step(shout, name)))
            yield {"greeted": i + 1}
        return out


    @durable
    def approval(user):
        decision = yield wait("approve", timeout=600)
        return {"user": user, "decision": decision}


    @durable
    def napper():
        yield sleep(0.3)
        return "awake"


    @durable
    def broken():
        yield checkpoint()
        raise RuntimeError("broken on purpose\\nhint: it always is")


    @durable
    def guarded():
        try:
            yield wait("never")
        finally:
            with open("finally.txt", "w") as fh:
                fh.write("closed")


    def plain():
        return 1


    def slow(seconds):
        import time
        with open("slow.txt", "a") as fh:
            fh.write("started\\n")
        time.sleep(seconds)
        return seconds


    @durable
    def slowpoke(seconds):
        took = yield step(slow, seconds)
        return took


    from runtime import gather, race


    def unreachable(user):
        raise ConnectionError(f"no answer for {user}")


    @durable
    async def fanout(user):
        first = await gather(step(shout, user))
        lost = await race(step(shout, "late"), sleep(0))  # (the sleep wins: the step is abandoned)
        more = await gather(step(unreachable, user).retry(attempts=3, backoff=60), sleep(7200),
                            race(wait("go", timeout=600), sleep(9000)))
        return [first, lost, more]
''')


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    (tmp_path / "miscompiled.py").write_text("from runtime import durable\n\n\n@durable\ndef g():\n    _dg_x = 1\n"
                                             "    yield _dg_x\n", encoding="utf-8")
    return tmp_path


def durable(*args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    environment.pop("DURABLE_STORE", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", *args], cwd=str(cwd),
                          env=environment, capture_output=True, text=True, timeout=timeout)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def rows(work: Path) -> list[tuple]:
    db = work / ".durable" / "durable.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, status, version FROM executions ORDER BY created_at").fetchall()


def start_worker(work: Path, *args: str) -> subprocess.Popen:
    """`durable worker --poll 0.05` in the background (its output: text pipes)."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    environment.pop("DURABLE_STORE", None)
    return subprocess.Popen([sys.executable, "-c", "from transpiler.cli import run; run()", "worker",
                             "--poll", "0.05", *args], cwd=str(work), env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def work_until_finished(work: Path, *execution_ids: str) -> tuple[int, str]:
    """Run `durable worker` until the executions have ended (finished, failed or cancelled), then stop
    it with SIGTERM; returns the worker's exit code and standard error."""
    worker = start_worker(work)
    try:
        deadline = time.time() + 30
        for execution_id in execution_ids:
            while time.time() < deadline and durable("result", execution_id, cwd=work).returncode not in (0, 5):
                time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    return worker.returncode, err


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def db_rows(work: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:
        return conn.execute(sql, params).fetchall()


def store_of(work: Path):
    from runtime.programs.store import open_store

    return open_store(str(work / ".durable" / "durable.db"), create=False)


# ============================================================================ run


def test_run_runs_to_the_end_and_prints_the_result(work: Path):
    proc = durable("run", "flows:greet", '["ada", 2]', cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["ADA", "ADA"]
    assert "step 0 flows:shout" in proc.stderr and "progress" in proc.stderr
    assert (work / ".durable" / "durable.db").exists()  # the embedded default store
    [(_, status, _)] = rows(work)
    assert status == "finished"


def test_run_detach_prints_only_the_id_and_a_worker_runs_it(work: Path):
    proc = durable("run", "flows:greet", '["bo"]', "--detach", cwd=work)
    assert proc.returncode == 0, proc.stderr
    execution_id = proc.stdout.strip()
    assert execution_id and "\n" not in execution_id
    assert durable("result", execution_id, cwd=work).returncode == 4  # not run yet
    returncode, err = work_until_finished(work, execution_id)
    assert returncode == 0, err
    assert re.search(r"stopped after advancing executions (1 time|\d+ times); released \d+ leases?$",
                     err.strip()) and "Traceback" not in err
    result = durable("result", execution_id, cwd=work)
    assert result.returncode == 0 and json.loads(result.stdout) == ["BO"]


@pytest.mark.parametrize("args, message", [
    (["flows:nope"], "has no function 'nope'"),
    (["flows:plain"], "is not a @durable generator function"),
    (["nosuchmodule:f"], "cannot import module 'nosuchmodule'"),
    (["flows"], "MODULE:FUNCTION"),
    (["flows:greet", '["a", 1, 2]'], "do not fit"),
    (["flows:greet", "not json"], "ARGS_JSON is not valid JSON"),
    (["flows:greet", '{"name": "a"}'], "must be a JSON list"),
    (["miscompiled:g"], "miscompiled.py:6:5: error: DG002"),  # Runner.start's ProgramError: a usage error
])
def test_run_bad_input_exits_2_and_changes_nothing(work: Path, args, message):
    proc = durable("run", *args, cwd=work)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr and "internal error" not in proc.stderr
    no_traceback(proc)
    assert rows(work) == []


def test_run_a_program_that_waits_exits_4_then_signal_and_result(work: Path):
    proc = durable("run", "flows:approval", '["ada"]', cwd=work)
    assert proc.returncode == 4, proc.stderr
    assert "waiting for signal 'approve'" in proc.stderr
    [(execution_id, status, _)] = rows(work)
    assert status == "waiting"
    result = durable("result", execution_id, cwd=work)
    assert result.returncode == 4 and f"execution {execution_id} is waiting for signal 'approve' until" in result.stderr
    typo = durable("signal", execution_id, "aprove", cwd=work)  # queued (it may wait for it later), with a warning
    assert typo.returncode == 0 and (f"warning: execution {execution_id} is waiting for signal 'approve'; 'aprove' "
                                     "is queued until the program waits for it") in typo.stderr, typo.stderr
    sent = durable("signal", execution_id, "approve", '{"ok": true}', cwd=work)
    assert sent.returncode == 0 and "warning" not in sent.stderr, sent.stderr
    work_until_finished(work, execution_id)  # the signal makes it due: a worker continues it
    result = durable("result", execution_id, cwd=work)
    assert result.returncode == 0 and json.loads(result.stdout) == {"user": "ada", "decision": {"ok": True}}


def test_a_wait_for_several_signals_is_shown_with_their_names(work: Path):
    from runtime.programs.store import Change, open_store

    with open_store(str(work / ".durable" / "durable.db")) as store:
        e = store.create("flows:approval", ["ada"], now=1.0)
        store.commit(Change(e.id, 1, fields={"status": "waiting", "waits": ["approve", "reject"]}), now=2.0)
    listed = durable("ls", cwd=work)
    assert listed.returncode == 0 and "signals 'approve', 'reject'" in listed.stdout, listed.stdout
    shown = durable("show", e.id, cwd=work)
    assert shown.returncode == 0 and "status    waiting (signals 'approve', 'reject')" in shown.stdout, shown.stdout
    assert json.loads(durable("ls", "--json", cwd=work).stdout)[0]["waits"] == ["approve", "reject"]
    typo = durable("signal", e.id, "aprove", cwd=work)
    assert "is waiting for signals 'approve', 'reject'; 'aprove' is queued" in typo.stderr, typo.stderr
    sent = durable("signal", e.id, "reject", cwd=work)
    assert sent.returncode == 0 and "warning" not in sent.stderr, sent.stderr


def test_failed_program_exits_5_and_result_prints_the_exception_and_on_request_the_traceback(work: Path):
    proc = durable("run", "flows:broken", cwd=work)
    assert proc.returncode == 5
    [(execution_id, status, _)] = rows(work)
    summary = f"execution {execution_id} failed: RuntimeError: broken on purpose\n  hint: it always is\n"
    assert summary in proc.stderr, proc.stderr  # the exception, not its last line alone
    assert f"[{execution_id}] failed: RuntimeError: broken on purpose\n  hint: it always is\n" in proc.stderr
    result = durable("result", execution_id, cwd=work)
    assert result.returncode == 5 and result.stdout == ""
    assert result.stderr == summary + f"(the traceback: durable result {execution_id} --traceback)\n"
    full = durable("result", execution_id, "--traceback", cwd=work)
    assert full.returncode == 5 and full.stderr.startswith(summary + "Traceback (most recent call last):\n")
    assert 'raise RuntimeError("broken on purpose\\nhint: it always is")' in full.stderr, full.stderr


def test_run_takes_the_path_of_a_file_and_keyword_arguments_and_ls_show_display_them(work: Path):
    (work / "pkg").mkdir()
    (work / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (work / "pkg" / "flows.py").write_text(FLOWS, encoding="utf-8")
    proc = durable("run", "pkg/flows.py:greet", '{"args": ["ada"], "kwargs": {"times": 2}}', cwd=work)
    assert proc.returncode == 0 and json.loads(proc.stdout) == ["ADA", "ADA"], proc.stderr
    [(execution_id, _, _)] = rows(work)
    shown = durable("show", execution_id, cwd=work)
    assert shown.stdout.startswith(f'execution {execution_id}: pkg.flows:greet("ada", times=2)\n'), shown.stdout
    [listed] = json.loads(durable("ls", "--json", cwd=work).stdout)
    assert (listed["function"], listed["args"], listed["kwargs"]) == ("pkg.flows:greet", ["ada"], {"times": 2})
    outside = durable("run", "../flows.py:greet", '["bo"]', cwd=work / "pkg")
    assert outside.returncode == 2 and "'../flows.py' is outside the current directory" in outside.stderr
    assert "use the dotted module name" in outside.stderr and not (work / "pkg" / ".durable").exists()


# ============================================================================ ls, show


def test_ls_and_show_human_and_json(work: Path):
    durable("run", "flows:greet", '["ada"]', cwd=work)
    durable("run", "flows:approval", '["bo"]', cwd=work)
    listing = durable("ls", cwd=work)
    assert listing.returncode == 0 and "finished" in listing.stdout and "waiting" in listing.stdout
    only = json.loads(durable("ls", "--status", "waiting", "--json", cwd=work).stdout)
    assert [e["function"] for e in only] == ["flows:approval"]
    execution_id = only[0]["id"]
    shown = durable("show", execution_id, cwd=work)
    assert shown.returncode == 0, shown.stderr
    line = [n for n, text in enumerate(FLOWS.splitlines(), 1) if 'decision = yield wait("approve"' in text][0]
    [where] = [text for text in shown.stdout.splitlines() if "suspended in flows:approval" in text]
    assert f"at line {line} " in where and where.endswith(': decision = yield wait("approve", timeout=600)'), where
    assert "user = 'bo'" in shown.stdout
    info = json.loads(durable("show", execution_id, "--json", cwd=work).stdout)
    assert info["status"] == "waiting" and info["waiting_for"] == "approve"
    assert info["suspended_at"][0]["line"] == line
    assert info["suspended_at"][0]["source"] == 'decision = yield wait("approve", timeout=600)'
    finished = json.loads(durable("ls", "--status", "finished", "--json", cwd=work).stdout)[0]["id"]
    info = json.loads(durable("show", finished, "--json", cwd=work).stdout)
    assert info["result"] == ["ADA"] and [s["status"] for s in info["steps"]] == ["done"]


def test_show_lists_the_parts_of_a_gather_and_lines_up_an_abandoned_step(work: Path):
    from runtime.programs.cli import _composite_lines, _span, _when

    run = durable("run", "flows:fanout", '["ada"]', cwd=work)
    assert run.returncode == 4, run.stdout + run.stderr
    [execution] = json.loads(durable("ls", "--json", cwd=work).stdout)
    store = store_of(work)
    try:
        row = store.get(execution["id"])
    finally:
        store.close()
    step_part, sleep_part, wait_part, later_part = row.request["parts"]
    assert [p["key"] for p in row.request["parts"]] == [[0], [1], [2, 0], [2, 1]]
    assert row.wake_at == step_part["retry_at"] < wait_part["timeout_at"]  # (the status shows the earliest)
    shown = durable("show", execution["id"], cwd=work)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = lines.index("  awaiting  runtime.gather/race of 4 parts:")
    assert lines[start + 1:start + 5] == [
        f"    part 0    step 2 flows:unreachable, retry at {_when(step_part['retry_at'])}",
        f"    part 1    sleep until {_when(sleep_part['wake_at'])}",
        f"    part 2.0  wait for signal 'go' until {_when(wait_part['timeout_at'])} (timeout {_span(600)})",
        f"    part 2.1  sleep until {_when(later_part['wake_at'])}"], shown.stdout
    assert f"  status    waiting (signal 'go' until {_when(step_part['retry_at'])})" in lines
    steps = [text for text in lines if text.startswith("  step ")]
    assert [text.split()[3] for text in steps] == ["done", "abandoned", "pending"], steps
    assert len({text.index(" attempts ") for text in steps}) == 1, steps  # the columns line up
    assert json.loads(durable("show", execution["id"], "--json", cwd=work).stdout)["request"] == row.request
    # a checkpoint part (stored until it is delivered) and parts a damaged row may hold
    assert _composite_lines({"kind": "all", "parts": [{"key": [3], "kind": "checkpoint"},
                                                      {"key": [1, 2], "kind": "wait", "signal": "x", "timeout": None,
                                                       "timeout_at": None}, {"key": "x", "kind": "odd"}]}) == [
        "  awaiting  runtime.gather/race of 3 parts:", "    part 3    checkpoint",
        "    part 1.2  wait for signal 'x', no timeout", '    part ?    {"key": "x", "kind": "odd"}']
    assert _composite_lines({"kind": "all"}) == [
        '  awaiting  runtime.gather/race, with no list of parts: {"kind": "all"}']


def test_show_says_what_each_local_the_compiler_made_holds(work: Path):
    durable("run", "flows:guarded", cwd=work)
    [execution] = json.loads(durable("ls", "--json", cwd=work).stdout)
    shown = durable("show", execution["id"], cwd=work)
    kept = [text for text in shown.stdout.splitlines() if text.strip().startswith("_dg_")]
    # (show reads the snapshot without importing the program: the note is the inspector's, by kind)
    assert kept and all(text.endswith("(how a `try` statement was left, for its `finally`)")
                        for text in kept), shown.stdout


def test_show_and_result_of_an_unknown_id_exit_2(work: Path):
    commands = (["show", "nope"], ["result", "nope"], ["signal", "nope", "x"], ["cancel", "nope"])
    for command in commands:  # no store yet: none is created
        proc = durable(*command, cwd=work)
        assert proc.returncode == 2 and "no store at" in proc.stderr, (command, proc.stderr)
        no_traceback(proc)
    assert not (work / ".durable").exists()
    durable("run", "flows:greet", '["x"]', "--detach", cwd=work)
    for command in commands:
        proc = durable(*command, cwd=work)
        assert proc.returncode == 2 and "no execution 'nope'" in proc.stderr, (command, proc.stderr)
        no_traceback(proc)


# ============================================================================ signal, cancel


def test_signal_bad_input(work: Path):
    durable("run", "flows:greet", '["ada"]', cwd=work)
    [(finished_id, _, version)] = rows(work)
    proc = durable("signal", finished_id, "approve", cwd=work)
    assert proc.returncode == 2 and "finished" in proc.stderr
    durable("run", "flows:approval", '["bo"]', cwd=work)
    waiting_id = rows(work)[1][0]
    bad = durable("signal", waiting_id, "approve", "{not json", cwd=work)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM signals").fetchone()[0] == 0


def test_cancel_runs_finally_blocks_and_records_cancelled(work: Path):
    durable("run", "flows:guarded", cwd=work)
    [(execution_id, status, _)] = rows(work)
    assert status == "waiting"
    proc = durable("cancel", execution_id, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"[{execution_id}] cancelled\nexecution {execution_id} was cancelled\n"
    assert (work / "finally.txt").read_text() == "closed"
    assert rows(work)[0][1] == "cancelled"
    result = durable("result", execution_id, cwd=work)
    assert result.returncode == 5 and result.stderr == f"execution {execution_id} was cancelled\n"
    again = durable("cancel", execution_id, cwd=work)
    assert again.returncode == 2 and "cancelled" in again.stderr


# ============================================================================ stores


def test_store_url_option_and_environment(work: Path):
    proc = durable("run", "flows:greet", '["x"]', "--store", "sqlite:///other/store.db", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "other" / "store.db").exists() and not (work / ".durable").exists()
    listing = durable("ls", "--json", cwd=work, env={"DURABLE_STORE": "sqlite:///other/store.db"})
    assert len(json.loads(listing.stdout)) == 1


def test_postgres_urls_and_newer_schemas_are_refused(work: Path, pg_url: str):
    proc = durable("ls", "--store", "postgresql://me:s3cret@127.0.0.1:1/db", cwd=work)  # nothing on port 1
    assert proc.returncode == 2 and "cannot connect to PostgreSQL at 127.0.0.1:1" in proc.stderr, proc.stderr
    assert "postgresql://me:***@127.0.0.1:1/db" in proc.stderr and "s3cret" not in proc.stderr
    no_traceback(proc)
    schema = pg_url.rpartition("schema=")[2]
    for command in ("ls", "show", "result"):  # reading a store that is not there creates nothing
        proc = durable(command, *(["abc"] if command != "ls" else []), "--store", pg_url, cwd=work)
        assert proc.returncode == 2 and f"no store at {pg_url} (schema '{schema}'" in proc.stderr, proc.stderr
        no_traceback(proc)
    proc = durable("run", "flows:greet", '["pg"]', "--store", pg_url, cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = durable("ls", "--store", pg_url, cwd=work)
    assert proc.returncode == 0 and "flows:greet" in proc.stdout and "finished" in proc.stdout, proc.stderr
    import psycopg

    with psycopg.connect(pg_url.rpartition("?")[0], autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".meta SET value = \'999\' WHERE key = \'schema_version\'')
        proc = durable("ls", "--store", pg_url, cwd=work)
        assert proc.returncode == 2 and "has schema version 999, newer" in proc.stderr, proc.stderr
        no_traceback(proc)
        assert conn.execute(f'SELECT value FROM "{schema}".meta').fetchall() == [("999",)]
    durable("run", "flows:greet", '["x"]', cwd=work)
    db = work / ".durable" / "durable.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the main file, so its bytes are final
    conn.close()
    before = db.read_bytes()
    proc = durable("ls", cwd=work)
    assert proc.returncode == 2 and "newer" in proc.stderr, proc.stderr
    no_traceback(proc)
    assert db.read_bytes() == before


def test_cancel_refuses_a_program_whose_code_changed_unless_forced(work: Path):
    durable("run", "flows:guarded", cwd=work)
    [(execution_id, _, version)] = rows(work)
    (work / "flows.py").write_text(FLOWS.replace('yield wait("never")', 'yield wait("never", timeout=5)'),
                                   encoding="utf-8")
    proc = durable("cancel", execution_id, cwd=work)
    assert proc.returncode == 2 and "PointMismatchError" in proc.stderr and "--force" in proc.stderr
    no_traceback(proc)
    assert rows(work) == [(execution_id, "waiting", version)]  # nothing changed
    forced = durable("cancel", execution_id, "--force", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert rows(work)[0][1] == "cancelled" and not (work / "finally.txt").exists()


# ============================================================================ hostile rows (docs/security.md)


def _put_snapshot(work: Path, execution_id: str, snapshot: bytes) -> None:
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:
        conn.execute("UPDATE executions SET snapshot = ?, mac = NULL WHERE id = ?", (snapshot, execution_id))


def _dag_snapshot(real: bytes) -> bytes:
    """``real`` with its first local replaced by a set holding T(64) = (T(63), T(63)): 2**64 to hash."""
    envelope = msgpack.unpackb(real, raw=False)
    dag = shared_tuple_dag(63, FIRST_VALUE_SLOT + 1)  # inside the list local: T(0) takes the next slot
    envelope[2][5][0] = [1, *dag, [4, [0, FIRST_VALUE_SLOT + 1 + 63]]]
    return msgpack.packb(envelope, use_bin_type=True)


def test_commands_keep_working_on_a_run_whose_snapshot_would_hang_a_reader(work: Path):
    """A 564-byte snapshot hung every worker that claimed it, and show, cancel and cancel --force;
    only hand-written SQL removed it. Now each command answers at once and the run fails with the reason."""
    ex_id = durable("run", "flows:approval", '["ada"]', "--detach", cwd=work).stdout.strip()
    assert durable("run", "flows:approval", '["bob"]', cwd=work).returncode == 4  # suspended, with a snapshot
    real = sqlite3.connect(work / ".durable" / "durable.db").execute(
        "SELECT snapshot FROM executions WHERE snapshot IS NOT NULL").fetchone()[0]
    _put_snapshot(work, ex_id, _dag_snapshot(real))
    show = durable("show", ex_id, cwd=work, timeout=20)
    assert show.returncode == 0 and "unreadable snapshot" in show.stdout and "hashing the elements" in show.stdout, \
        show.stdout + show.stderr
    cancel = durable("cancel", ex_id, cwd=work, timeout=20)
    assert cancel.returncode == 2 and "--force" in cancel.stderr, cancel.stderr
    forced = durable("cancel", "--force", ex_id, cwd=work, timeout=20)
    assert forced.returncode == 0 and "cancelled" in forced.stderr, forced.stderr
    no_traceback(show), no_traceback(cancel), no_traceback(forced)


def test_a_worker_with_the_key_in_its_environment_does_not_run_a_forged_snapshot(work: Path):
    key = {"DURABLE_SIGNING_KEY": "k" * 32}
    ex_id = durable("run", "flows:approval", '["ada"]', cwd=work, env=key).stderr.split("]")[0].strip("[")
    forged = msgpack.unpackb(sqlite3.connect(work / ".durable" / "durable.db").execute(
        "SELECT snapshot FROM executions WHERE id = ?", (ex_id,)).fetchone()[0], raw=False)[3]  # the unsigned payload
    _put_snapshot(work, ex_id, forged)
    assert durable("signal", ex_id, "approve", '"yes"', cwd=work, env=key).returncode == 0
    worker = subprocess.Popen([sys.executable, "-c", "from transpiler.cli import run; run()", "worker", "--poll",
                               "0.05"], cwd=str(work), env=dict(os.environ, PYTHONPATH=str(ROOT), **key),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and "trying again every" not in \
                durable("show", ex_id, cwd=work, env=key).stdout:  # the worker's note
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    shown = durable("show", ex_id, cwd=work, env=key).stdout
    assert re.search(r"^  set aside until .* \(in \d+\.\d s\): .*is not signed, and a signing key is configured",
                     shown, re.M), shown  # the worker's note, as the reason it is held
    assert durable("result", ex_id, cwd=work, env=key).returncode == 4  # not run


# ============================================================================ worker: log lines, takeover, SIGTERM

STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"


def _stamp_time(line: str) -> float:
    from datetime import datetime, timezone

    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def test_worker_logs_one_line_per_event_after_its_time(work: Path):
    greet = durable("run", "flows:greet", '["bo"]', "--detach", cwd=work).stdout.strip()
    broken = durable("run", "flows:broken", "--detach", cwd=work).stdout.strip()
    before = time.time()
    returncode, err = work_until_finished(work, greet, broken)
    after = time.time()
    assert returncode == 0, err
    lines = err.splitlines()
    assert all(re.match(STAMP + r" (durable worker worker-\d+-[0-9a-f]+: |\[[0-9a-f]+\] \S)", line)
               for line in lines), err
    times = [_stamp_time(line) for line in lines]
    assert before - 1 <= times[0] and times[-1] <= after + 1 and times == sorted(times), err
    assert re.match(STAMP + r" durable worker worker-\d+-[0-9a-f]+: sqlite:///.*, concurrency 8, in flight 100, lease 30 s$",
                    lines[0]), lines[0]
    assert any(line.endswith(f" [{greet}] step 0 flows:shout attempt 1") for line in lines), err
    assert any(line.endswith(f' [{greet}] finished: ["BO"]') for line in lines), err
    # an event of several lines is still one line: its line breaks are written \n
    assert any(line.endswith(f" [{broken}] failed: RuntimeError: broken on purpose\\nhint: it always is")
               for line in lines), err
    assert re.search(r" SIGTERM: stopping: no new claims, finishing the current transitions", err), err
    assert re.match(STAMP + r" durable worker worker-\d+-[0-9a-f]+: stopped after advancing executions \d+ "
                    r"times?; released 0 leases$", lines[-1]), lines[-1]


def test_run_prints_events_without_times(work: Path):
    proc = durable("run", "flows:greet", '["ada"]', cwd=work)
    [(execution_id, _, _)] = rows(work)
    assert proc.returncode == 0 and proc.stderr.startswith(f"[{execution_id}] created: flows:greet(\"ada\")\n"), \
        proc.stderr
    assert not re.search(STAMP, proc.stderr)


def test_worker_logs_a_takeover_of_a_run_whose_lease_lapsed(work: Path):
    execution_id = durable("run", "flows:greet", '["ada"]', "--detach", cwd=work).stdout.strip()
    store = store_of(work)
    try:  # a worker that died 90 s ago while it held the run
        assert store.claim("worker-1-dead00-0", now=time.time() - 100, lease=10, execution_id=execution_id)
    finally:
        store.close()
    assert durable("show", execution_id, cwd=work).returncode == 0
    returncode, err = work_until_finished(work, execution_id)
    assert returncode == 0, err
    [line] = [line for line in err.splitlines() if "] takeover" in line]
    assert re.fullmatch(STAMP + rf" \[{execution_id}\] takeover: took over from worker-1-dead00-0 \(its lease "
                        r"lapsed.*\)", line), line
    assert json.loads(durable("result", execution_id, cwd=work).stdout) == ["ADA"]


def _leases(work: Path) -> list[tuple[str, str | None]]:
    return db_rows(work, "SELECT id, lease_owner FROM executions ORDER BY created_at")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_lets_the_running_step_end_releases_the_leases_and_exits_0(work: Path, signum: int):
    slow = durable("run", "flows:slowpoke", "[2]", "--detach", cwd=work).stdout.strip()
    waiting = durable("run", "flows:approval", '["ada"]', cwd=work)
    assert waiting.returncode == 4, waiting.stderr
    worker = start_worker(work)
    try:
        wait_for(lambda: (work / "slow.txt").exists(), "the step to start")
        [owner] = [owner for _, owner in _leases(work) if owner]
        assert owner.startswith(f"worker-{worker.pid}-"), _leases(work)
        sent = time.time()
        worker.send_signal(signum)
        late = durable("run", "flows:greet", '["late"]', "--detach", cwd=work).stdout.strip()
        _, err = worker.communicate(timeout=30)
        stopped = time.time() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert stopped < 10, (stopped, err)  # the step's 2 s, then out: not a lease's 30 s
    assert "Traceback" not in err, err
    name = signal.Signals(signum).name
    assert f": {name}: stopping: no new claims, finishing the current transitions" in err, err
    assert re.search(r"stopped after advancing executions \d+ times?; released \d+ leases?$", err.strip()), err
    assert [owner for _, owner in _leases(work)] == [None, None, None]  # another worker need not wait for a lease
    assert db_rows(work, "SELECT execution_id, status FROM steps") == [(slow, "done")]  # it ended, recorded
    assert late not in err and db_rows(work, "SELECT status, version FROM executions WHERE id = ?", (late,)) == \
        [("pending", 1)]  # asked to stop, the worker claimed nothing more
    returncode, err = work_until_finished(work, slow, late)
    assert returncode == 0, err
    assert json.loads(durable("result", slow, cwd=work).stdout) == 2
    assert (work / "slow.txt").read_text() == "started\n"  # the step did not run again


def test_a_second_stop_signal_exits_at_once(work: Path):
    durable("run", "flows:slowpoke", "[20]", "--detach", cwd=work)
    worker = start_worker(work)
    try:
        wait_for(lambda: (work / "slow.txt").exists(), "the step to start")
        sent = time.time()
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the first one is handled: the worker waits for the step
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert time.time() - sent < 10 and worker.returncode == 128 + signal.SIGTERM, (worker.returncode, err)
    assert "SIGTERM again: exiting at once; its leases lapse within 30 s" in err, err


# ============================================================================ show, ls: leases, runs set aside

WHEN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC"


def test_show_and_ls_display_leases_and_runs_set_aside(work: Path):
    from runtime.programs.store import Change

    leased, lapsed, held, plain = (durable("run", "flows:greet", f'["{name}"]', "--detach", cwd=work).stdout.strip()
                                   for name in ("ada", "bo", "cy", "di"))
    reason = "cannot restore: IncompatibleCodeError: flows:greet changed\nline two of the reason"
    now = time.time()
    store = store_of(work)
    try:
        store.claim("worker-77-abcdef-0", now=now, lease=3600, execution_id=leased)
        store.claim("worker-78-dead00-1", now=now - 100, lease=10, execution_id=lapsed)  # lapsed 90 s ago
        claimed = store.claim("worker-79-aaaaaa-0", now=now, lease=30, execution_id=held)
        store.commit(Change(held, claimed.version, owner="worker-79-aaaaaa-0", release=True,
                            fields={"held_until": now + 600, "error": reason}), now=now)
    finally:
        store.close()

    shown = durable("show", leased, cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^  lease     worker-77-abcdef-0 until {WHEN} \(in 60\.0 min\)$", shown.stdout, re.M), shown.stdout
    assert "set aside" not in shown.stdout
    info = json.loads(durable("show", leased, "--json", cwd=work).stdout)
    assert info["lease"] == {"owner": "worker-77-abcdef-0", "until": pytest.approx(now + 3600), "lapsed": False}
    assert info["set_aside"] is None

    shown = durable("show", lapsed, cwd=work).stdout
    assert re.search(rf"^  lease     worker-78-dead00-1 until {WHEN} \(lapsed 9\d\.\d s ago: another worker may take it "
                     r"over\)$", shown, re.M), shown
    assert json.loads(durable("show", lapsed, "--json", cwd=work).stdout)["lease"]["lapsed"] is True

    shown = durable("show", held, cwd=work).stdout
    assert re.search(rf"^  set aside until {WHEN} \(in (10\.0|9\.9) min\): cannot restore: IncompatibleCodeError: "
                     r"flows:greet changed\n            line two of the reason$", shown, re.M), shown
    assert "  error " not in shown and "  lease " not in shown and shown.count("IncompatibleCodeError") == 1, shown
    info = json.loads(durable("show", held, "--json", cwd=work).stdout)
    assert info["set_aside"] == {"until": pytest.approx(now + 600), "reason": reason} and info["lease"] is None
    assert info["error"] == reason

    plain_info = json.loads(durable("show", plain, "--json", cwd=work).stdout)
    assert plain_info["lease"] is None and plain_info["set_aside"] is None
    assert "  lease " not in durable("show", plain, cwd=work).stdout

    listing = durable("ls", cwd=work).stdout.splitlines()
    [held_line] = [line for line in listing if line.startswith(held)]
    assert re.search(rf"pending .* flows:greet +- +- +set aside until {WHEN}$", held_line), held_line  # VERSION, POINT
    assert not any("set aside" in line for line in listing if not line.startswith(held)), listing
    listed = {e["id"]: e for e in json.loads(durable("ls", "--json", cwd=work).stdout)}
    assert listed[held]["set_aside"] == {"until": pytest.approx(now + 600), "reason": reason}
    assert listed[leased]["lease"]["owner"] == "worker-77-abcdef-0" and listed[plain]["lease"] is None
    result = durable("result", held, cwd=work)
    assert result.returncode == 4 and re.fullmatch(rf"execution {held} is pending, set aside until {WHEN}\n",
                                                   result.stderr), result.stderr


# ============================================================================ prune

DAY = 86400.0


def _age(work: Path, execution_id: str, days: float) -> None:
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:
        conn.execute("UPDATE executions SET updated_at = updated_at - ? WHERE id = ?", (days * DAY, execution_id))


def _counts(work: Path) -> tuple[int, int, int]:
    return tuple(db_rows(work, f"SELECT COUNT(*) FROM {table}")[0][0]  # type: ignore[return-value]
                 for table in ("executions", "steps", "signals"))


@pytest.fixture
def ended(work: Path) -> dict[str, str]:
    """Runs of every kind, those named old_* last updated 40 days ago: a finished one with a step, one
    that consumed a signal, a failed one, a cancelled one, and one still waiting (with a queued signal);
    and a run that finished now."""
    ids: dict[str, str] = {}
    durable("run", "flows:greet", '["ada"]', cwd=work)
    ids["old_finished"] = rows(work)[-1][0]
    durable("run", "flows:approval", '["bo"]', cwd=work)
    ids["old_signalled"] = rows(work)[-1][0]
    assert durable("signal", ids["old_signalled"], "approve", "true", cwd=work).returncode == 0
    assert work_until_finished(work, ids["old_signalled"])[0] == 0
    durable("run", "flows:broken", cwd=work)
    ids["old_failed"] = rows(work)[-1][0]
    durable("run", "flows:guarded", cwd=work)
    ids["old_cancelled"] = rows(work)[-1][0]
    assert durable("cancel", ids["old_cancelled"], cwd=work).returncode == 0
    durable("run", "flows:approval", '["cy"]', cwd=work)
    ids["old_waiting"] = rows(work)[-1][0]
    assert durable("signal", ids["old_waiting"], "other", cwd=work).returncode == 0
    durable("run", "flows:greet", '["di"]', cwd=work)
    ids["recent_finished"] = rows(work)[-1][0]
    for name, execution_id in ids.items():
        if name.startswith("old_"):
            _age(work, execution_id, 40)
    assert {status for _, status, _ in rows(work)} == {"finished", "failed", "cancelled", "waiting"}
    return ids


def _date(days_ago: float, form: str) -> str:
    from datetime import datetime, timedelta, timezone

    moment = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return moment.strftime(form)


def test_prune_dry_run_counts_the_old_ended_runs_in_every_date_form_and_deletes_nothing(work: Path, ended):
    before = _counts(work)
    for date in ["30d", "720h", "43200m", "2w", "0s",
                 _date(10, "%Y-%m-%d"), _date(10, "%Y-%m-%dT%H:%M:%SZ"), _date(10, "%Y-%m-%dT%H:%M:%S.123+00:00"),
                 _date(10, "%Y-%m-%dT%H:%M:%S"), _date(10, "%Y-%m-%dT12:00:00-05:00")]:
        proc = durable("prune", "--finished-before", date, "--dry-run", cwd=work)
        assert proc.returncode == 0, (date, proc.stderr)
        expected = 5 if date == "0s" else 4  # 0s: every run that ended, the recent one too
        assert re.fullmatch(rf"would delete {expected} runs that ended before {WHEN} \(--dry-run: nothing "
                            rf"deleted\)\n", proc.stderr), (date, proc.stderr)
        assert _counts(work) == before


def test_prune_deletes_old_ended_runs_with_their_steps_and_signals(work: Path, ended: dict[str, str]):
    old_ended = [execution_id for name, execution_id in ended.items() if name.startswith("old_") and
                 name != "old_waiting"]
    marks = ", ".join("?" for _ in old_ended)
    assert db_rows(work, f"SELECT COUNT(*) FROM steps WHERE execution_id IN ({marks})", tuple(old_ended))[0][0] == 1
    assert db_rows(work, f"SELECT COUNT(*) FROM signals WHERE execution_id IN ({marks})", tuple(old_ended))[0][0] == 1
    steps_kept = db_rows(work, "SELECT * FROM steps WHERE execution_id = ?", (ended["recent_finished"],))
    signals_kept = db_rows(work, "SELECT * FROM signals WHERE execution_id = ?", (ended["old_waiting"],))
    assert steps_kept and signals_kept

    proc = durable("prune", "--finished-before", "30d", "--batch", "1", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(rf"deleted 4 runs that ended before {WHEN}, with their steps and signals\n", proc.stderr), \
        proc.stderr
    assert [execution_id for execution_id, _, _ in rows(work)] == [ended["old_waiting"], ended["recent_finished"]]
    assert db_rows(work, f"SELECT COUNT(*) FROM steps WHERE execution_id IN ({marks})", tuple(old_ended))[0][0] == 0
    assert db_rows(work, f"SELECT COUNT(*) FROM signals WHERE execution_id IN ({marks})", tuple(old_ended))[0][0] == 0
    assert db_rows(work, "SELECT * FROM steps WHERE execution_id = ?", (ended["recent_finished"],)) == steps_kept
    assert db_rows(work, "SELECT * FROM signals WHERE execution_id = ?", (ended["old_waiting"],)) == signals_kept
    for name in ("old_finished", "old_failed"):
        gone = durable("show", ended[name], cwd=work)
        assert gone.returncode == 2 and f"no execution {ended[name]!r}" in gone.stderr

    again = durable("prune", "--finished-before", "30d", cwd=work)
    assert again.returncode == 0 and again.stderr.startswith("deleted 0 runs that ended before "), again.stderr
    one = durable("prune", "--finished-before", "0s", cwd=work)
    assert one.returncode == 0 and one.stderr.startswith("deleted 1 run that ended before "), one.stderr
    assert [status for _, status, _ in rows(work)] == ["waiting"]  # a run still going is never pruned


BAD_DATES = [
    ("yesterday", "is not a date"),
    ("30x", "is not a date"),
    ("30 d", "is not a date"),
    ("-5d", "is not a date"),
    ("30D", "is not a date"),
    ("", "is not a date"),
    ("2026-13-01", "is not a date"),
    ("2026-11-01T25:00:00Z", "is not a date"),
    ("11/01/2026", "is not a date"),
    ("1e9d", "is not a date"),
    ("99999999999999d", "reaches back before 1970"),
    ("3000-01-01", "is in the future"),
    ("9999-12-31T23:59:59Z", "is in the future"),
]


def test_prune_refuses_a_bad_date_with_exit_2_and_changes_nothing(work: Path):
    durable("run", "flows:greet", '["ada"]', cwd=work)
    _age(work, rows(work)[0][0], 400)
    before = _counts(work)
    for date, message in BAD_DATES:
        proc = durable("prune", "--finished-before", date, cwd=work)
        assert proc.returncode == 2, (date, proc.returncode, proc.stderr)
        assert proc.stderr.startswith(f"durable: error: --finished-before {date!r} {message}"), proc.stderr
        if message == "is not a date":
            assert "30d, 12h, 90m" in proc.stderr and "2026-11-01T12:00:00Z" in proc.stderr
        no_traceback(proc)
        assert _counts(work) == before


def test_prune_bad_options_and_a_missing_store(work: Path):
    for args in (["prune"], ["prune", "--finished-before", "30d", "--batch", "0"]):
        proc = durable(*args, cwd=work)
        assert proc.returncode == 2 and ("--finished-before" in proc.stderr or "--batch" in proc.stderr), proc.stderr
    for args in (["prune", "--finished-before", "30d"], ["prune", "--finished-before", "30d", "--dry-run"]):
        proc = durable(*args, cwd=work)  # prune never creates a store
        assert proc.returncode == 2 and "no store at" in proc.stderr, (args, proc.stderr)
        no_traceback(proc)
    assert not (work / ".durable").exists()
    elsewhere = durable("prune", "--finished-before", "30d", "--store", "sqlite:///other/none.db", cwd=work)
    assert elsewhere.returncode == 2 and "no store at" in elsewhere.stderr and not (work / "other").exists()


# ============================================================================ ls, show: versions and points (deploys)

APPROVE = 'decision = yield wait("approve", timeout=600)'


def test_ls_and_show_print_the_version_and_the_point(work: Path):
    durable("run", "flows:approval", '["bo"]', cwd=work)
    [listed] = json.loads(durable("ls", "--json", cwd=work).stdout)
    version = listed["code_version"]
    assert re.fullmatch(r"[0-9a-f]{16,}", version) and listed["point"] == APPROVE and listed["blocked_on"] is None
    [[function, frame_version, digest, _, label, line]] = listed["frames"]
    assert (function, frame_version, label) == ("flows:approval", version, APPROVE) and digest
    [row] = [text for text in durable("ls", cwd=work).stdout.splitlines() if text.startswith(listed["id"])]
    assert f" flows:approval {' ' * 17} {version[:8]} {APPROVE[:39]}… signal 'approve'" in row, row
    shown = durable("show", listed["id"], cwd=work).stdout
    assert f"  suspended in flows:approval at line {line} (version {version[:8]}, point '{APPROVE}'): {APPROVE}\n" \
        in shown, shown
    info = json.loads(durable("show", listed["id"], "--json", cwd=work).stdout)
    assert info["code_version"] == version and info["point"] == APPROVE and info["frames"] == listed["frames"]
    assert info["suspended_at"][0]["source"] == APPROVE and info["suspended_at"][0]["source_note"] is None


def test_show_pairs_the_line_with_the_text_of_the_version_that_saved_it(work: Path):
    """The line-shift bug: blank lines inserted above a function do not change its version, so the run
    resumes under it, but its stored line now points elsewhere in today's file."""
    durable("run", "flows:approval", '["bo"]', cwd=work)
    [listed] = json.loads(durable("ls", "--json", cwd=work).stdout)
    line = listed["frames"][0][5]
    (work / "flows.py").write_text(FLOWS.replace("@durable\ndef approval", "\n\n\n\n\n@durable\ndef approval"),
                                   encoding="utf-8")
    assert (work / "flows.py").read_text().splitlines()[line - 1].strip() != APPROVE  # today's file moved on
    shown = durable("show", listed["id"], cwd=work).stdout
    [where] = [text for text in shown.splitlines() if "suspended in flows:approval" in text]
    assert where.endswith(f"at line {line} (version {listed['code_version'][:8]}, point '{APPROVE}'): {APPROVE}"), where
    assert "today's file" not in shown
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:  # a store that did not record the text
        conn.execute("DELETE FROM code_versions")
    shown = durable("show", listed["id"], cwd=work).stdout
    today = (work / "flows.py").read_text().splitlines()[line - 1].strip()
    [where] = [text for text in shown.splitlines() if "suspended in flows:approval" in text]
    assert where.endswith(f"'{APPROVE}')" + (f": {today}" if today else "")), where
    assert (f"      (today's file: the text of version {listed['code_version'][:8]} is not recorded; it may have "
            "moved)\n") in shown


def test_ls_and_show_say_a_run_is_blocked(work: Path):
    durable("run", "flows:approval", '["bo"]', cwd=work)
    [listed] = json.loads(durable("ls", "--json", cwd=work).stdout)
    error = "cannot resume: flows:approval changed (blocked: left for a worker with the code that suspended it)"
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:  # as a worker's block leaves it
        conn.execute("UPDATE executions SET blocked_on = ?, error = ? WHERE id = ?",
                     ('["flows@0123456789abcdef"]', error, listed["id"]))
    [row] = [text for text in durable("ls", cwd=work).stdout.splitlines() if text.startswith(listed["id"])]
    assert row.split()[1] == "waiting" and "BLOCKED (no worker seen so far can resume it" in row, row
    assert json.loads(durable("ls", "--json", cwd=work).stdout)[0]["blocked_on"] == ["flows@0123456789abcdef"]
    shown = durable("show", listed["id"], cwd=work).stdout
    assert "  blocked   on flows@0123456789abcdef: the workers with this code cannot resume it" in shown, shown
    assert f"  error     {error}\n" in shown
    assert json.loads(durable("show", listed["id"], "--json", cwd=work).stdout)["blocked_on"] == \
        ["flows@0123456789abcdef"]
