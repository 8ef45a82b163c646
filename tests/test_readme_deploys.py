"""The README's walk through a deploy (Deploying changes), run as written on a copy of ``samples/``: two
runs wait for an approval; a reworded e-mail with the point named is an upgrade; a new local read after
the wait strands them (exit 1) until a migration moves them; a worker with the migration finishes one,
with the migration recorded. The edits are the README's own lines."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README[README.index("### Deploying changes"):README.index("## How it works")]

WORKER = """
import sys, json
from runtime.programs.store import open_store
from runtime.programs.worker import Worker
store = open_store(".durable/durable.db")
print(json.dumps(Worker(store, migrations=sys.argv[1:] or None).run_until_idle()))
"""


def _durable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ONBOARDING_OUTBOX": str(cwd / "outbox.log")}
    return subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _work(cwd: Path, *migrations: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ONBOARDING_OUTBOX": str(cwd / "outbox.log")}
    proc = subprocess.run([sys.executable, "-c", WORKER, *migrations], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _code_block(after: str, language: str = "python") -> str:
    start = SECTION.index(f"```{language}\n", SECTION.index(after)) + len(language) + 4
    return SECTION[start:SECTION.index("```", start)]


def test_the_readme_walk_through_a_deploy(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(ROOT / "samples", samples, ignore=shutil.ignore_patterns(".durable", "__pycache__"))
    ids = [_durable("run", "onboarding:onboarding", f'["{user}@example.com", 0, 3600]', "--detach",
                    cwd=samples).stdout.strip() for user in ("ada", "bo")]
    _work(samples)
    listed = json.loads(_durable("ls", "--json", cwd=samples).stdout)
    assert {(e["status"], e["point"]) for e in listed} == {
        ("waiting", 'try: › decision = yield wait("approval", timeout=approval_timeout)')}

    flows = samples / "onboarding.py"
    source = flows.read_text(encoding="utf-8")
    # the upgrade: the point named as the README shows, the e-mail reworded
    named = re.search(r"`(decision = yield point\(\"approval\", wait\(\"approval\",)\s+(timeout=approval_timeout\)\))`",
                      SECTION)
    assert named, "the README shows the named point"
    source = source.replace('decision = yield wait("approval", timeout=approval_timeout)',
                            f"{named.group(1)} {named.group(2)}")
    source = source.replace("durable, sleep", "durable, point, sleep")
    source = source.replace('"Your account is approved" if', '"Good news: your account is approved" if')
    flows.write_text(source, encoding="utf-8")
    plan = _durable("plan", cwd=samples)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "2 runs: upgrade at" in plan.stdout and "resumes at '@approval'" in plan.stdout
    assert '+        decision = yield point("approval", wait("approval", timeout=approval_timeout))' in plan.stdout
    assert "summary: 0 unchanged, 2 upgrade, 0 migrate, 0 pinned, 0 stranded" in plan.stdout

    # the new local: stranded, then moved by the README's migration
    source = source.replace('    yield step(send_email, user, "Welcome aboard!")\n',
                            '    team = user.partition("@")[2]\n    yield step(send_email, user, "Welcome aboard!")\n')
    source = source.replace('"by": decision.get("by")}', '"by": decision.get("by"), "team": team}')
    flows.write_text(source, encoding="utf-8")
    plan = _durable("plan", "--json", cwd=samples)
    assert plan.returncode == 1 and json.loads(plan.stdout)["summary"]["stranded"] == 2
    assert "local 'team' is needed at this point in the new code" in plan.stdout
    told = _durable("plan", cwd=samples).stdout  # says what to do, with a migration to fill in
    assert "      @runtime.migration('onboarding:onboarding', from_version='" in told
    assert "          return old.to(old.key, team=...)" in told
    (samples / "onboarding_migrations.py").write_text(_code_block("A migration says how to move them"),
                                                       encoding="utf-8")
    plan = _durable("plan", "--migrations", "onboarding_migrations", cwd=samples)
    assert plan.returncode == 0 and "2 runs: migrate at" in plan.stdout, plan.stdout + plan.stderr
    assert "migration onboarding_migrations:add_team moves it" in plan.stdout

    assert _durable("signal", ids[0], "approval", '{"approved": true, "by": "grace"}', cwd=samples).returncode == 0
    _work(samples, "onboarding_migrations")
    result = _durable("result", ids[0], cwd=samples)
    assert json.loads(result.stdout) == {"user": "ada@example.com", "approved": True, "by": "grace",
                                         "team": "example.com"}
    shown = _durable("show", ids[0], cwd=samples).stdout
    assert "migrated  by onboarding_migrations:add_team at " in shown
    assert "to 'approval'" in shown
    still = json.loads(_durable("show", ids[1], "--json", cwd=samples).stdout)
    assert still["status"] == "waiting" and still["migrations"] is None  # not claimed yet: moved when it runs
