"""`durable plan` (issue 13, Stage E1): live runs judged against the code importable now, per kind of edit."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

V1 = textwrap.dedent('''
    from runtime import durable, wait


    @durable
    def approval(user):
        decision = yield wait("approve", timeout=600)
        note = "v1"
        return {"user": user, "decision": decision, "note": note}


    @durable
    def gone():
        yield wait("never")
''')
CONSTANT = V1.replace('"v1"', '"v2"')  # after the point: an upgrade
REWRITTEN = V1.replace('yield wait("approve", timeout=600)', 'yield wait("approve", timeout=900)')
SUMMARY_KEYS = ["unchanged", "upgrade", "migrate", "pinned", "stranded"]


def durable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    environment.pop("DURABLE_STORE", None)
    return subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", *args], cwd=str(cwd),
                          env=environment, capture_output=True, text=True, timeout=60)


def plan(work: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = durable("plan", "--json", *args, cwd=work)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def deploy(work: Path, source: str) -> None:
    (work / "flows.py").write_text(source, encoding="utf-8")


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {run["id"]: run for run in result["runs"]}


def start(work: Path, function: str, *args: str) -> str:
    proc = durable("run", function, *args, cwd=work)
    assert proc.returncode in (0, 4), proc.stderr
    db = work / ".durable" / "durable.db"
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT id FROM executions ORDER BY created_at DESC LIMIT 1").fetchone()[0])


def store_bytes(work: Path) -> bytes:
    db = work / ".durable" / "durable.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the main file, so its bytes are final
    conn.close()
    return db.read_bytes()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    deploy(tmp_path, V1)
    return tmp_path


def test_each_edit_gets_its_outcome_the_json_is_exact_and_plan_writes_nothing(work: Path) -> None:
    waiting = start(work, "flows:approval", '["ada"]')
    doomed = start(work, "flows:gone")
    fresh = durable("run", "flows:approval", '["bo"]', "--detach", cwd=work).stdout.strip()

    code, result = plan(work)
    assert code == 0
    assert set(result) == {"store", "runs", "summary", "functions"} and list(result["summary"]) == SUMMARY_KEYS
    assert result["summary"] == {"unchanged": 3, "upgrade": 0, "migrate": 0, "pinned": 0, "stranded": 0}
    runs = by_id(result)
    assert all(list(run) == ["id", "function", "point", "line", "outcome", "reason"] for run in runs.values())
    line = V1.splitlines().index('    decision = yield wait("approve", timeout=600)') + 1
    assert runs[waiting] == {"id": waiting, "function": "flows:approval", "line": line, "outcome": "unchanged",
                             "point": 'decision = yield wait("approve", timeout=600)', "reason": None}
    assert runs[fresh]["point"] == "<start>" and runs[fresh]["outcome"] == "unchanged"
    assert result["functions"] == []

    deploy(work, CONSTANT.split("\n\n\n@durable\ndef gone")[0] + "\n")  # and `gone` removed
    before = store_bytes(work)
    code, result = plan(work)
    assert store_bytes(work) == before  # read-only: not a byte changed
    assert code == 1 and result["summary"] == {"unchanged": 1, "upgrade": 1, "migrate": 0, "pinned": 0, "stranded": 1}
    runs = by_id(result)
    assert runs[waiting]["outcome"] == "upgrade" and f"(line {line} now)" in runs[waiting]["reason"]
    assert runs[doomed]["outcome"] == "stranded" and runs[doomed]["reason"].startswith("no-function: ")
    assert "there is no durable function 'flows:gone' any more" in runs[doomed]["reason"]
    assert runs[fresh]["outcome"] == "unchanged"
    diffs = {f["function"]: f for f in result["functions"]}
    assert set(diffs) == {"flows:approval", "flows:gone"} and diffs["flows:gone"]["new_version"] is None
    diff = diffs["flows:approval"]["diff"]
    note = V1.splitlines().index('    note = "v1"') + 1
    assert '\n-    note = "v1"\n+    note = "v2"\n' in diff and "dg@" not in diff, diff
    assert f"@@ -{note - 3},5 +{note - 3},5 @@" in diff, diff  # numbered as in the file
    assert '-    yield wait("never")' in diffs["flows:gone"]["diff"]

    text = durable("plan", cwd=work)
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert "1 run: upgrade at 'decision = yield wait(\"approve\", timeout=600)'" in text.stdout, text.stdout
    assert "1 run: stranded at 'yield wait(\"never\")'" in text.stdout and '-    note = "v1"' in text.stdout
    assert "summary: 1 unchanged, 1 upgrade, 0 migrate, 0 pinned, 1 stranded" in text.stdout

    deploy(work, REWRITTEN)  # the suspending statement rewritten: no point with its label
    code, result = plan(work)
    assert code == 1 and by_id(result)[waiting]["outcome"] == "stranded"
    assert by_id(result)[waiting]["reason"].startswith("no-point: ") and "no point with this label" in \
        by_id(result)[waiting]["reason"]
    assert by_id(result)[doomed]["outcome"] == "unchanged"  # `gone` is back as it was


def test_pinned_does_not_fail_and_a_migration_gives_migrate(work: Path) -> None:
    deploy(work, V1.replace("@durable\ndef approval", "@durable(keep_version=True)\ndef approval"))
    waiting = start(work, "flows:approval", '["ada"]')
    deploy(work, V1.replace("@durable\ndef approval", "@durable(keep_version=True)\ndef approval")
           .replace('"v1"', '"v2"'))
    code, result = plan(work)
    assert code == 0 and by_id(result)[waiting]["outcome"] == "pinned", result
    assert by_id(result)[waiting]["reason"].startswith("pinned: ")

    deploy(work, REWRITTEN.replace("@durable\ndef approval", "@durable(keep_version=True)\ndef approval")
           + textwrap.dedent(f'''
                from runtime import migration


                @migration("flows:approval", from_version={result["functions"][0]["old_version"]!r})
                def carry(old):
                    return old.to('decision = yield wait("approve", timeout=900)')
           '''))
    code, result = plan(work)
    assert code == 0 and by_id(result)[waiting]["outcome"] == "migrate", result
    assert "flows:carry" in by_id(result)[waiting]["reason"] and result["summary"]["migrate"] == 1


def test_an_unreadable_snapshot_is_stranded_and_bad_input_exits_2(work: Path) -> None:
    waiting = start(work, "flows:approval", '["ada"]')
    other = start(work, "flows:gone")
    with sqlite3.connect(work / ".durable" / "durable.db") as conn:
        conn.execute("UPDATE executions SET snapshot = ? WHERE id = ?", (b"\x93\xa2DGjunk", waiting))
    code, result = plan(work)
    assert code == 1 and by_id(result)[waiting]["outcome"] == "stranded"
    assert by_id(result)[waiting]["reason"].startswith("unreadable: ") and by_id(result)[other]["outcome"] == \
        "unchanged"

    (work / "broken.py").write_text("raise RuntimeError('no')\n", encoding="utf-8")
    for args, message in ((["broken"], "cannot import module 'broken'"), (["nosuch"], "cannot import module"),
                          (["not a module"], "is not a module name"), (["--bogus"], "No such option"),
                          (["--store", "sqlite:///missing.db"], "no store at")):
        proc = durable("plan", *args, cwd=work)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (work / "missing.db").exists()
    code, result = plan(work, "flows")  # MODULE... named: the same judgement
    assert code == 1 and by_id(result)[other]["outcome"] == "unchanged"


def test_plan_on_postgresql(work: Path, pg_url: str) -> None:
    proc = durable("run", "flows:approval", '["ada"]', "--store", pg_url, cwd=work)
    assert proc.returncode == 4, proc.stderr
    assert plan(work, "--store", pg_url)[1]["summary"]["unchanged"] == 1
    deploy(work, CONSTANT)
    code, result = plan(work, "--store", pg_url)
    assert code == 0 and [run["outcome"] for run in result["runs"]] == ["upgrade"]
    assert '-    note = "v1"' in result["functions"][0]["diff"]
