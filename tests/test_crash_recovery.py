"""Crash tests (README: "Durable programs", "What a crash costs"): worker processes are killed with
SIGKILL at random moments, or stop themselves at fault points injected between store statements
(``DURABLE_FAULTS``), over many runs and with several concurrent workers. After restarts every
execution completes, none is lost or completed twice, every committed step is recorded exactly once,
and every result equals an uninterrupted (native) run. How often uncommitted work re-ran is printed
(``pytest -s``) and asserted to be plausible.

``DG_CRASH_ROUNDS`` raises the number of rounds (default 2 per scenario).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("DG_CRASH_ROUNDS", "2"))

CRASHFLOWS = textwrap.dedent('''
    import json, os, time
    from runtime import checkpoint, current_step, durable, sleep, step, wait

    LOG = os.environ["CRASH_LOG"]


    def work(tag, i):
        context = current_step()
        with open(LOG, "a") as fh:  # the side effect whose repetitions we count
            fh.write(json.dumps([context.execution_id, context.index, context.attempt]) + "\\n")
        return i * i + len(tag)


    def finish(tag, total):
        return f"{tag}={total}"


    @durable
    def job(tag, n):
        total = 0
        for i in range(n):
            total += yield step(work, tag, i)
            if i % 3 == 2:
                yield checkpoint()
            if i == 4:
                total += yield wait("go")  # sent before any worker starts: queued, consumed under crashes
        yield sleep(0.02)
        marker = yield step(finish, tag, total)
        return [tag, total, marker]
''')

N_STEPS = 8
GO_PAYLOAD = 1000


def expected(tag: str) -> list:
    """The uninterrupted result, computed natively from the same source."""
    namespace: dict = {}
    source = CRASHFLOWS.replace("from runtime import checkpoint, current_step, durable, sleep, step, wait",
                                "from runtime import checkpoint, current_step, sleep, step, wait\n"
                                "durable = lambda f: f")
    os.environ.setdefault("CRASH_LOG", os.devnull)
    exec(compile(source, "native_crashflows.py", "exec"), namespace)
    gen = namespace["job"](tag, N_STEPS)
    value = None
    import runtime.programs.requests as rq
    while True:
        try:
            request = gen.send(value)
        except StopIteration as stop:
            return stop.value
        value = GO_PAYLOAD if isinstance(request, rq.Wait) else None
        if isinstance(request, rq.Step):
            token = rq._CURRENT.set(rq.StepContext("native", 0, 1))
            try:
                value = request.fn(*request.args, **request.kwargs)
            finally:
                rq._CURRENT.reset(token)


def env_for(work: Path, faults: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CRASH_LOG=str(work / "effects.log"), CRASH_STEP_SECONDS="0.1",
               DURABLE_STORE="sqlite:///store.db")  # relative to the working directory, `work`
    env.pop("DURABLE_FAULTS", None)
    if faults:
        env["DURABLE_FAULTS"] = faults
    return env


def spawn_worker(work: Path, faults: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from transpiler.cli import run; run()", "worker", "--quiet",
                             "--poll", "0.02", "--lease", "0.6"], cwd=str(work), env=env_for(work, faults),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def start_executions(work: Path, tags: list[str]) -> list[str]:
    ids = []
    for tag in tags:
        proc = subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", "run", "crashflows:job",
                               json.dumps([tag, N_STEPS]), "--detach"], cwd=str(work), env=env_for(work),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        ids.append(proc.stdout.strip())
        sent = subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", "signal", ids[-1], "go",
                               str(GO_PAYLOAD)], cwd=str(work), env=env_for(work), capture_output=True, text=True,
                              timeout=60)
        assert sent.returncode == 0, sent.stderr
    return ids


def statuses(work: Path) -> dict[str, str]:
    with sqlite3.connect(work / "store.db", timeout=30) as conn:
        return dict(conn.execute("SELECT id, status FROM executions").fetchall())


def check_invariants(work: Path, ids: list[str], tags: list[str]) -> dict[str, int]:
    from runtime.programs.store.sqlite import SQLiteStore
    from runtime.values import load_value

    store = SQLiteStore(work / "store.db")
    try:
        for execution_id, tag in zip(ids, tags):
            ex = store.get(execution_id)
            assert ex.status == "finished", (execution_id, ex.status, ex.error)
            assert load_value(ex.result) == expected(tag)  # equal to an uninterrupted run
            steps = store.steps(execution_id)
            # every committed step recorded exactly once; the finish marker step once: completed once
            assert [s.index for s in steps] == list(range(N_STEPS + 1))
            assert all(s.status == "done" for s in steps)
            assert [(s.name, s.consumed) for s in store.signals(execution_id)] == [("go", True)]
    finally:
        store.close()
    effects = [tuple(json.loads(line)) for line in (work / "effects.log").read_text().splitlines()]
    per_step = Counter((e, i) for e, i, _ in effects)
    assert set(per_step) == {(e, i) for e in ids for i in range(N_STEPS)}  # every step ran
    return {"steps": len(per_step), "runs": len(effects), "re-runs": len(effects) - len(per_step)}


def run_until_done(work: Path, ids: list[str], *, workers: int, kill_every: tuple[float, float] | None,
                   faults: list[str] | None, deadline: float) -> dict[str, int]:
    rng = random.Random(hash(tuple(ids)))
    pool = [spawn_worker(work, rng.choice(faults) if faults else None) for _ in range(workers)]
    kills = restarts = 0
    try:
        while time.time() < deadline:
            if all(s == "finished" for s in statuses(work).values()):
                break
            time.sleep(rng.uniform(*kill_every) if kill_every else 0.1)
            if kill_every:
                victim = rng.randrange(len(pool))
                pool[victim].send_signal(signal.SIGKILL)
                pool[victim].wait()
                kills += 1
            for i, proc in enumerate(pool):
                if proc.poll() is not None:  # killed, or stopped itself at a fault point (exit 86)
                    assert proc.returncode in (-signal.SIGKILL, 86), proc.stderr.read() if proc.stderr else ""
                    pool[i] = spawn_worker(work, rng.choice(faults) if faults else None)
                    restarts += 1
        else:
            pytest.fail(f"not finished in time: {statuses(work)}")
    finally:
        for proc in pool:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return {"kills": kills, "restarts": restarts}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "crashflows.py").write_text(CRASHFLOWS, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigkill_at_random_moments_with_concurrent_workers(work: Path, round_: int):
    tags = [f"job{round_}-{i}" for i in range(6)]
    ids = start_executions(work, tags)
    chaos = run_until_done(work, ids, workers=3, kill_every=(0.05, 0.3), faults=None, deadline=time.time() + 120)
    stats = check_invariants(work, ids, tags)
    print(f"\nSIGKILL round {round_}: {chaos['kills']} kills; {stats['runs']} step runs for {stats['steps']} "
          f"steps: {stats['re-runs']} re-ran ({100 * stats['re-runs'] / stats['steps']:.1f}%)")
    assert stats["re-runs"] <= chaos["kills"] + chaos["restarts"]  # at most one uncommitted step per crash


FAULT_POINTS = ["claim.selected", "commit.updated", "commit.step_written", "commit.signal_consumed",
                "commit.before_commit", "commit.after_commit"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_fault_points_between_store_statements(work: Path, round_: int):
    tags = [f"fault{round_}-{i}" for i in range(4)]
    ids = start_executions(work, tags)
    rng = random.Random(round_)
    faults = [f"{point}:{rng.randint(1, 4)}" for point in FAULT_POINTS] + [f"*:{rng.randint(2, 15)}" for _ in range(3)]
    chaos = run_until_done(work, ids, workers=2, kill_every=None, faults=faults, deadline=time.time() + 120)
    stats = check_invariants(work, ids, tags)
    print(f"\nfault round {round_}: {chaos['restarts']} workers stopped at fault points; {stats['runs']} step runs "
          f"for {stats['steps']} steps: {stats['re-runs']} re-ran")
    assert chaos["restarts"] > 0  # the faults really fired
