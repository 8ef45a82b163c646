"""End-to-end demo: an onboarding program on the embedded SQLite store, a worker killed mid-flight
(SIGKILL) and a new one resuming it, a signal, and the result. Prints every command it runs.

    python samples/onboarding_demo.py            # the generator program (samples/onboarding.py)
    python samples/onboarding_demo.py --async    # the same flow as an async def (samples/onboarding_async.py)

Everything happens in ``samples/`` with the store ``samples/.durable/demo.db`` (recreated each run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORE = "sqlite:///.durable/demo.db"
ENV = dict(os.environ, DURABLE_STORE=STORE, ONBOARDING_OUTBOX=".durable/demo-outbox.log",
           ONBOARDING_LOGINS=".durable/demo-logins.txt")
ENV["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), ENV.get("PYTHONPATH", "")])


def durable_command() -> list[str]:
    """The `durable` command of this interpreter (not whichever one PATH finds first)."""
    return [sys.executable, "-c", "from transpiler.cli import run; run()"]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def durable(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("$ durable " + " ".join(args if len(args) < 3 else (*args[:2], *[f"'{a}'" if a.startswith(("[", "{")) else a
                                                                       for a in args[2:]])), flush=True)
    proc = subprocess.run([*durable_command(), *args], cwd=HERE, env=ENV, capture_output=True, text=True)
    if proc.stdout:
        print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode not in (0, 4):
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"durable {args[0]} failed with exit code {proc.returncode}")
    return proc


def start_worker() -> subprocess.Popen:
    print("$ durable worker --poll 0.1 &", flush=True)
    return subprocess.Popen([*durable_command(), "worker", "--poll", "0.1"], cwd=HERE, env=ENV,
                            stderr=subprocess.PIPE, text=True)


def status(execution_id: str) -> str:
    listing = durable_quiet("ls", "--json")
    return next(e["status"] for e in json.loads(listing) if e["id"] == execution_id)


def durable_quiet(*args: str) -> str:
    return subprocess.run([*durable_command(), *args], cwd=HERE, env=ENV, capture_output=True, text=True).stdout


def wait_for(execution_id: str, wanted: set[str], what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if status(execution_id) in wanted:
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def outbox() -> list[str]:
    path = HERE / ".durable" / "demo-outbox.log"
    return [json.loads(line)["subject"] for line in path.read_text().splitlines()] if path.exists() else []


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--async"]):
        raise SystemExit("usage: python samples/onboarding_demo.py [--async]")
    program = "onboarding_async:onboarding" if args else "onboarding:onboarding"
    for leftover in ("demo.db", "demo.db-wal", "demo.db-shm", "demo-outbox.log", "demo-logins.txt"):
        (HERE / ".durable" / leftover).unlink(missing_ok=True)

    say(f"start the onboarding program {program} (it sends a welcome e-mail, then sleeps 2 s)")
    execution_id = durable("run", program, '["ada@example.com", 2, 60]', "--detach").stdout.strip()

    say("a worker picks it up")
    worker = start_worker()
    wait_for(execution_id, {"sleeping"}, "the program to sleep")
    durable("show", execution_id)

    say("crash: kill the worker with SIGKILL while the program sleeps")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    print(f"worker exited with {worker.returncode}; e-mails sent so far: {outbox()}")

    say("a new worker resumes it from the store: it wakes up, checks the login, nudges, waits for approval")
    worker = start_worker()
    wait_for(execution_id, {"waiting"}, "the program to wait for approval")
    durable("show", execution_id)

    say("approve the account with a signal")
    durable("signal", execution_id, "approval", '{"approved": true, "by": "grace"}')
    wait_for(execution_id, {"finished", "failed"}, "the program to finish")

    say("the result")
    durable("result", execution_id)
    print(f"e-mails, each sent exactly once: {outbox()}")

    say("stop the worker (SIGTERM finishes its current transition and exits)")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    print(err.strip().splitlines()[-1] if err.strip() else "", flush=True)


if __name__ == "__main__":
    main()
