#!/usr/bin/env python
"""DBOS Transact side of bench_workers.py: workflows on a DBOS queue, run by several worker processes.

Runs with the Python of a virtual environment that has ``dbos`` installed (keep it out of the
project's environments), against a PostgreSQL database of its own:

    python3.11 -m venv /work/venv-dbos && /work/venv-dbos/bin/pip install dbos
    /work/venv-dbos/bin/python bench/dbos_workers.py --url postgresql://postgres@127.0.0.1:5432/dbos_bench

``bench_workers.py`` runs it (``--dbos-python``) and reads the JSON lines it prints on stdout, one per
run: ``{"kind", "processes", "programs", "n", "seconds", "first_start", "enqueue", "ops"}``.

What one run is: P worker processes each ``DBOS.launch()`` and listen to the queue ``bench``
(``worker_concurrency`` = programs / P, so the programs are split between them, polling every
0.1 s); once all are ready, the parent enqueues the programs with a ``DBOSClient`` and the clock
starts; it stops at the largest ``updated_at`` of the workflows, once all are ``SUCCESS``.

The workloads, against the durable programs of bench_workers.py:

* ``checkpoints`` — durable ``yield checkpoint()``: DBOS has no checkpoint of its own (it persists at
  step boundaries), so the nearest thing is a no-op ``@DBOS.step()``;
* ``steps`` — durable ``yield step(trivial, i)``: a ``@DBOS.step()`` ``trivial(i)``;
* ``sleeps`` — durable ``yield sleep(0)``: ``DBOS.sleep(1e-6)``, a durable sleep (DBOS records its
  end time as an operation output). ``DBOS.sleep(0)`` itself returns at once without writing
  anything, so it is not the equivalent of a recorded transition.

The database is created when missing and dropped at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

APP = "bench-workers"
QUEUE = "bench"
POLL = 0.1
SLEEP = 1e-6
KINDS = ("checkpoints", "steps", "sleeps")


# -- worker process -----------------------------------------------------------------------------
def worker(url: str, concurrency: int, name: str) -> None:
    from dbos import DBOS

    DBOS(config={"name": APP, "system_database_url": url, "application_version": APP,  # type: ignore[typeddict-item]
                 "executor_id": name, "run_admin_server": False, "log_level": "ERROR"})

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.step()
    def trivial(i: int) -> int:
        return i

    @DBOS.workflow(name="checkpoints")
    def checkpoints(n: int) -> int:
        for _ in range(n):
            noop()
        return n

    @DBOS.workflow(name="steps")
    def steps(n: int) -> int:
        total = 0
        for i in range(n):
            total += trivial(i)
        return total

    @DBOS.workflow(name="sleeps")
    def sleeps(n: int) -> int:
        for _ in range(n):
            DBOS.sleep(SLEEP)
        return n

    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=POLL, on_conflict="always_update")
    time.sleep(1.2)  # DBOS's queue manager looks for newly registered queues once a second
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says when to stop
    DBOS.destroy(workflow_completion_timeout_sec=0)


# -- parent -------------------------------------------------------------------------------------
def engine(url: str, *, autocommit: bool = False) -> Any:
    import sqlalchemy

    if autocommit:
        return sqlalchemy.create_engine(url, pool_size=1, isolation_level="AUTOCOMMIT")
    return sqlalchemy.create_engine(url, pool_size=1)


def admin_url(url: str) -> str:
    base, _, _ = url.rpartition("/")
    return base + "/postgres"


def database_name(url: str) -> str:
    return url.rpartition("/")[2].split("?")[0]


def create_database(url: str) -> None:
    import sqlalchemy

    admin = engine(admin_url(url), autocommit=True)
    with admin.connect() as conn:
        exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": database_name(url)}).first()
        if not exists:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{database_name(url)}"'))
    admin.dispose()


def drop_database(url: str) -> None:
    import sqlalchemy

    admin = engine(admin_url(url), autocommit=True)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)'))
    admin.dispose()


def clear_runs(db: Any) -> None:
    """Empty DBOS's tables of workflows (not its migrations, versions or queues) between runs."""
    import sqlalchemy

    with db.connect() as conn:
        tables = [row[0] for row in conn.execute(sqlalchemy.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'dbos'"
            " AND tablename NOT IN ('dbos_migrations', 'application_versions', 'queues')"))]
        if tables:
            conn.execute(sqlalchemy.text("TRUNCATE " + ", ".join(f'dbos."{t}"' for t in tables) + " CASCADE"))
        conn.commit()


def spawn_worker(url: str, concurrency: int, index: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--url", url,
                             "--worker-concurrency", str(concurrency), "--name", f"bench-{os.getpid()}-{index}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], index: int) -> None:
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"DBOS worker {index} did not start (exit status {proc.wait()})")


def start_workers(url: str, concurrency: int, processes: int, migrated: bool) -> list[subprocess.Popen[str]]:
    """All at once when DBOS's tables exist; else one at a time (the first launch runs DBOS's migrations)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for index in range(processes):
            procs.append(spawn_worker(url, concurrency, index))
            if not migrated:
                wait_ready(procs[-1], index)
        if migrated:
            for index, proc in enumerate(procs):
                wait_ready(proc, index)
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return procs


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        try:
            if proc.stdin:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
        except BrokenPipeError:
            pass
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_run(url: str, kind: str, programs: int, n: int, processes: int, timeout: float) -> dict[str, Any]:
    import sqlalchemy
    from dbos import DBOSClient

    db = engine(url)
    migrated = has_schema(db)
    if migrated:
        clear_runs(db)
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = start_workers(url, math.ceil(programs / processes), processes, migrated)
        client = DBOSClient(system_database_url=url, application_name=APP)
        options = {"queue_name": QUEUE, "workflow_name": kind}
        started = time.time()
        with db.connect() as conn, conn.begin():  # all at once, as the durable programs are created up front
            for _ in range(programs):
                client.enqueue_in_transaction(conn, options, n)  # type: ignore[arg-type]
        enqueued = time.time()
        deadline = time.monotonic() + timeout
        while True:
            with db.connect() as conn:
                row = conn.execute(sqlalchemy.text(
                    "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status = 'ERROR'),"
                    " max(updated_at), min(started_at_epoch_ms) FROM dbos.workflow_status")).one()
            if row[1]:
                raise SystemExit(f"DBOS: {row[1]} workflow(s) of kind {kind} failed")
            if row[0] == programs:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"DBOS: only {row[0]} of {programs} {kind} workflows finished")
            time.sleep(0.05)
        with db.connect() as conn:
            ops = conn.execute(sqlalchemy.text("SELECT count(*) FROM dbos.operation_outputs")).scalar_one()
        client.destroy()
        return {"kind": kind, "processes": processes, "programs": programs, "n": n,
                "seconds": row[2] / 1000 - started, "first_start": row[3] / 1000 - started,
                "enqueue": enqueued - started, "ops": ops}
    finally:
        stop_workers(procs)
        db.dispose()


def has_schema(db: Any) -> bool:
    import sqlalchemy

    with db.connect() as conn:
        return conn.execute(sqlalchemy.text(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'dbos' AND table_name = 'workflow_status'"
        )).first() is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/dbos_bench",
                        help="the DBOS system database (created if missing, dropped at the end)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--programs", type=int, default=100)
    parser.add_argument("--n", type=int, default=100, help="steps (or sleeps) per workflow")
    parser.add_argument("--processes", default="1,2", help="worker process counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-concurrency", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.url, args.worker_concurrency, args.name)
        return 0
    from importlib.metadata import version

    print(json.dumps({"dbos": version("dbos"), "python": sys.version.split()[0]}), flush=True)
    create_database(args.url)
    try:
        for repeat in range(args.repeats):
            for kind in args.kinds.split(","):
                for processes in (int(p) for p in args.processes.split(",")):
                    result = one_run(args.url, kind, args.programs, args.n, processes, args.timeout)
                    print(json.dumps({**result, "repeat": repeat}), flush=True)
    finally:
        if not args.keep:
            drop_database(args.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
