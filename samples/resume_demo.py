#!/usr/bin/env python
"""Stop a running generator in one process and finish it in another.

    python samples/resume_demo.py run                 # the whole story in one command
    python samples/resume_demo.py start [STATE_FILE]  # run a few steps, save the generator, exit
    python samples/resume_demo.py resume STATE_FILE   # (a new process) restore it and finish

The generator is ``build_report`` from ``report_builder.py`` (next to this file): it reads a
sales CSV in chunks and yields its progress after each chunk. The import hook compiles that
module when it is imported, which is what makes its generators snapshottable.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # report_builder is imported by this name in every process
    sys.path.insert(0, HERE)

from transpiler import install_import_hook  # noqa: E402

install_import_hook(["report_builder"])  # compile report_builder on import (before importing it)

import runtime  # noqa: E402
import report_builder  # noqa: E402

CSV_NAME = "sales.csv"


def say(text: str = "") -> None:
    print(f"[pid {os.getpid()}] {text}" if text else "", flush=True)


def show_progress(step: int, progress: dict) -> None:
    say(f"  step {step}: {progress['rows_done']:>3}/{progress['rows_total']} rows, "
        f"revenue so far {progress['revenue_so_far']:>9,.2f}")


def show_report(report: dict) -> None:
    say("final report:")
    say(f"  rows processed : {report['rows']}")
    say(f"  total revenue  : {report['revenue']:,.2f}")
    for region, value in report["revenue_by_region"].items():
        say(f"    {region:<6} {value:>10,.2f}")
    units = ", ".join(f"{p} {n}" for p, n in report["units_by_product"].items())
    say(f"  units sold     : {units}")
    say(f"  best region    : {report['best_region']}")
    big = report["biggest_sale"]
    say(f"  biggest sale   : {big['amount']:,.2f} ({big['product']}, {big['region']}, {big['date']})")


def start(state_file: str, steps: int, chunk_size: int, exiting: bool = True) -> None:
    csv_path = os.path.join(os.path.dirname(os.path.abspath(state_file)), CSV_NAME)
    report_builder.write_sample_sales(csv_path)
    say(f"process 1 started: building a report from {csv_path}")
    gen = report_builder.build_report(csv_path, chunk_size)
    for step in range(1, steps + 1):
        try:
            progress = next(gen)
        except StopIteration:
            say("the report finished before the snapshot; use fewer --steps")
            return
        show_progress(step, progress)
    data = runtime.snapshot(gen)
    with open(state_file, "wb") as f:
        f.write(data)
    runtime.detach(gen)  # it continues elsewhere: drop it here without running its cleanup
    say(f"snapshot taken after step {steps}: {len(data)} bytes written to {state_file}")
    if exiting:
        say("process 1 exits now; the generator lives on in that file")
    else:
        say("process 1 dropped its generator; it lives on only in that file")


def resume(state_file: str, first_step: int, result_file: str | None) -> None:
    with open(state_file, "rb") as f:
        data = f.read()
    say(f"process 2 started: restoring {len(data)} bytes from {state_file}")
    gen = runtime.restore(data)
    say("restored: the generator continues right after the last step of process 1")
    step = first_step
    while True:
        try:
            progress = next(gen)
        except StopIteration as done:
            report = done.value
            break
        show_progress(step, progress)
        step += 1
    show_report(report)
    if result_file:
        with open(result_file, "w") as f:
            json.dump(report, f)


def run_all(steps: int, chunk_size: int) -> int:
    with tempfile.TemporaryDirectory(prefix="durable-demo-") as tmp:
        state_file = os.path.join(tmp, "state.bin")
        result_file = os.path.join(tmp, "result.json")
        print("== 1. start: run the first steps, then snapshot to a file ==", flush=True)
        start(state_file, steps, chunk_size, exiting=False)
        print()
        print("== 2. resume: a brand-new Python process restores the file and finishes ==", flush=True)
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "resume", state_file,
                                "--first-step", str(steps + 1), "--result-file", result_file])
        if child.returncode != 0:
            say(f"the resume process failed (exit code {child.returncode})")
            return child.returncode
        print()
        print("== 3. check: the same report, built without interruption in this process ==", flush=True)
        with open(result_file) as f:
            resumed = json.load(f)
        gen = report_builder.build_report(os.path.join(tmp, CSV_NAME), chunk_size)
        try:
            while True:
                next(gen)
        except StopIteration as done:
            expected = json.loads(json.dumps(done.value))
        if resumed == expected:
            say("identical report: stopping and resuming in another process changed nothing")
            return 0
        say("MISMATCH between the resumed report and an uninterrupted run!")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="start, then resume in a second process (one command)")
    p_start = sub.add_parser("start", help="run a few steps and save the generator")
    p_start.add_argument("state_file", nargs="?",
                         default=os.path.join(tempfile.gettempdir(), "durable-demo", "state.bin"),
                         help="where to write the snapshot (default: %(default)s)")
    for p in (p_run, p_start):
        p.add_argument("--steps", type=int, default=3, help="steps before the snapshot (default: %(default)s)")
        p.add_argument("--chunk-size", type=int, default=20, help="rows per step (default: %(default)s)")
    p_resume = sub.add_parser("resume", help="restore a saved generator and run it to completion")
    p_resume.add_argument("state_file")
    p_resume.add_argument("--first-step", type=int, default=1, help="number of the first step shown")
    p_resume.add_argument("--result-file", help="also write the final report there as JSON")
    args = parser.parse_args(argv)

    if args.command == "run":
        return run_all(args.steps, args.chunk_size)
    if args.command == "start":
        os.makedirs(os.path.dirname(os.path.abspath(args.state_file)), exist_ok=True)
        start(args.state_file, args.steps, args.chunk_size)
        print(f"\nnow continue it in a new process:\n  {sys.executable} {sys.argv[0]} resume {args.state_file}")
        return 0
    resume(args.state_file, args.first_step, args.result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
