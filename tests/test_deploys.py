"""Deploys with runs in the store (issue 13), on SQLite, PostgreSQL and the in-memory store: for each kind
of edit, what a worker with the new code does with a run suspended under the old code — resumes it (and the
run ends with the new code's result), or blocks it untouched for a worker with the old code (which then
finishes it) — and a worker with old code and one with new code draining one store side by side (worker
processes: on the SQL stores).
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import SQL_BACKENDS
from runtime import inspect_snapshot, values
from runtime.programs.clock import VirtualClock
from runtime.programs.plan import make_plan
from runtime.programs.relabel import relabel
from runtime.programs.store.base import Change
from runtime.programs.runner import Runner
from runtime.programs.store import FINISHED, WAITING

ROOT = Path(__file__).resolve().parent.parent

V1 = '''
from runtime import durable, point, wait


@durable
def inner(k):
    got = yield wait("inner")
    return ("inner", k, got)


@durable
def flow(n):
    total = n
    for i in range(2):
        total += yield wait("go")
    decision = yield wait("approve")
    return ("v1", total, decision)


@durable
def chained(k):
    result = yield from inner(k)
    return ("chained", result)
'''

NAMED = V1.replace('decision = yield wait("approve")', 'decision = yield point("approve", wait("approve"))')


def _edit(old: str, new: str, source: str = V1) -> str:
    assert old in source, old
    return source.replace(old, new)


@dataclass
class Edit:
    name: str
    v1: str
    v2: str
    function: str        # the run's function, started with argument 1
    signals: list[str]   # sent before the deploy (the run then waits on the next one)
    outcome: str         # "resume": the new code finishes it; "block": left for the old code
    plan: str            # what durable plan says of the run before the deploy (its reason's code, if stranded)


PINNED = V1.replace("@durable\ndef flow(n):", "@durable(keep_version=True)\ndef flow(n):")

EDITS = [
    Edit("comment and line shift", V1, "# deployed\n\n" + _edit("    total = n\n", "    total = n  # start\n\n"),
         "flow", ["go", "go"], "resume", "unchanged"),
    Edit("constant changed after the point", V1, _edit('("v1", total, decision)', '("v2", total, decision)'),
         "flow", ["go", "go"], "resume", "upgrade"),
    Edit("statement inserted before the point", V1,
         _edit("    total = n\n", "    total = n\n    yield wait('hello')\n"), "flow", ["go"], "resume", "upgrade"),
    Edit("new local read after the point", V1,
         _edit("    total = n\n", "    total = n\n    tries = 3\n").replace('"v1", total', '"v1", tries'),
         "flow", ["go", "go"], "block", "missing-local"),
    Edit("local renamed across the point", V1, V1.replace("total", "acc"), "flow", ["go", "go"], "block",
         "missing-local"),
    Edit("suspending statement rewritten", V1, _edit('wait("approve")', 'wait("approve" + "")'),
         "flow", ["go", "go"], "block", "no-point"),
    Edit("suspending statement rewritten, named point", NAMED,
         _edit('point("approve", wait("approve"))', 'point("approve", wait("approve" + ""))', NAMED),
         "flow", ["go", "go"], "resume", "upgrade"),
    Edit("point removed", V1, _edit('decision = yield wait("approve")', 'decision = "auto"'),
         "flow", ["go", "go"], "block", "no-point"),
    Edit("try added around a named point", NAMED,
         _edit('    decision = yield point("approve", wait("approve"))\n',
               '    try:\n        decision = yield point("approve", wait("approve"))\n'
               '    except KeyError:\n        decision = None\n', NAMED), "flow", ["go", "go"], "resume", "upgrade"),
    Edit("with added around a named point", NAMED,
         _edit('    decision = yield point("approve", wait("approve"))\n',
               '    import contextlib\n    with contextlib.nullcontext():\n'
               '        decision = yield point("approve", wait("approve"))\n', NAMED),
         "flow", ["go", "go"], "block", "missing-slot"),
    Edit("for header changed around the point", V1, _edit("for i in range(2):", "for i in range(1 + 1):"),
         "flow", ["go"], "block", "no-point"),
    Edit("function kept on its version changed", PINNED,
         _edit('("v1", total, decision)', '("v2", total, decision)', PINNED), "flow", ["go", "go"], "block",
         "pinned"),
    Edit("inner function of a yield from changed after its point", V1,
         _edit('return ("inner", k, got)', 'return ("inner v2", k, got)'), "chained", [], "resume", "upgrade"),
    Edit("outer function of a yield from rewritten at its point", V1,
         _edit("result = yield from inner(k)", "result = yield from inner(k + 0)"), "chained", [], "block",
         "no-point"),
]


class Project:
    """A program module in a folder of its own, deployed in versions, with a runner on one store."""

    def __init__(self, folder: Path, name: str, store: Any) -> None:
        self.folder, self.name, self.store = folder, name, store
        self.clock = VirtualClock()
        self.runner = Runner(store, clock=self.clock, lease=30)

    def deploy(self, source: str) -> None:
        sys.modules.pop(self.name, None)
        (self.folder / f"{self.name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()

    def drain(self, execution_id: str) -> None:
        while self.runner.claim_and_advance(execution_id) is not None:
            pass

    def signal(self, execution_id: str, name: str, payload: Any = 1) -> None:
        self.store.send_signal(execution_id, name, payload, now=self.clock.now())
        self.drain(execution_id)


@pytest.fixture
def project(tmp_path: Path, backend: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    name = f"dg_deploy_{tmp_path.name[-12:].replace('-', '_')}_{backend.name}"
    monkeypatch.syspath_prepend(str(tmp_path))
    store = backend.open()
    try:
        yield Project(tmp_path, name, store)
    finally:
        store.close()
        sys.modules.pop(name, None)


@pytest.mark.parametrize("edit", EDITS, ids=[e.name for e in EDITS])
def test_what_a_worker_does_with_runs_of_the_old_code(project: Project, edit: Edit) -> None:
    project.deploy(edit.v1)
    run = project.runner.start(f"{project.name}:{edit.function}", [1])
    project.drain(run.id)
    for name in edit.signals:
        project.signal(run.id, name)
    waiting = project.store.get(run.id)
    assert waiting.status == WAITING and waiting.code_version and waiting.point
    project.deploy(edit.v2)
    [planned] = make_plan(project.store, [project.name]).runs  # before the deploy: what would it do?
    assert (planned.outcome if planned.outcome != "stranded" else planned.reason.split(":")[0]) == edit.plan, \
        planned
    sys.modules.pop(project.name, None)
    last = "inner" if edit.function == "chained" else "approve"
    project.store.send_signal(run.id, last, 7, now=project.clock.now())
    if edit.function == "flow" and len(edit.signals) < 2:
        project.store.send_signal(run.id, "go", 5, now=project.clock.now())
    project.drain(run.id)
    after = project.store.get(run.id)
    if edit.outcome == "resume":
        new_native = _native_result(edit.v2, edit.function, edit.signals)
        assert after.status == FINISHED, after.error
        assert values.load_value(after.result) == new_native
        return
    # blocked: untouched (status, snapshot, request), the reason recorded, not claimed again by this code
    assert after.status == WAITING and after.snapshot == waiting.snapshot and after.request == waiting.request
    assert after.blocked_on and "cannot resume" in after.error
    assert project.runner.claim_and_advance(run.id) is None
    # the old code (a worker that still has it) finishes it, and clears the block
    project.deploy(edit.v1)
    project.drain(run.id)
    done = project.store.get(run.id)
    assert done.status == FINISHED and done.blocked_on is None
    assert values.load_value(done.result) == _native_result(edit.v1, edit.function, edit.signals)


def _native_result(source: str, function: str, before: list[str]) -> Any:
    """What ``function(1)`` returns run natively on ``source`` with the signals the test sends (1 for each
    sent before the deploy, then 5 for a last "go" and 7 for the last wait): the oracle. (A wait the
    new code added before the point gets None: the run passed that place under the old code.)"""
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source).replace("from runtime import durable, point, wait",
                                                 "from runtime import point\n"
                                                 "def durable(f=None, **options): return f or (lambda g: g)\n"
                                                 "def wait(name, timeout=None): return ('wait', name)"),
                 "<native>", "exec"), namespace)
    gen = namespace[function](1)
    payloads = {"go": [1] * before.count("go") + [5] * (2 - before.count("go")), "approve": [7], "inner": [7],
                "hello": [None]}
    request = next(gen)
    try:
        while True:
            request = gen.send(payloads[request[1]].pop(0))
    except StopIteration as stop:
        return stop.value


WORKER = """
import sys, json
sys.path.insert(0, sys.argv[1])
from runtime.programs.store import open_store
from runtime.programs.worker import Worker
store = open_store(sys.argv[2])
print(json.dumps(Worker(store, lease=30).run_until_idle()))
store.close()
"""


@pytest.mark.parametrize("backend", SQL_BACKENDS, indirect=True)  # the workers are processes
def test_old_and_new_workers_drain_one_store_side_by_side(tmp_path: Path, backend: Any) -> None:
    """Runs started under v1 and under v2, where v2 rewrote the point the runs wait at: the v2 worker
    finishes its own and blocks v1's (once: a second pass claims nothing); the v1 worker finishes the
    rest; nothing is left live."""
    name = f"dg_side_{backend.name}"
    old, new = tmp_path / "old", tmp_path / "new"
    v2 = _edit('wait("approve")', 'wait("approve" + "")')
    for folder, source in ((old, V1), (new, v2)):
        folder.mkdir()
        (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    store = backend.open()
    try:
        ids = {}
        for label, folder in (("old", old), ("new", new)):
            sys.path.insert(0, str(folder))
            try:
                runner = Runner(store, lease=30)
                runs = [runner.start(f"{name}:flow", [k]) for k in (1, 2)]
                for run in runs:
                    store.send_signal(run.id, "go", 1, now=0)
                    store.send_signal(run.id, "go", 1, now=0)
                    while runner.claim_and_advance(run.id) is not None:
                        pass
                    store.send_signal(run.id, "approve", label, now=0)
                ids[label] = [r.id for r in runs]
            finally:
                sys.path.remove(str(folder))
                sys.modules.pop(name, None)

        def work(folder: Path) -> int:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run([sys.executable, "-c", WORKER, str(folder), backend.url], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            return json.loads(proc.stdout.strip().splitlines()[-1])

        assert work(new) > 0
        assert all(store.get(i).status == FINISHED for i in ids["new"]), [store.get(i) for i in ids["new"]]
        assert all(store.get(i).blocked_on and store.get(i).status == WAITING for i in ids["old"])
        blocked = {i: store.get(i) for i in ids["old"]}
        # blocked for this code: a fresh worker with it claims one at most (to load the module and learn its
        # key), releases it untouched, and passes over the rest
        assert work(new) <= 1
        for i, before in blocked.items():
            again = store.get(i)
            assert (again.status, again.snapshot, again.blocked_on, again.error, again.lease_owner) == (
                before.status, before.snapshot, before.blocked_on, before.error, None)
        assert work(old) > 0
        for label in ("old", "new"):
            for i in ids[label]:
                done = store.get(i)
                assert done.status == FINISHED and values.load_value(done.result)[2] == label
        assert not [e for e in store.list() if e.status not in ("finished",)]
    finally:
        store.close()


RENAMED = NAMED.replace("total", "acc") + '''

from runtime import migration

CALLS = []


@migration(__name__ + ":flow", from_point="approve")
def keep_the_sum(old):
    CALLS.append(old.point)
    MIGRATION_BODY
'''


def _waiting_for_approval(project: Project) -> Any:
    """A run of NAMED's flow suspended at its named point "approve"."""
    project.deploy(NAMED)
    run = project.runner.start(f"{project.name}:flow", [1])
    project.drain(run.id)
    project.signal(run.id, "go")
    project.signal(run.id, "go")
    return run


def _approved_under(project: Project, run: Any, migration_body: str) -> Any:
    """The run after deploying RENAMED with that migration body and approving it."""
    project.deploy(RENAMED.replace("MIGRATION_BODY", migration_body))
    project.store.send_signal(run.id, "approve", 7, now=project.clock.now())
    project.drain(run.id)
    return project.store.get(run.id)


def test_a_migration_moves_runs_once_and_is_recorded(project: Project) -> None:
    run = _waiting_for_approval(project)
    # v2 renames total to acc: the run cannot resume as it is, a migration hands the value over
    done = _approved_under(project, run, 'return old.to("approve", acc=old.locals["total"])')
    assert done.status == FINISHED and values.load_value(done.result) == ("v1", 3, 7)
    assert [m["migration"] for m in done.migrations] == [f"{project.name}:keep_the_sum"]
    assert done.migrations[0]["from_point"] and done.migrations[0]["at"] == project.clock.now()
    assert sys.modules[project.name].CALLS == ["@approve"]  # applied once: the next commit is under v2


def test_a_failing_migration_leaves_the_run_until_a_fixed_one_is_deployed(project: Project) -> None:
    run = _waiting_for_approval(project)
    waiting = project.store.get(run.id)
    blocked = _approved_under(project, run, 'raise KeyError("acc")')
    assert blocked.status == WAITING and blocked.snapshot == waiting.snapshot and blocked.blocked_on
    assert "keep_the_sum" in blocked.error and "KeyError" in blocked.error and not blocked.migrations
    assert project.runner.claim_and_advance(run.id) is None
    # the fixed migration is another deploy (another code key): it takes the run
    project.deploy(RENAMED.replace("MIGRATION_BODY", 'return old.to("approve", acc=old.locals["total"] * 10)'))
    project.drain(run.id)
    done = project.store.get(run.id)
    assert done.status == FINISHED and values.load_value(done.result) == ("v1", 30, 7)


def test_a_migration_may_cancel_a_run(project: Project) -> None:
    run = _waiting_for_approval(project)
    done = _approved_under(project, run, 'from runtime import Cancel\n    return Cancel("obsolete")')
    assert done.status == "cancelled" and "obsolete" in done.error and "keep_the_sum" in done.error
    assert done.migrations[0]["cancel"] == "obsolete"


def _as_format_2(project: Project, execution_id: str) -> None:
    """Store the run's snapshot as the runtime before labels wrote it (format 2: seven fields per frame, the
    compiler's locals under counter names), sealed as that runtime would have."""
    import msgpack

    from runtime.programs.records import current_step_mac, execution_parts
    from runtime.values import seals

    ex = project.store.get(execution_id)
    envelope = msgpack.unpackb(ex.snapshot, raw=False, strict_map_key=False)
    meta = sys.modules[project.name].flow.__durable__
    frames = [[*frame[:4], ",".join(meta.legacy_names.get(n, n) for n in frame[4].split(",") if n), *frame[5:7]]
              for frame in envelope[2:]]
    old = msgpack.packb([envelope[0], 2, *frames], use_bin_type=True)
    mac = seals.seal("execution", execution_parts(ex.id, ex.function, ex.args, old, ex.request, ex.steps_started,
                                                  current_step_mac(project.store, ex)))
    project.store.commit(Change(ex.id, ex.version, fields={"snapshot": old, "mac": mac}), now=project.clock.now())


def test_relabel_stores_old_runs_with_labels_so_that_a_deploy_can_upgrade_them(project: Project) -> None:
    project.deploy(V1)
    run = project.runner.start(f"{project.name}:flow", [1])
    project.drain(run.id)
    project.signal(run.id, "go")  # waiting in the loop: its frame keeps the loop's iterator
    _as_format_2(project, run.id)
    before = project.store.get(run.id)
    done = relabel(project.store, clock=project.clock)
    assert done.done == [run.id] and not done.left
    after = project.store.get(run.id)
    assert inspect_snapshot(after.snapshot).format == values.FORMAT and after.point == "for i in range(2): › " \
        "total += yield wait(\"go\")"
    assert (after.status, after.request, after.waiting_for) == (before.status, before.request, before.waiting_for)
    assert relabel(project.store, clock=project.clock).current == 1  # nothing more to do
    # the deploy that follows upgrades it (a format-2 run would need the old code)
    project.deploy(_edit('("v1", total, decision)', '("v2", total, decision)'))
    for name, payload in (("go", 5), ("approve", 7)):
        project.store.send_signal(run.id, name, payload, now=project.clock.now())
    project.drain(run.id)
    assert values.load_value(project.store.get(run.id).result) == ("v2", 7, 7)
