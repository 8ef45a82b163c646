"""CPython's own generator and coroutine suites (test.test_generators, test.test_yield_from,
test.test_coroutines) with every generator and coroutine function compiled by the import hook; see
tests/cpython/run_suites.py (each run takes a few seconds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 110  # seconds; a run normally takes well under 20


def _run(*flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "tests.cpython.run_suites", *flags], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    return proc


def test_cpython_suites_plain() -> None:
    """Every test passes when compiled, except the allowed ones (tests/cpython/allowed.py)."""
    proc = _run("--version-check")
    assert proc.returncode == 0, "CPython suites fail when compiled:\n" + proc.stdout[-6000:] + proc.stderr[-2000:]


def test_cpython_suites_chaos() -> None:
    """With chaos=True (snapshot/detach/restore at every suspension of a generator, and of a coroutine where
    a snapshot can be taken) at least 90% of the three suites pass, at least 50% of the suspensions round-trip
    in the generator suites and in all three (the rest hold values no snapshot carries), and 35% of
    test_coroutines' ones (its coroutines await generator-based helpers: transient awaits; see
    CHAOS_ROUND_TRIP_SHARE_COROUTINES)."""
    proc = _run("--chaos", "--no-plain")
    assert proc.returncode == 0, "CPython suites under chaos below their thresholds:\n" + proc.stdout[-6000:] \
        + proc.stderr[-2000:]
