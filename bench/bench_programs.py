#!/usr/bin/env python
"""Benchmark: durable programs on SQLite (commit throughput, resume cost) against DBOS Transact when installed.

Prints Markdown tables and always exits with status 0 unless something is functionally wrong; nothing
about time is asserted.

    PYTHONPATH=. python bench/bench_programs.py --quick   # < 1 minute
    PYTHONPATH=. python bench/bench_programs.py           # thorough, a few minutes
    PYTHONPATH=. python bench/bench_programs.py --no-dbos # skip DBOS even if installed

1. Throughput: one execution runs N requests in a loop (``yield checkpoint()``, ``yield i`` as
   progress, ``yield step(bump, total)``), started with ``Runner.start`` and advanced to its end by
   one ``Runner.claim_and_advance``; requests/s and committed store transactions/s. DBOS runs the
   same loop as a ``@DBOS.workflow()`` calling a ``@DBOS.step()`` N times. Samples of all variants
   are interleaved (one per round, order rotating).
2. Resume after k = 1, 100, 10,000 completed steps: a durable execution that ran k steps and waits
   at ``wait("go")`` gets the signal, and ``Runner.claim_and_advance`` is timed (claim, restore,
   deliver, run to the next ``wait``, commit). The DBOS workflow ran k steps and blocks in
   ``DBOS.recv("go")`` when its process is killed; a fresh ``DBOS.launch()`` recovers it, which
   re-runs the workflow body from the start and replays the k recorded step outputs.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import Collector, format_ns, fs_type, measure, median, paired_ratio  # noqa: E402

from runtime import restore  # noqa: E402
from runtime.programs.runner import Runner, import_program_module  # noqa: E402
from runtime.programs.store.base import FINISHED, WAITING, Change, Execution  # noqa: E402
from runtime.programs.store.sqlite import SQLiteStore  # noqa: E402
from runtime.values import load_value  # noqa: E402

FLOWS = "dg_bench_flows"
DBOS_FLOWS = "dg_bench_dbos_flows"
RESUME_STEPS = (1, 100, 10_000)
LEASE = 600.0  # no lease renewal outside a Worker: one advance must fit in it

PROGRAMS = '''"""Durable programs of bench_programs.py (imported through the runner's import hook)."""
from runtime import checkpoint, durable, step, wait


def bump(total):
    return total + 1


@durable
def checkpoints(n):
    total = 0
    for i in range(n):
        total += i
        yield checkpoint()
    return total


@durable
def progress(n):
    total = 0
    for i in range(n):
        total += i
        yield i
    return total


@durable
def steps(n):
    total = 0
    for _ in range(n):
        total = yield step(bump, total)
    return total


@durable
def resumable(k):
    total = 0
    for _ in range(k):
        total = yield step(bump, total)
    while True:
        got = yield wait("go")
        total += got
'''

DBOS_PROGRAMS = '''"""DBOS side of bench_programs.py: the same trivial work as a workflow of steps."""
import threading
import time

from dbos import DBOS

MARKS = {}
DONE = threading.Event()


@DBOS.step()
def bump(total):
    return total + 1


@DBOS.workflow()
def steps(n):
    total = 0
    for _ in range(n):
        total = bump(total)
    return total


@DBOS.workflow()
def resumable(k):
    MARKS["entered"] = time.perf_counter()
    total = 0
    for _ in range(k):
        total = bump(total)
    MARKS["replayed"] = time.perf_counter()
    got = DBOS.recv("go", timeout_seconds=86400)
    MARKS["received"] = time.perf_counter()
    DONE.set()
    return total + got
'''


# -- stores -------------------------------------------------------------------------------------
class CountingStore(SQLiteStore):
    """The SQLite store as shipped (WAL, synchronous=FULL), counting its write transactions."""

    transactions = 0

    def claim(self, owner: str, *, now: float, lease: float, execution_id: str | None = None,
              skip_keys: Sequence[str] = ()) -> Execution | None:
        self.transactions += 1
        return super().claim(owner, now=now, lease=lease, execution_id=execution_id, skip_keys=skip_keys)

    def commit(self, change: Change, *, now: float) -> Execution:
        self.transactions += 1
        return super().commit(change, now=now)


class UnsyncedStore(CountingStore):
    """The same with synchronous=OFF (no fsync: not crash-safe). Reference row, and setup fast path."""

    def _configure(self, conn: sqlite3.Connection) -> None:
        super()._configure(conn)
        conn.execute("PRAGMA synchronous = OFF")


def on_path(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()


def load_flows(folder: Path) -> types.ModuleType:
    """Write the programs module into ``folder`` (on sys.path) and import it as the runner does."""
    (folder / f"{FLOWS}.py").write_text(PROGRAMS, encoding="utf-8")
    on_path(folder)
    module = import_program_module(FLOWS)
    if not hasattr(module.checkpoints, "__durable__"):
        raise SystemExit("the programs module was not compiled (is the transpiler importable?)")
    return module


SIDE_FILES = ("", "-wal", "-shm", "-journal")


def copy_database(source: Path, target: Path) -> None:
    """Copy a closed SQLite database with whatever side files it left."""
    for suffix in SIDE_FILES:
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def remove_database(path: Path) -> None:
    for suffix in SIDE_FILES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- 1. throughput ------------------------------------------------------------------------------
@dataclass
class Run:
    """One sample: seconds for ``requests`` requests and ``transactions`` committed write transactions."""

    seconds: float
    requests: int
    transactions: int


@dataclass
class Variant:
    label: str
    system: str
    run: Callable[[], Run]
    samples: list[Run] = field(default_factory=list)
    paired: list[Run] | None = None  # the durable step samples taken in the same rounds (DBOS rows)


def durable_run(store: CountingStore, function: str, n: int, expected: Any) -> Callable[[], Run]:
    """A new execution of ``function(n)``, advanced to its end by one claim; checks its result."""
    runner = Runner(store, lease=LEASE)

    def run() -> Run:
        ex = runner.start(f"{FLOWS}:{function}", [n])
        before = store.transactions
        started = time.perf_counter()
        done = runner.claim_and_advance(ex.id)
        seconds = time.perf_counter() - started
        if done is None or done.status != FINISHED or load_value(done.result) != expected:
            raise SystemExit(f"{function}({n}) did not finish with {expected!r}: {done}")
        return Run(seconds, n, store.transactions - before)

    return run


def durable_variants(folder: Path, n: int) -> tuple[list[Variant], list[SQLiteStore]]:
    synced = CountingStore(folder / "throughput.db")
    unsynced = UnsyncedStore(folder / "throughput-unsynced.db")
    total = n * (n - 1) // 2
    variants = [
        Variant("`yield checkpoint()`", "durable", durable_run(synced, "checkpoints", n, total)),
        Variant("`yield i` (progress)", "durable", durable_run(synced, "progress", n, total)),
        Variant("`yield step(bump, total)`", "durable", durable_run(synced, "steps", n, n)),
        Variant("`yield step(bump, total)`, synchronous=OFF", "durable (no fsync, not crash-safe)",
                durable_run(unsynced, "steps", n, n)),
    ]
    return variants, [synced, unsynced]


def durable_step(variants: list[Variant]) -> Variant:
    return next(v for v in variants if v.label == "`yield step(bump, total)`")


def interleave(variants: list[Variant], rounds: int) -> None:
    """One sample of each variant per round, the order rotating every round."""
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for variant in order:
            variant.samples.append(variant.run())


# -- 2. durable resume --------------------------------------------------------------------------
@dataclass
class Resumable:
    k: int
    template: Path
    execution_id: str
    snapshot: bytes
    seconds: list[float] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)


def build_resumable(folder: Path, k: int) -> Resumable:
    """Setup, not measured: a store file holding a real execution that ran k steps through the runner
    and now waits at ``wait("go")``, built with synchronous=OFF (the same rows, without their fsyncs)."""
    path = folder / f"resume-template-{k}.db"
    with UnsyncedStore(path) as store:
        runner = Runner(store, lease=LEASE)
        ex = runner.start(f"{FLOWS}:resumable", [k])
        runner.claim_and_advance(ex.id)
        ex = store.get(ex.id)
        check_resumable(store, ex, k)
    return Resumable(k, path, ex.id, ex.snapshot or b"")


def check_resumable(store: SQLiteStore, ex: Execution, k: int) -> None:
    done = [s for s in store.steps(ex.id) if s.status == "done"]
    if ex.status != WAITING or ex.steps_started != k or len(done) != k or ex.lease_owner is not None:
        raise SystemExit(f"execution {ex.id} is not waiting after {k} steps: {ex}")


def resume_once(folder: Path, item: Resumable) -> None:
    """Resume a fresh copy of the template: the store holds the k steps and exactly one signal."""
    path = folder / "resume-sample.db"
    copy_database(item.template, path)
    with CountingStore(path) as store:
        runner = Runner(store, lease=LEASE)
        store.send_signal(item.execution_id, "go", 1, now=time.time())
        before = store.transactions
        started = time.perf_counter()
        ex = runner.claim_and_advance(item.execution_id)
        item.seconds.append(time.perf_counter() - started)
        item.transactions.append(store.transactions - before)
        if ex is None or any(not signal.consumed for signal in store.signals(item.execution_id)):
            raise SystemExit(f"execution {item.execution_id} did not take its signal: {ex}")
        check_resumable(store, ex, item.k)
    remove_database(path)


def durable_resume(folder: Path, rounds: int, restore_rounds: int) -> tuple[list[Resumable], dict[int, float]]:
    """Times ``claim_and_advance`` after a signal, interleaving k; and ``runtime.restore`` alone."""
    items = [build_resumable(folder, k) for k in RESUME_STEPS]
    for r in range(rounds):
        for item in items[r % len(items):] + items[:r % len(items)]:
            resume_once(folder, item)
    return items, restore_times(items, restore_rounds)


def restore_times(items: list[Resumable], rounds: int) -> dict[int, float]:
    """Median ``runtime.restore(snapshot)`` of each waiting execution (interleaved samples, GC off)."""
    collectors = {str(item.k): Collector(partial(restore, item.snapshot)) for item in items}
    variants: dict[str, Callable[[], Any]] = dict(collectors)

    def reset() -> None:
        for collector in collectors.values():
            collector.reset()

    samples = measure(variants, rounds, 2_000_000, setup=reset)
    reset()
    return {int(k): median(v) for k, v in samples.items()}


# -- 3. DBOS ------------------------------------------------------------------------------------
def dbos_version() -> str | None:
    if importlib.util.find_spec("dbos") is None:
        return None
    from importlib.metadata import version

    return version("dbos")


def dbos_config(url: str) -> dict[str, Any]:
    # a fixed application version: recovery only picks up workflows of the same version
    return {"name": "bench-programs", "system_database_url": url, "application_version": "bench-programs",
            "run_admin_server": False, "log_level": "ERROR"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def dbos_flows(folder: Path) -> types.ModuleType:
    (folder / f"{DBOS_FLOWS}.py").write_text(DBOS_PROGRAMS, encoding="utf-8")
    on_path(folder)
    return importlib.import_module(DBOS_FLOWS)


def dbos_launch(path: Path) -> None:
    from dbos import DBOS

    DBOS(config=dbos_config(sqlite_url(path)))  # type: ignore[arg-type]
    DBOS.launch()


def dbos_destroy() -> None:
    from dbos import DBOS

    DBOS.destroy(workflow_completion_timeout_sec=0)


def dbos_commit_counter() -> list[int] | None:
    """Counts COMMITs on the launched DBOS instance's system database engine; None when that engine
    cannot be reached (it is not public API: it is only counted, never used)."""
    import sqlalchemy

    try:
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
    except (ImportError, AttributeError):
        return None
    counter = [0]
    sqlalchemy.event.listen(engine, "commit", lambda conn: counter.__setitem__(0, counter[0] + 1))
    return counter


def wal_file(path: Path) -> None:
    """Create the SQLite file in WAL mode before DBOS opens it (journal_mode is kept in the file)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def dbos_throughput(folder: Path, variants: list[Variant], rounds: int, n: int, wal: bool) -> Variant:
    """Launch DBOS on a fresh SQLite file and sample its N-step workflow interleaved with ``variants``."""
    flows = sys.modules[DBOS_FLOWS]
    path = folder / f"dbos-throughput-{'wal' if wal else 'default'}.sqlite"
    if wal:
        wal_file(path)
    dbos_launch(path)
    try:
        counter = dbos_commit_counter()

        def run() -> Run:
            before = counter[0] if counter else 0
            started = time.perf_counter()
            result = flows.steps(n)
            seconds = time.perf_counter() - started
            if result != n:
                raise SystemExit(f"DBOS steps({n}) returned {result!r}")
            return Run(seconds, n, counter[0] - before if counter else -1)

        journal = "WAL, synchronous=FULL" if wal else "DBOS default: rollback journal, synchronous=FULL"
        dbos = Variant(f"`@DBOS.step()` bump ({journal})", f"DBOS {dbos_version()}", run)
        step = durable_step(variants)
        first = len(step.samples)
        interleave(variants + [dbos], rounds)
        dbos.paired = step.samples[first:]
    finally:
        dbos_destroy()
    return dbos


SETUP = '''
import os, sqlite3, sys, time
sys.path.insert(0, {folder!r})
import sqlalchemy

@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _fast(dbapi_conn, record):  # setup only: skip fsyncs
    dbapi_conn.execute("PRAGMA synchronous = OFF")

from dbos import DBOS, SetWorkflowID
import {module} as flows
DBOS(config={config!r})
DBOS.launch()
with SetWorkflowID({workflow_id!r}):
    DBOS.start_workflow(flows.resumable, {k})
while True:  # blocked in recv once its k steps and recv's timeout record are written
    time.sleep(0.05)
    with sqlite3.connect({path!r}) as conn:
        rows = conn.execute("SELECT function_name FROM operation_outputs WHERE workflow_uuid = ?",
                            ({workflow_id!r},)).fetchall()
    conn.close()
    if len(rows) > {k}:
        break
os._exit(0)  # a crash: no shutdown, the workflow stays PENDING
'''


def dbos_template(folder: Path, k: int) -> Path:
    """Setup, not measured: a DBOS system database holding a PENDING workflow that completed k steps
    and blocks in recv, left behind by a process that exited without shutting down."""
    path = folder / f"dbos-template-{k}.sqlite"
    code = SETUP.format(folder=str(folder), module=DBOS_FLOWS, config=dbos_config(sqlite_url(path)),
                        workflow_id=f"resume-{k}", k=k, path=str(path))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=900, cwd=folder)
    return path




@dataclass
class DbosResume:
    k: int
    template: Path
    total: list[float] = field(default_factory=list)     # launch() until recv returned
    dispatch: list[float] = field(default_factory=list)  # launch() until the body started
    replay: list[float] = field(default_factory=list)    # body start until its k steps were replayed
    body: list[float] = field(default_factory=list)      # body start until recv returned


def dbos_resume_once(folder: Path, item: DbosResume, sample: int) -> None:
    from dbos import DBOS, DBOSClient

    flows = sys.modules[DBOS_FLOWS]
    path = folder / f"dbos-resume-{item.k}-{sample}.sqlite"
    copy_database(item.template, path)
    workflow_id = f"resume-{item.k}"
    client = DBOSClient(system_database_url=sqlite_url(path))
    client.send(workflow_id, 1, "go")
    client.destroy()
    flows.MARKS.clear()
    flows.DONE.clear()
    started = time.perf_counter()
    dbos_launch(path)  # startup recovery re-enqueues the PENDING workflow; the queue thread runs it
    try:
        if not flows.DONE.wait(120):
            raise SystemExit(f"DBOS did not recover workflow {workflow_id}")
        marks = flows.MARKS
        item.total.append(marks["received"] - started)
        item.dispatch.append(marks["entered"] - started)
        item.replay.append(marks["replayed"] - marks["entered"])
        item.body.append(marks["received"] - marks["entered"])
        result = DBOS.retrieve_workflow(workflow_id).get_result()
        if result != item.k + 1:
            raise SystemExit(f"DBOS workflow {workflow_id} returned {result!r}, expected {item.k + 1}")
    finally:
        dbos_destroy()
    remove_database(path)


def dbos_resume(folder: Path, rounds: int) -> list[DbosResume]:
    items = [DbosResume(k, dbos_template(folder, k)) for k in RESUME_STEPS]
    for r in range(rounds):
        for item in items[r % len(items):] + items[:r % len(items)]:
            dbos_resume_once(folder, item, r)
    return items


# -- output -------------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else format_ns(seconds * 1e9)


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}"


def throughput_row(variant: Variant, step: Variant) -> str:
    seconds = [s.seconds / s.requests for s in variant.samples]
    mid = median(seconds)
    ratio = paired_ratio(seconds, [s.seconds / s.requests for s in variant.paired or step.samples])
    if all(s.transactions >= 0 for s in variant.samples):
        commits = (f"{median([s.transactions / s.seconds for s in variant.samples]):,.0f} "
                   f"| {median([s.transactions / s.requests for s in variant.samples]):.2f}")
    else:
        commits = "not counted | —"
    return (f"| {variant.label} | {variant.system} | {per_second(1, mid)} | {commits} | {fmt_time(mid)} "
            f"| {ratio:.2f}× |")


def throughput_table(variants: list[Variant], dbos_rows: list[Variant], dbos_note: str | None) -> str:
    out = [("| Program (N requests in a loop) | system | requests/s | commits/s | commits per request "
            "| time per request | vs durable step |"),
           "|---|---|---:|---:|---:|---:|---:|"]
    step = durable_step(variants)
    out += [throughput_row(variant, step) for variant in variants + dbos_rows]
    if dbos_note:
        out.append(f"| `@DBOS.step()` bump | {dbos_note} | — | — | — | — | — |")
    unsynced = next(v for v in variants if "synchronous=OFF" in v.label)
    share = 1 - paired_ratio([s.seconds for s in unsynced.samples], [s.seconds for s in step.samples])
    out.append(f"\nSkipping the fsyncs (synchronous=OFF) removes {share:.0%} of the durable step's time "
               "(median over rounds of 1 − OFF/FULL).")
    return "\n".join(out)


def resume_table(items: list[Resumable], restores: dict[int, float], dbos_items: list[DbosResume] | None,
                 dbos_note: str | None) -> str:
    out = [("| Completed steps | durable: claim + restore + deliver + commit | durable: `restore()` alone "
            "| snapshot | DBOS: workflow body re-run (replay + recv) | DBOS: of which replaying the steps "
            "| DBOS: `launch()` until recv returned |"),
           "|---:|---:|---:|---:|---:|---:|---:|"]
    by_k = {item.k: item for item in dbos_items or []}
    for item in items:
        durable = (f"{fmt_time(median(item.seconds))} ({median(item.transactions):.0f} commits) "
                   f"| {format_ns(restores[item.k])} | {len(item.snapshot):,} B")
        dbos = by_k.get(item.k)
        if dbos is None:
            cells = " | ".join([dbos_note or "skipped"] * 3)
        else:
            cells = " | ".join(fmt_time(median(v)) for v in (dbos.body, dbos.replay, dbos.total))
        out.append(f"| {item.k:,} | {durable} | {cells} |")
    return "\n".join(out)


def machine_line(folder: Path) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, SQLite "
            f"{sqlite3.sqlite_version}; stores in {folder.parent} ({fs_type(folder)}); load average {load}.")


# -- main ---------------------------------------------------------------------------------------
@dataclass
class Mode:
    n: int
    rounds: int
    resume_rounds: int
    restore_rounds: int
    dbos_resume_rounds: int


QUICK = Mode(n=100, rounds=3, resume_rounds=7, restore_rounds=51, dbos_resume_rounds=1)
THOROUGH = Mode(n=1000, rounds=7, resume_rounds=31, restore_rounds=201, dbos_resume_rounds=5)


def run(settings: Mode, use_dbos: bool, folder: Path) -> None:
    version = dbos_version() if use_dbos else None
    dbos_note = None if version else ("skipped (--no-dbos)" if not use_dbos else "dbos not installed: skipped")
    print(machine_line(folder) + "\n")
    load_flows(folder)
    variants, stores = durable_variants(folder, settings.n)
    dbos_rows: list[Variant] = []
    try:
        if version:
            dbos_flows(folder)
            half = max(1, settings.rounds // 2 + 1)
            dbos_rows.append(dbos_throughput(folder, variants, half, settings.n, wal=False))
            dbos_rows.append(dbos_throughput(folder, variants, half, settings.n, wal=True))
        else:
            interleave(variants, settings.rounds)
    finally:
        for store in stores:
            store.close()
    print(f"### Checkpoint throughput (N = {settings.n:,} requests per execution)\n")
    print(throughput_table(variants, dbos_rows, dbos_note))
    print(THROUGHPUT_NOTE.format(rounds=len(variants[0].samples)))
    items, restores = durable_resume(folder, settings.resume_rounds, settings.restore_rounds)
    dbos_items = dbos_resume(folder, settings.dbos_resume_rounds) if version else None
    print("\n### Resume cost after k completed steps\n")
    print(resume_table(items, restores, dbos_items, dbos_note))
    print(RESUME_NOTE.format(rounds=settings.resume_rounds, restore_rounds=settings.restore_rounds,
                             dbos_rounds=settings.dbos_resume_rounds))


THROUGHPUT_NOTE = """
What was timed: durable — `Runner.claim_and_advance(id)` of a new execution that runs its N requests and
returns: one claim, one commit per checkpoint or progress request, two per step (the snapshot at the
request with the step record, then the step's result), one final commit. DBOS — a call of the
`@DBOS.workflow()` that makes N `@DBOS.step()` calls, in the calling thread. Medians of {rounds} samples
per row, rows interleaved round by round. "commits" are committed write transactions (durable: the
store's `claim`/`commit` calls; DBOS: COMMITs on its system database engine). "vs durable step": median
over rounds of time per request against the durable step row of the same round. With synchronous=FULL
every commit waits for an fsync, so the durable rows are bound by the disk's fsync latency (share above);
the synchronous=OFF row is what is left (snapshot, SQL, Python). DBOS rows: its SQLite system database as
DBOS creates it (rollback journal), and the same file switched to WAL before DBOS opens it."""

RESUME_NOTE = """
What was timed: durable — per sample, a fresh copy of a store file holding the execution (k step records,
suspended at `wait("go")`, running total as its only state) is opened and sent the signal (not timed);
then `Runner.claim_and_advance(id)`: claim (1 transaction), `restore()` of the snapshot, deliver the
signal, run to the next `wait("go")`, commit the new snapshot (1 transaction). Median of {rounds} samples
per k, k interleaved. `restore()` alone: median of {restore_rounds} interleaved samples, GC off. The
executions are real: built by the runner (setup with synchronous=OFF, not timed).
DBOS — the workflow ran k steps and blocked in `DBOS.recv("go")` when its process exited without shutting
down (setup with synchronous=OFF, not timed). Per sample, a fresh copy of that database gets the message
from a `DBOSClient` (not timed), then `DBOS.launch()` recovers the workflow: the internal queue's thread
(polling about once a second) starts the workflow body again from the top, its k step calls return their
recorded outputs without running, and `recv` consumes the message. Columns: body start until `recv`
returned; body start until the k steps were replayed; `launch()` until `recv` returned (adds launch and
the queue's poll wait). Medians over {dbos_rounds} recovery(ies) per k, each a fresh launch on a fresh copy."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter samples (under a minute)")
    parser.add_argument("--no-dbos", action="store_true", help="do not measure DBOS even if it is installed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="dg-bench-programs-"))
    try:
        run(QUICK if args.quick else THOROUGH, not args.no_dbos, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'Quick' if args.quick else 'Thorough'} mode; measured in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
