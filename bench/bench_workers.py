#!/usr/bin/env python
"""Benchmark: durable workers in their own processes, on SQLite and PostgreSQL, against DBOS Transact queues.

Prints Markdown tables and exits with status 0 unless something is functionally wrong; nothing about
time is asserted. Every figure is the median of repeated runs.

    PYTHONPATH=. python bench/bench_workers.py --quick            # under 2 minutes
    PYTHONPATH=. python bench/bench_workers.py                    # thorough, a few minutes
    PYTHONPATH=. python bench/bench_workers.py --only throughput  # or latency, takeover, claims, dbos
                                                                  # (comma-separated for several)

1. Throughput: N programs (100) created up front with ``Runner.start``, each a loop of n requests
   (``yield checkpoint()``, ``yield step(trivial, i)`` or ``yield sleep(0)``; in the async row ``await``
   each, then ``await asyncio.sleep(0)``); then 1 or 2 worker
   processes, each one ``Worker(open_store(url), ...).run()`` as ``durable worker`` runs it, take them
   all to their end. Timed from the moment the workers are told to start (they have imported
   everything) to the last program's final commit (its ``updated_at``); transitions/s = N × n / time.
2. DBOS Transact on the same PostgreSQL server (its own database), run by ``bench/dbos_workers.py``
   with the Python of a separate virtual environment (``--dbos-python``): the same workloads as
   workflows on a DBOS queue served by 1 or 2 worker processes.
3. Signal-to-resume latency: one idle worker process, one program looping on ``wait("go")`` then
   ``step(stamp, i)``; the parent sends the signal as ``durable signal`` does (``store.send_signal``)
   and the latency is the step's recorded ``time.time()`` (taken after the commit that consumed the
   signal) minus the time of sending.
4. Takeover after SIGKILL: a worker process holds programs in the middle of a long step (leases
   renewed); a second worker process is idle; the first is SIGKILLed; time until the second holds
   (or has finished) every one of them.
5. Claim cost: ``store.claim_many(owner, limit=10)`` then ``store.release(owner)`` on a store of
   1,000 and of 1,000,000 runs (about 100 runnable, the rest finished; filled with bulk SQL).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import fs_type, median  # noqa: E402

from runtime.programs.runner import Runner, import_program_module  # noqa: E402
from runtime.programs.store import FAILED, FINISHED, WAITING, open_store  # noqa: E402
from runtime.programs.store.base import Execution, Store  # noqa: E402
from runtime.programs.store.sqlite import SQLiteStore  # noqa: E402
from runtime.programs.worker import Worker  # noqa: E402
from runtime.values import load_value  # noqa: E402

FLOWS = "dg_bench_worker_flows"
DRIVER = "dg_bench_worker_driver.py"
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DBOS_URL = "postgresql://postgres@127.0.0.1:5432/dbos_bench"
DBOS_PYTHON = "/work/venv-dbos/bin/python"
SECTIONS = ("throughput", "dbos", "latency", "takeover", "claims")
KINDS = (("checkpoints", "`checkpoint()`"), ("steps", "`step(trivial, i)`"), ("sleeps", "`sleep(0)`"))
NOT_AVAILABLE = "n/a (store not available)"

PROGRAMS = '''"""Durable programs of bench_workers.py (imported by the workers through the runner's import hook)."""
import asyncio
import os
import time

from runtime import checkpoint, durable, sleep, step, wait

RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")


def trivial(i):
    return i


def stamp(i):
    return time.time()


def slow(i):
    """A long step: runs until the benchmark creates the file RELEASE (at most 10 minutes)."""
    deadline = time.time() + 600
    while not os.path.exists(RELEASE) and time.time() < deadline:
        time.sleep(0.02)
    return i


@durable
def checkpoints(n):
    for i in range(n):
        yield checkpoint()
    return n


@durable
def steps(n):
    total = 0
    for i in range(n):
        total += yield step(trivial, i)
    return total


@durable
def sleeps(n):
    for i in range(n):
        yield sleep(0)
    return n


@durable
async def async_checkpoints(n):
    for i in range(n):
        await checkpoint()
        await asyncio.sleep(0)
    return n


@durable
async def async_steps(n):
    total = 0
    for i in range(n):
        total += await step(trivial, i)
        await asyncio.sleep(0)
    return total


@durable
async def async_sleeps(n):
    for i in range(n):
        await sleep(0)
        await asyncio.sleep(0)
    return n


@durable
def listener():
    while True:
        i = yield wait("go")
        yield step(stamp, i)


@durable
def held(i):
    result = yield step(slow, i)
    return result
'''

DRIVER_SOURCE = '''"""One worker process of bench_workers.py: a Worker on the store, started when told, stopped by SIGTERM."""
import inspect
import json
import signal
import sys

from runtime.programs.runner import import_program_module
from runtime.programs.store import open_store
from runtime.programs.worker import Worker

url, options = sys.argv[1], json.loads(sys.argv[2])
until_idle = options.pop("until_idle", False)
import_program_module({flows!r})  # compiled and imported before the clock starts
store = open_store(url)
accepted = inspect.signature(Worker).parameters
kwargs = {{key: value for key, value in options.items() if key in accepted and value is not None}}
worker = Worker(store, **kwargs)
signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop.set())
print(json.dumps({{"name": worker.name, "kwargs": kwargs}}), flush=True)
if sys.stdin.readline().strip() == "go":
    if until_idle:  # the previous model: one runner in this thread, one program at a time to its end
        worker.run_until_idle()
        worker.stop.wait()
    else:
        worker.run()
print(json.dumps({{"advanced": getattr(worker, "advanced", None)}}), flush=True)
store.close()
'''


# -- settings ----------------------------------------------------------------------------------
@dataclass
class Mode:
    programs: int          # programs in flight (throughput)
    baseline_programs: int  # programs of the one-at-a-time rows
    n: int                 # requests per program
    repeats: int           # throughput runs per cell (median)
    dbos_repeats: int
    pg_signals: int        # latency samples with PostgreSQL (LISTEN/NOTIFY)
    sqlite_signals: int    # latency samples with SQLite (polling: slower)
    takeover_repeats: int
    held: int              # programs held by the killed worker
    lease: float           # the workers' lease in the takeover runs
    claim_sizes: tuple[int, ...]
    claim_repeats: int
    runnable: int          # runnable programs among the stored ones (claims)


QUICK = Mode(programs=100, baseline_programs=20, n=10, repeats=1, dbos_repeats=1, pg_signals=40, sqlite_signals=10,
             takeover_repeats=1, held=10, lease=3.0, claim_sizes=(1_000, 100_000), claim_repeats=50, runnable=100)
THOROUGH = Mode(programs=100, baseline_programs=20, n=50, repeats=3, dbos_repeats=2, pg_signals=200,
                sqlite_signals=40, takeover_repeats=3, held=10, lease=5.0, claim_sizes=(1_000, 1_000_000),
                claim_repeats=300, runnable=100)


def worker_parameters() -> set[str]:
    return set(inspect.signature(Worker).parameters)


def has_in_flight() -> bool:
    return "in_flight" in worker_parameters()


@dataclass
class Config:
    """How the workers of one throughput row run."""

    label: str
    processes: int
    concurrency: int
    in_flight: int | None  # passed only when Worker takes it
    programs: int = 100    # programs created for a throughput run
    poll: float = 0.5
    until_idle: bool = False  # Worker.run_until_idle: one runner advancing one program at a time, inline
    async_programs: bool = False  # the async twins of the programs (async_<kind>)

    def function(self, kind: str) -> str:
        return f"{FLOWS}:{'async_' if self.async_programs else ''}{kind}"

    def options(self, lease: float = 30.0) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "in_flight": self.in_flight, "lease": lease, "poll": self.poll,
                "until_idle": self.until_idle}

    def describe(self) -> str:
        if self.until_idle:
            return "1 process, `Worker.run_until_idle()`"
        text = f"{self.processes} process{'es' if self.processes > 1 else ''}, `concurrency={self.concurrency}`"
        if self.in_flight is not None and has_in_flight():
            text += f", `in_flight={self.in_flight}`"
        return text


def configs(concurrency: int, mode: Mode) -> list[Config]:
    """The rows of the throughput table. The one-program-at-a-time rows get fewer programs (their rate
    does not depend on how many wait their turn, and they are slow)."""
    few = mode.baseline_programs
    rows = [Config("baseline, previous model", 1, 1, 1, few, until_idle=True)]
    if has_in_flight():
        rows.append(Config("one program in flight", 1, 1, 1, few))
    else:
        rows.append(Config("today's baseline", 1, 1, None, few))
    return rows + [
        Config("1 worker", 1, concurrency, mode.programs, mode.programs),
        Config("2 workers", 2, concurrency, mode.programs, mode.programs),
        Config("1 worker, async programs", 1, concurrency, mode.programs, mode.programs, async_programs=True),
    ]


# -- stores ------------------------------------------------------------------------------------
class Backend:
    """Where the stores of one column live: fresh store URLs, and how to remove them."""

    name = ""
    wakeup = ""
    pause = (0.02, 0.2)  # seconds between a program waiting again and the next signal (uniform)

    def __init__(self) -> None:
        self.note: str | None = None  # why this store cannot be measured, if it cannot

    def new_url(self) -> str:
        raise NotImplementedError

    def drop(self, url: str) -> None:
        raise NotImplementedError

    def probe(self) -> None:
        """Open (and drop) one store; on failure ``note`` says why and the rows read n/a."""
        url = self.new_url()
        try:
            store = open_store(url)
            store.close()
        except Exception as exc:  # noqa: BLE001 - anything that keeps the store from opening
            self.note = NOT_AVAILABLE
            self.reason = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.drop(url)
            except Exception:  # noqa: BLE001
                pass

    def fill(self, url: str, store: Store, template_id: str, count: int) -> None:
        raise NotImplementedError

    def unsynced(self, url: str) -> Store:
        """The same store, opened so that its commits do not wait for the disk (not crash-safe)."""
        raise NotImplementedError


class UnsyncedSQLiteStore(SQLiteStore):
    """The SQLite store with synchronous=OFF: commits do not wait for the disk (not crash-safe)."""

    def _configure(self, conn: Any) -> None:
        super()._configure(conn)
        conn.execute("PRAGMA synchronous = OFF")


class SQLiteBackend(Backend):
    name = "SQLite"
    wakeup = "polling (`poll=0.5`)"
    pause = (0.02, 0.62)  # longer than a poll interval (0.5 s ± 20%): signals land anywhere in the cycle

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def new_url(self) -> str:
        return "sqlite:///" + str(self.folder / f"store-{uuid.uuid4().hex[:8]}.db")

    @staticmethod
    def path(url: str) -> str:
        return url[len("sqlite:///"):]

    def drop(self, url: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(self.path(url) + suffix).unlink(missing_ok=True)

    def unsynced(self, url: str) -> Store:
        return UnsyncedSQLiteStore(self.path(url))

    def fill(self, url: str, store: Store, template_id: str, count: int) -> None:
        """``count`` copies of the template row (a finished run), ids and times varied: one INSERT ...
        SELECT over a recursive CTE, on a connection of its own (synchronous=OFF: setup only)."""
        conn = sqlite3.connect(self.path(url), isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = OFF")
            columns = [row[1] for row in conn.execute("PRAGMA table_info(executions)")]
            values = []
            for column in columns:
                if column == "id":
                    values.append("'f' || printf('%08d', n)")
                elif column in ("created_at", "updated_at"):
                    values.append(f't."{column}" - n * 0.001')
                else:
                    values.append(f't."{column}"')
            names = ", ".join(f'"{c}"' for c in columns)
            conn.execute("BEGIN")
            conn.execute(f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
                         f"INSERT INTO executions ({names}) SELECT {', '.join(values)} "
                         "FROM seq, executions AS t WHERE t.id = ?", (count, template_id))
            conn.execute("COMMIT")
        finally:
            conn.close()


class PostgresBackend(Backend):
    name = "PostgreSQL"
    wakeup = "LISTEN/NOTIFY (`poll=0.5` as fallback)"
    pause = (0.02, 0.2)

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def new_url(self) -> str:
        return f"{self.base}?schema=bench_{uuid.uuid4().hex[:10]}"

    @staticmethod
    def schema(url: str) -> str:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["schema"][0]

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.base, autocommit=True)

    def drop(self, url: str) -> None:
        try:
            conn = self.connect()
        except Exception:  # noqa: BLE001 - no driver or no server: nothing was created
            return
        with conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema(url)}" CASCADE')

    def unsynced(self, url: str) -> Store:
        return open_store(f"{url}&options={urllib.parse.quote('-csynchronous_commit=off')}")

    def fill(self, url: str, store: Store, template_id: str, count: int) -> None:
        """``count`` copies of the template row: one INSERT ... SELECT over generate_series, then
        ANALYZE (what autovacuum does after a bulk load)."""
        schema = self.schema(url)
        with self.connect() as conn:
            columns = conn.execute(
                "SELECT column_name, data_type, column_default, is_identity FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'executions' ORDER BY ordinal_position", (schema,)).fetchall()
            names, values = [], []
            for column, data_type, default, identity in columns:
                if identity == "YES" or (default and str(default).startswith("nextval(")):
                    continue  # an identity or serial column: its own default
                names.append(f'"{column}"')
                if column == "id":
                    values.append("gen_random_uuid()" if data_type == "uuid" else "'f' || lpad(g::text, 8, '0')")
                elif column in ("created_at", "updated_at") and data_type.startswith("timestamp"):
                    values.append(f"t.\"{column}\" - g * interval '1 millisecond'")
                elif column in ("created_at", "updated_at") and data_type in ("double precision", "real", "numeric",
                                                                              "bigint", "integer"):
                    values.append(f't."{column}" - g * 0.001' if data_type != "bigint" else f't."{column}" - g')
                else:
                    values.append(f't."{column}"')
            conn.execute(f'INSERT INTO "{schema}".executions ({", ".join(names)}) SELECT {", ".join(values)} '
                         f'FROM generate_series(1, %s) AS g, "{schema}".executions AS t WHERE t.id = %s',
                         (count, template_id))
            conn.execute(f'ANALYZE "{schema}".executions')


def postgres_info(base: str) -> str:
    try:
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
        return f"PostgreSQL {version} (synchronous_commit={sync}, fsync={fsync})"
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL: not reachable at {base} ({type(exc).__name__})"


# -- worker processes --------------------------------------------------------------------------
class Context:
    """The temporary folder with the programs module and the driver; spawns worker processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / f"{FLOWS}.py").write_text(PROGRAMS, encoding="utf-8")
        (folder / DRIVER).write_text(DRIVER_SOURCE.format(flows=FLOWS), encoding="utf-8")
        sys.path.insert(0, str(folder))
        os.chdir(folder)  # the workers' project directory; the parent's runner finds the module there too
        module = import_program_module(FLOWS)
        if not hasattr(module.checkpoints, "__durable__"):
            raise SystemExit("the programs module was not compiled (is the transpiler importable?)")
        self.spawned = 0

    def spawn(self, url: str, options: dict[str, Any], count: int = 1) -> list[WorkerProcess]:
        """``count`` worker processes, started together; returned once each has its Worker ready."""
        workers = []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(self.folder)]))
        for _ in range(count):
            self.spawned += 1
            err = open(self.folder / f"worker-{self.spawned}.err", "w+", encoding="utf-8")
            proc = subprocess.Popen([sys.executable, str(self.folder / DRIVER), url, json.dumps(options)],
                                    cwd=self.folder, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, text=True)
            workers.append(WorkerProcess(proc, err))
        for worker in workers:
            line = worker.proc.stdout.readline() if worker.proc.stdout else ""
            if not line:
                for other in workers:
                    if other is not worker:
                        other.kill()
                worker.fail("did not start")
            worker.info = json.loads(line)
        return workers

    def release_file(self) -> Path:
        return self.folder / "release"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    err: Any
    info: dict[str, Any] = field(default_factory=dict)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        self.err.flush()
        self.err.seek(0)
        return self.err.read()[-3000:]

    def fail(self, what: str) -> None:
        code = self.proc.poll()
        self.kill()
        raise SystemExit(f"worker process {what} (exit status {code}):\n{self.stderr()}")

    def stop(self) -> None:
        if self.alive():
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()  # a worker never told to go reads the end of its input and exits
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self.err.close()


def check_alive(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if not worker.alive():
            worker.fail("exited early")


# -- 1. throughput -----------------------------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    transitions: int

    @property
    def rate(self) -> float:
        return self.transitions / self.seconds


def expected_result(kind: str, n: int) -> int:
    return n * (n - 1) // 2 if kind == "steps" else n


def throughput_once(ctx: Context, backend: Backend, kind: str, config: Config, mode: Mode,
                    timeout: float = 900.0) -> Sample:
    url = backend.new_url()
    workers: list[WorkerProcess] = []
    store = open_store(url)
    try:
        runner = Runner(store)
        ids = [runner.start(config.function(kind), [mode.n]).id for _ in range(config.programs)]
        workers = ctx.spawn(url, config.options(), config.processes)
        started = time.time()
        for worker in workers:
            worker.go()
        finished = wait_finished(store, len(ids), workers, timeout)
        for worker in workers:
            worker.stop()
        end = max(ex.updated_at for ex in finished)
        expected = expected_result(kind, mode.n)
        for execution_id in ids:
            result = store.get(execution_id).result
            if result is None or load_value(result) != expected:
                raise SystemExit(f"{kind}({mode.n}) {execution_id} did not return {expected}")
        return Sample(end - started, config.programs * mode.n)
    finally:
        for worker in workers:
            worker.kill()
        store.close()
        backend.drop(url)


def wait_finished(store: Store, count: int, workers: list[WorkerProcess], timeout: float) -> list[Execution]:
    deadline = time.monotonic() + timeout
    while True:
        failed = store.list(status=FAILED)
        if failed:
            raise SystemExit(f"execution {failed[0].id} failed: {store.get(failed[0].id).error}")
        finished = store.list(status=FINISHED)
        if len(finished) >= count:
            return finished
        check_alive(workers)
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(finished)} of {count} executions finished in {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Row:
    system: str
    store: str
    workers: str
    cells: dict[str, list[float]] = field(default_factory=dict)  # kind -> rates
    notes: dict[str, str] = field(default_factory=dict)           # kind -> text instead of a figure


def throughput(ctx: Context, backends: list[Backend], mode: Mode, concurrency: int) -> list[Row]:
    rows = []
    for backend in backends:
        for config in configs(concurrency, mode):
            row = Row("durable", backend.name, f"{config.label}: {config.describe()}"
                      + (f", {config.programs} programs" if config.programs != mode.programs else ""))
            rows.append(row)
            for kind, _ in KINDS:
                if backend.note:
                    row.notes[kind] = backend.note
                    continue
                row.cells[kind] = [throughput_once(ctx, backend, kind, config, mode).rate for _ in range(mode.repeats)]
                progress(f"{backend.name} {config.label} {kind}: {median(row.cells[kind]):,.0f}/s")
    return rows


def progress(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


# -- 2. DBOS -----------------------------------------------------------------------------------
def dbos_rows(python: str | None, url: str, mode: Mode, note: str | None) -> tuple[list[Row], str]:
    """Runs bench/dbos_workers.py with the DBOS venv's Python; rows of steps/s per process count."""
    labels = {1: "1 worker process", 2: "2 worker processes"}
    rows = {p: Row("DBOS", "PostgreSQL", f"{labels[p]} (queue, `worker_concurrency={math.ceil(mode.programs / p)}`)")
            for p in (1, 2)}
    if note or python is None:
        for row in rows.values():
            row.notes = {kind: note or "skipped" for kind, _ in KINDS}
        return list(rows.values()), ""
    command = [python, str(ROOT / "bench" / "dbos_workers.py"), "--url", url, "--programs", str(mode.programs),
               "--n", str(mode.n), "--processes", "1,2", "--repeats", str(mode.dbos_repeats)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        text = f"failed (exit status {proc.returncode})"
        print(proc.stderr[-3000:], file=sys.stderr)
        for row in rows.values():
            row.notes = {kind: text for kind, _ in KINDS}
        return list(rows.values()), ""
    version = ""
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        if "dbos" in item:
            version = item["dbos"]
            continue
        row = rows[item["processes"]]
        row.cells.setdefault(item["kind"], []).append(item["programs"] * item["n"] / item["seconds"])
    for row in rows.values():
        row.system = f"DBOS {version}"
    return list(rows.values()), version


def throughput_table(rows: list[Row], mode: Mode) -> str:
    out = ["| system | store | workers | " + " | ".join(label for _, label in KINDS) + " |",
           "|---|---|---|" + "---:|" * len(KINDS)]
    for row in rows:
        cells = []
        for kind, _ in KINDS:
            if kind in row.notes:
                cells.append(row.notes[kind])
            elif kind in row.cells:
                cells.append(f"{median(row.cells[kind]):,.0f}")
            else:
                cells.append("—")
        out.append(f"| {row.system} | {row.store} | {row.workers} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# -- 3. latency --------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], timeout: float, workers: list[WorkerProcess], what: str,
               interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        check_alive(workers)
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def idle_waiting(store: Store, execution_id: str, steps: int) -> Callable[[], bool]:
    def check() -> bool:
        ex = store.get(execution_id)
        return ex.status == WAITING and ex.lease_owner is None and ex.steps_started == steps
    return check


def latency(ctx: Context, backend: Backend, signals: int, concurrency: int, programs: int) -> list[float]:
    """Seconds from ``send_signal`` to the program's step timestamp, one sample per signal."""
    url = backend.new_url()
    store = open_store(url)
    worker = None
    try:
        execution_id = Runner(store).start(f"{FLOWS}:listener", []).id
        config = Config("latency", 1, concurrency, programs)
        [worker] = ctx.spawn(url, config.options())
        worker.go()
        wait_until(idle_waiting(store, execution_id, 0), 60, [worker], "the listener to wait")
        samples = []
        for i in range(signals):
            time.sleep(random.uniform(*backend.pause))  # a random moment of the worker's wake-up cycle
            sent = time.time()
            store.send_signal(execution_id, "go", i, now=sent)
            record = None

            def done() -> bool:
                nonlocal record
                record = store.step(execution_id, i)
                return record is not None and record.status == "done"

            wait_until(done, 60, [worker], f"signal {i} to be taken")
            assert record is not None and record.result is not None
            samples.append(load_value(record.result) - sent)
            wait_until(idle_waiting(store, execution_id, i + 1), 60, [worker], "the listener to wait again")
        worker.stop()
        return samples
    finally:
        if worker is not None:
            worker.kill()
        store.close()
        backend.drop(url)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def latency_table(results: list[tuple[Backend, list[float] | None]]) -> str:
    out = ["| store | wake-up | signals | p50 | p99 | max |", "|---|---|---:|---:|---:|---:|"]
    for backend, samples in results:
        if not samples:
            out.append(f"| {backend.name} | {backend.wakeup} | — | {backend.note or 'skipped'} | — | — |")
            continue
        out.append(f"| {backend.name} | {backend.wakeup} | {len(samples)} | {fmt_ms(percentile(samples, 0.5))} "
                   f"| {fmt_ms(percentile(samples, 0.99))} | {fmt_ms(max(samples))} |")
    return "\n".join(out)


# -- 4. takeover -------------------------------------------------------------------------------
@dataclass
class Takeover:
    lease_left: float  # the latest lease still running at the kill: nobody may take over before it lapses
    taken: float       # kill until every program was held by the second worker (or had finished)
    finished: float    # kill until every program had finished


def takeover_once(ctx: Context, backend: Backend, mode: Mode, concurrency: int) -> Takeover:
    url = backend.new_url()
    store = open_store(url)
    workers: list[WorkerProcess] = []
    release = ctx.release_file()
    release.unlink(missing_ok=True)
    try:
        runner = Runner(store)
        ids = [runner.start(f"{FLOWS}:held", [i]).id for i in range(mode.held)]
        config = Config("takeover", 1, max(concurrency, mode.held), mode.programs)
        [first] = ctx.spawn(url, config.options(lease=mode.lease))
        workers.append(first)
        first.go()

        def all_held() -> bool:
            rows = store.list()
            return all(ex.lease_owner is not None and ex.steps_started == 1 for ex in rows)

        wait_until(all_held, 60, workers, "the first worker to hold every program", interval=0.02)
        owners = {ex.lease_owner for ex in store.list()}
        [second] = ctx.spawn(url, config.options(lease=mode.lease))
        workers.append(second)
        second.go()
        time.sleep(1.0 + random.uniform(0, mode.lease / 3))  # the second worker idles; a random phase of renewals
        if {ex.lease_owner for ex in store.list()} != owners:
            raise SystemExit("the second worker took programs before the first one was killed")
        killed = time.time()
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        lease_left = max(ex.lease_until or killed for ex in store.list()) - killed
        release.touch()  # the step ends at once when run again
        taken_at = None
        deadline = time.monotonic() + mode.lease * 4 + 60
        while True:
            rows = store.list()
            now = time.time()
            if taken_at is None and all(ex.status == FINISHED or (ex.lease_owner is not None
                                                                  and ex.lease_owner not in owners) for ex in rows):
                taken_at = now
            if all(ex.status == FINISHED for ex in rows):
                finished_at = now
                break
            failed = [ex for ex in rows if ex.status == FAILED]
            if failed:
                raise SystemExit(f"held program {failed[0].id} failed: {store.get(failed[0].id).error}")
            check_alive([second])
            if time.monotonic() > deadline:
                raise SystemExit("the second worker did not take the programs over")
            time.sleep(0.01)
        second.stop()
        if len(rows) != len(ids):
            raise SystemExit("programs went missing")
        return Takeover(lease_left, taken_at - killed, finished_at - killed)
    finally:
        for worker in workers:
            worker.kill()
        release.unlink(missing_ok=True)
        store.close()
        backend.drop(url)


def takeover_table(results: list[tuple[Backend, list[Takeover] | None]], mode: Mode) -> str:
    out = ["| store | lease | programs held | runs | lease left at the kill | all taken over | all finished |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for backend, samples in results:
        if not samples:
            out.append(f"| {backend.name} | {mode.lease:g} s | {mode.held} | — | {backend.note or 'skipped'} | — | — |")
            continue
        out.append(f"| {backend.name} | {mode.lease:g} s | {mode.held} | {len(samples)} "
                   f"| {median([s.lease_left for s in samples]):.2f} s | {median([s.taken for s in samples]):.2f} s "
                   f"| {median([s.finished for s in samples]):.2f} s |")
    return "\n".join(out)


# -- 5. claims ---------------------------------------------------------------------------------
@dataclass
class ClaimVariant:
    size: int
    fsync: bool
    store: Store
    claim: list[float] = field(default_factory=list)
    release: list[float] = field(default_factory=list)

    def sample(self) -> None:
        owner = "bench-claims"
        started = time.perf_counter()
        claimed = self.store.claim_many(owner, now=time.time(), lease=60.0, limit=10)
        middle = time.perf_counter()
        released = self.store.release(owner)
        self.claim.append(middle - started)
        self.release.append(time.perf_counter() - middle)
        if len(claimed) != 10 or released != 10:
            raise SystemExit(f"claimed {len(claimed)}, released {released} of 10 runnable")


def claims_store(backend: Backend, url: str, size: int, mode: Mode) -> Store:
    """A store of ``size`` runs: one finished by the runner, copied in bulk, and ``mode.runnable`` pending."""
    store = open_store(url)
    runner = Runner(store, lease=600.0)
    template = runner.start(f"{FLOWS}:checkpoints", [1])
    done = runner.claim_and_advance(template.id)
    if done is None or done.status != FINISHED:
        raise SystemExit(f"the template run did not finish: {done}")
    for _ in range(mode.runnable):
        runner.start(f"{FLOWS}:checkpoints", [1])
    backend.fill(url, store, template.id, size - mode.runnable - 1)
    return store


def claims(backend: Backend, mode: Mode) -> list[ClaimVariant]:
    """Every size, each through the store as shipped and through one that commits without waiting
    for the disk; samples interleaved (one per variant per round, the order rotating)."""
    urls = [backend.new_url() for _ in mode.claim_sizes]
    variants: list[ClaimVariant] = []
    try:
        for url, size in zip(urls, mode.claim_sizes):
            started = time.perf_counter()
            variants.append(ClaimVariant(size, True, claims_store(backend, url, size, mode)))
            variants.append(ClaimVariant(size, False, backend.unsynced(url)))
            progress(f"{backend.name}: {size:,} runs stored in {time.perf_counter() - started:.1f} s")
        for r in range(mode.claim_repeats):
            for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
                variant.sample()
        return variants
    finally:
        for variant in variants:
            variant.store.close()
        for url in urls:
            backend.drop(url)


def claims_table(results: list[tuple[Backend, list[ClaimVariant] | None]], mode: Mode) -> str:
    out = ["| store | stored runs | runnable | `claim_many(limit=10)` | `release(owner)` | claim vs smallest store "
           "| claim, commit without fsync | vs smallest store |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for backend, variants in results:
        if not variants:
            for size in mode.claim_sizes:
                out.append(f"| {backend.name} | {size:,} | {mode.runnable} | {backend.note or 'skipped'} "
                           "| — | — | — | — |")
            continue
        synced = [v for v in variants if v.fsync]
        unsynced = [v for v in variants if not v.fsync]
        for plain, quick in zip(synced, unsynced):
            out.append(f"| {backend.name} | {plain.size:,} | {mode.runnable} | {median(plain.claim) * 1e6:,.0f} µs "
                       f"| {median(plain.release) * 1e6:,.0f} µs "
                       f"| {median(plain.claim) / median(synced[0].claim):.2f}× "
                       f"| {median(quick.claim) * 1e6:,.0f} µs "
                       f"| {median(quick.claim) / median(unsynced[0].claim):.2f}× |")
    return "\n".join(out)


# -- output ------------------------------------------------------------------------------------
def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()[:100] or "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def machine_info(folder: Path, pg_base: str, backends: list[Backend]) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    signature = ", ".join(sorted(worker_parameters() - {"self", "store"}))
    lines = [
        f"* {os.cpu_count()} CPUs ({platform.machine()}), load average {load}; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version} (stores in {folder.parent}, {fs_type(folder)}); {postgres_info(pg_base)}",
        f"* commit: {git_head()}",
        f"* `Worker` takes: {signature}",
    ]
    for backend in backends:
        if backend.note:
            lines.append(f"* {backend.name} store: {backend.note} — {getattr(backend, 'reason', '')}")
    return "\n".join(lines)


NOTES = {
    "throughput": """
Transitions/s = programs × {n} requests / time, the median of {repeats} run(s) per cell (DBOS: {dbos_repeats}).
Each run starts from a new store (SQLite: a file; PostgreSQL: a schema): the programs are created with
`Runner.start` before the workers start; each worker process (one `Worker(open_store(url), ...)`, as
`durable worker` runs it) has imported and compiled the programs before the clock starts, which stops
at the last program's final commit (its `updated_at`). A transition is a request the program yielded
and the worker committed; a step commits twice (the request, then its result), unless the worker
groups them. `sleep(0)` is due at once: it is committed as a checkpoint and the program goes on.
"baseline, previous model": `Worker.run_until_idle()`, one runner advancing one program at a time inline, one
commit (one fsync) per transition, as a worker with `concurrency=1` ran before the worker kept many
programs in flight; "one program in flight": the scheduler of `Worker.run()` with `in_flight=1`. These
two rows run {few} programs (one at a time: how many wait does not change the rate). The other rows run
{programs} programs; with two processes each may hold up to `in_flight` of them. "async programs": the same
programs as `async def`, awaiting each request and then a transient `await asyncio.sleep(0)` (one turn of
the worker's event loop, where each advance of an async program runs as a task).
DBOS rows: `checkpoint()` ↔ a no-op `@DBOS.step()` (DBOS has no checkpoint of its own: it persists at
step boundaries); `step(trivial, i)` ↔ `@DBOS.step()` `trivial(i)`; `sleep(0)` ↔ `DBOS.sleep(1e-6)`
(`DBOS.sleep(0)` returns without writing anything). {programs} workflows of {n} such calls, enqueued in
one transaction once the worker processes are up (each `DBOS.launch()`ed, listening to the queue, polled
every 0.1 s, `worker_concurrency` = programs / processes); the clock stops at the last workflow's
`updated_at`. DBOS's system database is a database of its own on the same server, DBOS defaults
otherwise (a pool of 20 connections per process, workflows on threads).""",
    "latency": """
One worker process, idle, one program looping on `wait("go")` then `step(stamp, i)`. Per sample, once the
program waits again and after a random pause (PostgreSQL 20–200 ms; SQLite 20–620 ms, more than a poll
interval, so that signals land anywhere in the worker's polling cycle), the parent sends the signal as
`durable signal` does (`store.send_signal`) and reads back the step's result: `time.time()` taken by the
step, after the commit that consumed the signal. Latency = that time − the time of sending.""",
    "takeover": """
The first worker process holds {held} programs, each inside a step that runs until released (the worker
renews its leases every third of the lease); the second worker process is running and idle. The first is
SIGKILLed; "all taken over" is the time until every program's lease belonged to the second worker (or the
program had finished), "all finished" until all had ended (the step, run again, returns at once). Nobody
may take a lease over before it lapses: "lease left" is how long the latest of them still had to run at
the kill (between 2/3 of the lease and all of it). Workers run with `lease={lease:g}` and `poll=0.5`.""",
    "claims": """
One store per size: a finished run made by the runner, copied with one INSERT ... SELECT (recursive CTE on
SQLite, generate_series on PostgreSQL, then ANALYZE there) to fill the store, and {runnable} pending runs.
Each sample: `store.claim_many(owner, now=..., lease=60, limit=10)` (one transaction), then
`store.release(owner)` (one transaction); medians of {repeats} samples, all sizes interleaved. Both commit,
and each commit waits for the disk's flush; the last two columns open the same store so that commits do
not wait for it (SQLite `synchronous=OFF`, PostgreSQL `synchronous_commit=off`), leaving the queries and
the round trips.""",
}


def run(args: argparse.Namespace, mode: Mode, folder: Path) -> None:
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --only section(s): {', '.join(sorted(unknown))} (one of {', '.join(SECTIONS)})")
    ctx = Context(folder)
    sqlite_backend = SQLiteBackend(folder)
    pg_backend = PostgresBackend(args.pg_url)
    backends: list[Backend] = [sqlite_backend, pg_backend]
    for backend in backends:
        backend.probe()
    print("## Durable workers: throughput, latency, takeover, claims\n")
    print(machine_info(folder, args.pg_url, backends))
    concurrency = args.concurrency
    if "throughput" in only or "dbos" in only:
        rows = throughput(ctx, backends, mode, concurrency) if "throughput" in only else []
        if "dbos" in only:
            python = args.dbos_python
            note = None
            if python is None or not Path(python).exists():
                note = "skipped (no DBOS venv: --dbos-python)"
            elif pg_backend.note == NOT_AVAILABLE and "not reachable" in postgres_info(args.pg_url):
                note = "skipped (no PostgreSQL)"
            extra, _ = dbos_rows(python, args.dbos_url, mode, note)
            rows += extra
        print(f"\n### 1. Throughput: transitions/s, {mode.programs} programs × {mode.n} requests each\n")
        print(throughput_table(rows, mode))
        print(NOTES["throughput"].format(programs=mode.programs, n=mode.n, repeats=mode.repeats,
                                         dbos_repeats=mode.dbos_repeats, few=mode.baseline_programs))
    if "latency" in only:
        results: list[tuple[Backend, Any]] = []
        for backend, count in ((pg_backend, mode.pg_signals), (sqlite_backend, mode.sqlite_signals)):
            results.append((backend, None if backend.note else latency(ctx, backend, count, concurrency,
                                                                        mode.programs)))
        print("\n### 2. Signal-to-resume latency (one idle worker process)\n")
        print(latency_table(results))
        print(NOTES["latency"])
    if "takeover" in only:
        results = []
        for backend in (pg_backend, sqlite_backend):
            results.append((backend, None if backend.note else
                            [takeover_once(ctx, backend, mode, concurrency) for _ in range(mode.takeover_repeats)]))
        print("\n### 3. Takeover after SIGKILL of a worker process\n")
        print(takeover_table(results, mode))
        print(NOTES["takeover"].format(held=mode.held, lease=mode.lease))
    if "claims" in only:
        results = []
        for backend in (sqlite_backend, pg_backend):
            results.append((backend, None if backend.note else claims(backend, mode)))
        print("\n### 4. Claim cost against the number of stored runs\n")
        print(claims_table(results, mode))
        print(NOTES["claims"].format(runnable=mode.runnable, repeats=mode.claim_repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, few repeats (under 2 minutes)")
    parser.add_argument("--only", help=f"comma-separated sections among {', '.join(SECTIONS)}")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="the workers' concurrency= (today: threads) outside the baseline row (default 8)")
    parser.add_argument("--pg-url", default=PG_URL, help=f"PostgreSQL server (default {PG_URL}); each store is "
                        "a schema bench_<random> of it, dropped afterwards")
    parser.add_argument("--dbos-url", default=DBOS_URL, help=f"DBOS's own database (default {DBOS_URL}; created "
                        "and dropped)")
    parser.add_argument("--dbos-python", default=DBOS_PYTHON if Path(DBOS_PYTHON).exists() else None,
                        help=f"Python of a venv with dbos installed (default {DBOS_PYTHON} if it exists)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cwd = os.getcwd()
    folder = Path(tempfile.mkdtemp(prefix="dg-bench-workers-"))
    try:
        run(args, QUICK if args.quick else THOROUGH, folder)
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'Quick' if args.quick else 'Thorough'} mode; measured in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
