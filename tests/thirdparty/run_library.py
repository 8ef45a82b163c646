"""Run a third-party library's own test suite with every generator function of the library compiled by
the durable-generators import hook, and compare it with the same suite run plainly.

    python -m tests.thirdparty.run_library PACKAGE --tests DIR [--src DIR] [--chaos] [--no-compiled]
        [--python EXE] [--rootdir DIR] [--timeout S] [--json FILE] [--verbose] [-- PYTEST ARGS]

``PACKAGE`` is the importable name of the library (``sqlparse``, ``jinja2``); ``--tests`` the directory of
its tests (from the sdist); ``--src`` a directory put first on ``PYTHONPATH`` so that the library is
imported from its source (omit it when the library is installed as ``.py`` files in the interpreter).
Everything after ``--`` goes to pytest unchanged (``-k``, ``-x``, ``-p no:...``).

Each mode runs pytest in its own child interpreter (``--python``, default this one; the cwd is
``--rootdir``, default the parent of ``--tests``, so that the library's pytest configuration applies):

* ``plain``    -- no hook: the baseline.
* ``compiled`` -- ``install_import_hook([PACKAGE], all_generators=True)`` before pytest starts.
* ``chaos``    -- ``--chaos`` adds a run with ``chaos=True``: every suspension of a compiled generator
  round-trips through snapshot -> detach -> restore.  ``--no-compiled`` skips the compiled run then.

It prints, per mode, the tests passed / failed / errored / skipped, the number of compiled generator
functions of the library (``runtime.registry`` entries of its modules), every test that passes plainly
but not in that mode (with the head of its failure), and in chaos mode the round trips
(``runtime.chaos.STATS``) and the suspensions that could not be snapshotted, by reason (the
``UnserializableValueError``'s type and message head), most frequent first, with the functions where
they happened.  The per-reason counts are recorded from outside the runtime: the child wraps
``runtime.snapshot.snapshot``/``restore`` for the calls made by the chaos round trip and re-raises
whatever they raise.

This is a measurement command, not part of the test suite; exit code 0 when no test that passes plainly
fails compiled or in chaos mode, 1 otherwise.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 3600.0
PASS_LIKE = {"passed", "xfailed"}


# --------------------------------------------------------------------------------------- child side

class _TestTimeout(Exception):
    pass


def _reason_of(exc: BaseException) -> tuple[str, str]:
    """(reason, where) of a snapshot failure: the reason without the path to the value, ``where`` the
    durable function and line it was suspended at, and the local the value was reached from."""
    text = str(exc).split("\nhint:", 1)[0]
    where = ""
    m = re.search(r" \(in (\S+), suspended at line (\S+)\)$", text)
    if m:
        where = f"{m.group(1)} line {m.group(2)}"
        text = text[:m.start()]
    path = getattr(exc, "path", None) or []
    if path:
        where += f" {path[0]}" if where else path[0]
    m = re.search(r"(value of type '[^']*'.*)$", text)
    if m:
        reason = m.group(1)
    else:
        m = re.match(r"cannot snapshot (\S+) suspended at line (\d+): (.*)$", text, re.DOTALL)
        if m:  # a non-durable generator delegated to: the place is in the text
            where = f"{m.group(1)} line {m.group(2)}" + (f" {path[0]}" if path else "")
            reason = m.group(3)
        else:
            reason = re.sub(r"^cannot snapshot [^:]*: ", "", text)
    reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"{type(exc).__name__}: {reason}", where


class _ChaosRecorder:
    """Wraps ``runtime.snapshot.snapshot`` and ``restore`` to record what the chaos round trip meets."""

    def __init__(self, keep: list[str]) -> None:
        self.keep = keep
        import importlib

        # ``import runtime.snapshot as m`` would give the function ``runtime.snapshot``, not the module
        chaos_mod = importlib.import_module("runtime.chaos")
        snap_mod = importlib.import_module("runtime.snapshot")

        self.reasons: collections.Counter[str] = collections.Counter()
        self.places: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.errors: collections.Counter[str] = collections.Counter()  # raised to the caller (not skipped)
        self.error_places: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.current_test = ""
        self.trips: collections.Counter[str] = collections.Counter()  # snapshots taken, by function
        self.per_test: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        round_trip = getattr(chaos_mod, "_round_trip", None)
        self._caller = getattr(round_trip, "__code__", None)
        from runtime.errors import UnserializableValueError
        self._unserializable = UnserializableValueError
        for name in ("snapshot", "restore"):
            setattr(snap_mod, name, self._wrap(name, getattr(snap_mod, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        recorder = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if recorder._caller is not None and sys._getframe(1).f_code is not recorder._caller:
                return fn(*args, **kwargs)
            try:
                if name == "snapshot" and recorder.keep and args:
                    recorder._skip(args[0])
                result = fn(*args, **kwargs)
            except BaseException as exc:
                reason, where = _reason_of(exc)
                if name == "snapshot" and isinstance(exc, recorder._unserializable):
                    recorder.reasons[reason] += 1
                    recorder.places[reason][where] += 1
                    recorder.per_test[recorder.current_test]["unserializable: " + reason] += 1
                else:
                    key = f"{name}() raised {reason}"
                    recorder.errors[key] += 1
                    recorder.error_places[key][where] += 1
                    recorder.per_test[recorder.current_test][key] += 1
                raise
            if name == "snapshot" and args:
                ident = recorder._ident(args[0])
                recorder.trips[ident] += 1
                recorder.per_test[recorder.current_test]["round trip: " + ident] += 1
            return result

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    def _skip(self, gen: Any) -> None:
        """``--keep``: refuse to round-trip the generators of the matching functions (chaos skips them)."""
        where = self._ident(gen)
        ident, _, line = where.partition(" line ")
        for pattern in self.keep:
            if pattern in ident:
                raise self._unserializable(f"round trip skipped (--keep {pattern}) (in {ident}, suspended at "
                                           f"line {line or '?'})", type_name="")

    @staticmethod
    def _ident(gen: Any) -> str:
        from runtime import registry

        meta = registry.BY_CODE.get(id(getattr(gen, "gi_code", None)))
        frame = getattr(gen, "gi_frame", None)
        line = f" line {meta.line_of(frame.f_locals.get('_dg_s', 0))}" if meta is not None and frame else ""
        return (meta.ident if meta is not None else getattr(gen, "__qualname__", "?")) + line

    def report(self) -> dict[str, Any]:
        return {
            "trips": self.trips.most_common(),
            "reasons": self.reasons.most_common(),
            "places": {r: c.most_common(8) for r, c in self.places.items()},
            "errors": self.errors.most_common(),
            "error_places": {r: c.most_common(8) for r, c in self.error_places.items()},
            "per_test": {t: dict(c) for t, c in self.per_test.items()},
        }


class _Plugin:
    """Records one outcome per test node id, a per-test time limit, and the chaos round trips per test."""

    def __init__(self, timeout: float, chaos: _ChaosRecorder | None) -> None:
        self.outcomes: dict[str, dict[str, str]] = {}
        self.timeout = timeout
        self.chaos = chaos
        self.round_trips: dict[str, int] = {}

    def _set(self, nodeid: str, status: str, detail: str = "") -> None:
        old = self.outcomes.get(nodeid)
        rank = {"passed": 0, "xfailed": 0, "skipped": 1, "failed": 2, "error": 3}
        if old is not None and rank[old["status"]] >= rank[status]:
            return
        self.outcomes[nodeid] = {"status": status, "detail": detail[-6000:]}

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self._set(report.nodeid or "<collection>", "error", "collection failed:\n" + str(report.longrepr))

    def pytest_runtest_logreport(self, report: Any) -> None:
        detail = str(report.longrepr) if report.longrepr is not None else ""
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                self._set(report.nodeid, "xfailed" if report.skipped else "passed", detail)
            elif report.passed:
                self._set(report.nodeid, "passed")
            elif report.failed:
                self._set(report.nodeid, "failed", detail)
            else:
                self._set(report.nodeid, "skipped", detail)
        elif report.failed:  # setup or teardown
            self._set(report.nodeid, "error", f"error at {report.when}:\n{detail}")
        elif report.skipped and report.when == "setup":
            self._set(report.nodeid, "skipped", detail)

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        if self.chaos is not None:
            self.chaos.current_test = item.nodeid
            from runtime.chaos import STATS
            self._trips_before = STATS["round_trips"]
        if hasattr(signal, "setitimer") and self.timeout:
            signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.chaos is not None:
            from runtime.chaos import STATS
            self.round_trips[nodeid] = STATS["round_trips"] - self._trips_before
            self.chaos.current_test = ""


def _alarm(signum: int, frame: Any) -> None:
    raise _TestTimeout("test did not finish within the time limit (--timeout)")


def run_child(mode: str, package: str, tests: str, timeout: float, pytest_args: list[str],
              keep: list[str]) -> dict[str, Any]:
    import pytest

    report: dict[str, Any] = {"mode": mode, "version": sys.version.split()[0], "package": package}
    already = sorted(n for n in sys.modules if n == package or n.startswith(package + "."))
    if already:
        report["imported_before_hook"] = already
    hook = None
    recorder = None
    if mode != "plain":
        from transpiler import install_import_hook
        hook = install_import_hook([package], all_generators=True, chaos=(mode == "chaos"))
        if mode == "chaos":
            recorder = _ChaosRecorder(keep)
    plugin = _Plugin(timeout, recorder)
    if hasattr(signal, "setitimer") and timeout:
        signal.signal(signal.SIGALRM, _alarm)
    started = time.monotonic()
    args = [tests, "-p", "no:cacheprovider", "-q", *pytest_args]
    report["exit_code"] = int(pytest.main(args, plugins=[plugin]))
    report["seconds"] = round(time.monotonic() - started, 1)
    report["tests"] = plugin.outcomes
    mods = {n: m for n, m in list(sys.modules.items())
            if m is not None and (n == package or n.startswith(package + "."))}
    report["modules"] = len(mods)
    if hook is not None:
        from runtime import registry
        from transpiler.importhook import _Loader

        report["not_compiled_modules"] = sorted(
            n for n, m in mods.items()
            if getattr(m, "__file__", None) and str(m.__file__).endswith(".py")
            and not isinstance(getattr(m.__spec__, "loader", None), _Loader))
        metas = [m for m in registry.BY_NAME.values() if m.module in mods]
        report["compiled_functions"] = len(metas)
        report["compiled_by_module"] = dict(collections.Counter(m.module for m in metas).most_common())
    if recorder is not None:
        from runtime.chaos import STATS
        report["chaos_stats"] = dict(STATS)
        report["chaos"] = recorder.report()
        report["chaos"]["round_trips_per_test"] = plugin.round_trips
    return report


# -------------------------------------------------------------------------------------- parent side

def spawn(mode: str, opts: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        env = dict(os.environ)
        paths = [str(Path(opts.src).resolve())] if opts.src else []
        # the project last, so that its own top-level names (tests, runtime) shadow nothing of the library's
        paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(PROJECT_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONHASHSEED", "0")
        # run as a script, not ``-m tests.thirdparty...``: the library's own ``tests`` package must win
        cmd = [opts.python, str(Path(__file__).resolve()), "--child", mode, "--out", str(out),
               opts.package, "--tests", str(Path(opts.tests).resolve()), "--timeout", str(opts.timeout),
               *[f"--keep={k}" for k in opts.keep],
               "--", *opts.pytest_args]
        rootdir = Path(opts.rootdir).resolve() if opts.rootdir else Path(opts.tests).resolve().parent
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, check=False, cwd=str(rootdir), env=env, capture_output=True, text=True,
                                  timeout=CHILD_TIMEOUT)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = f"{exc.stdout or ''}{exc.stderr or ''}\n(child timed out after {CHILD_TIMEOUT}s)"
            code = -1
        if opts.verbose:
            print(f"--- {mode} child output ---\n{output.rstrip()[-20000:]}\n--- end {mode} child output ---")
        if not out.exists():
            return {"mode": mode, "crashed": f"child exited with {code}:\n{output[-4000:]}", "tests": {},
                    "seconds": round(time.monotonic() - started, 1)}
        return json.loads(out.read_text())


def counts(report: dict[str, Any]) -> dict[str, int]:
    c = collections.Counter(t["status"] for t in report.get("tests", {}).values())
    return {"passed": c["passed"] + c["xfailed"], "failed": c["failed"], "errors": c["error"],
            "skipped": c["skipped"], "total": sum(c.values())}


def differences(plain: dict[str, Any], other: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Tests passing plainly but not in ``other``: (node id, status there, detail)."""
    diffs = []
    for nodeid, t in sorted(plain.get("tests", {}).items()):
        if t["status"] not in PASS_LIKE:
            continue
        got = other.get("tests", {}).get(nodeid)
        if got is None:
            diffs.append((nodeid, "missing", other.get("crashed", "not collected")))
        elif got["status"] not in PASS_LIKE:
            diffs.append((nodeid, got["status"], got["detail"]))
    return diffs


def _head(detail: str, verbose: bool) -> str:
    lines = [ln for ln in detail.strip().splitlines() if ln.strip()]
    if verbose:
        return "\n".join("      " + ln for ln in lines[-60:])
    errs = [ln for ln in lines if re.match(r"^E\s", ln)] or lines[-1:]
    return "\n".join("      " + ln[:200] for ln in errs[:4])


def print_report(opts: argparse.Namespace, reports: dict[str, dict[str, Any]]) -> int:
    plain = reports["plain"]
    print(f"{opts.package}: tests {opts.tests}, Python {plain.get('version', '?')} ({opts.python})")
    exit_code = 0
    header = f"{'mode':9} {'passed':>7} {'failed':>7} {'errors':>7} {'skipped':>8} {'total':>6} {'secs':>6}  compiled generator functions"
    print(header)
    for mode, rep in reports.items():
        c = counts(rep)
        comp = rep.get("compiled_functions", "-")
        print(f"{mode:9} {c['passed']:>7} {c['failed']:>7} {c['errors']:>7} {c['skipped']:>8} {c['total']:>6} "
              f"{rep.get('seconds', 0):>6}  {comp}")
    for mode, rep in reports.items():
        if rep.get("crashed"):
            print(f"[{mode}] CRASHED: {rep['crashed']}")
            exit_code = 1
        if rep.get("imported_before_hook"):
            print(f"[{mode}] WARNING: imported before the hook: {', '.join(rep['imported_before_hook'])}")
        if rep.get("not_compiled_modules"):
            print(f"[{mode}] WARNING: modules not loaded through the hook: {', '.join(rep['not_compiled_modules'])}")
    broken = [(n, t) for n, t in sorted(plain.get("tests", {}).items()) if t["status"] in ("failed", "error")]
    if broken:
        print(f"[plain] {len(broken)} test(s) fail without the hook (not counted as differences):")
        for nodeid, t in broken[:20]:
            print(f"  {t['status']}: {nodeid}")
    for mode, rep in reports.items():
        if mode == "plain":
            continue
        if opts.verbose and rep.get("compiled_by_module"):
            print(f"[{mode}] compiled generator functions by module: "
                  + ", ".join(f"{m} {n}" for m, n in rep["compiled_by_module"].items()))
        diffs = differences(plain, rep)
        print(f"[{mode}] {len(diffs)} test(s) pass plainly but not {mode}:")
        per_test = rep.get("chaos", {}).get("per_test", {})
        for nodeid, status, detail in diffs:
            print(f"  {status.upper()}: {nodeid}")
            print(_head(detail, opts.verbose))
            if per_test.get(nodeid):
                items = sorted(per_test[nodeid].items(), key=lambda kv: -kv[1])
                shown = [kv for kv in items if kv[0].startswith("round trip")][:8]
                shown += [kv for kv in items if not kv[0].startswith("round trip")][:3]
                for what, n in shown:
                    print(f"      (chaos in this test: {n} x {what})")
        if diffs:
            exit_code = 1
        if "chaos_stats" in rep:
            stats = rep["chaos_stats"]
            trips, skipped = stats.get("round_trips", 0), stats.get("unserializable", 0)
            share = trips / (trips + skipped) if trips + skipped else 0.0
            print(f"[{mode}] round trips: {trips}, unserializable suspensions: {skipped} "
                  f"(round-tripped {share * 100:.1f}% of suspensions)")
            chaos = rep.get("chaos", {})
            recorded = sum(n for _, n in chaos.get("reasons", []))
            if recorded != skipped:
                print(f"  (recorded {recorded} unserializable snapshots, STATS says {skipped})")
            if chaos.get("trips"):
                print(f"  round trips by suspension point (first {opts.places * 3}):")
                for where, n in chaos["trips"][:opts.places * 3]:
                    print(f"  {n:>8}  {where}")
                print("  unserializable suspensions by reason:")
            for reason, n in chaos.get("reasons", []):
                print(f"  {n:>8}  {reason}")
                for where, k in chaos.get("places", {}).get(reason, [])[:opts.places]:
                    print(f"  {'':>8}    {k:>7} at {where}")
            for reason, n in chaos.get("errors", []):
                print(f"  {n:>8}  RAISED TO THE CALLER: {reason}")
                for where, k in chaos.get("error_places", {}).get(reason, [])[:opts.places]:
                    print(f"  {'':>8}    {k:>7} at {where}")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(prog="python -m tests.thirdparty.run_library", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", help="the library's importable package name (compiled by the hook)")
    parser.add_argument("--tests", required=True, help="directory of the library's tests")
    parser.add_argument("--src", help="directory put first on PYTHONPATH (the library's source)")
    parser.add_argument("--rootdir", help="cwd of pytest (default: the parent of --tests)")
    parser.add_argument("--chaos", action="store_true", help="also run with chaos=True")
    parser.add_argument("--no-compiled", action="store_true", help="with --chaos: skip the compiled run")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the child runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test (0: none)")
    parser.add_argument("--keep", action="append", default=[], metavar="FUNC",
                        help="chaos: never round-trip generators of functions whose 'module:qualname' contains "
                             "FUNC (repeatable; to find which generator a chaos failure comes from)")
    parser.add_argument("--places", type=int, default=3, help="places shown per unserializable reason")
    parser.add_argument("--json", help="write every mode's full report to this file")
    parser.add_argument("--verbose", action="store_true", help="child output and whole failure tracebacks")
    parser.add_argument("--child", choices=["plain", "compiled", "chaos"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.pytest_args = pytest_args

    if opts.child:
        try:
            report = run_child(opts.child, opts.package, opts.tests, opts.timeout, pytest_args, opts.keep)
        except BaseException:  # noqa: BLE001 -- reported to the parent as a crash
            report = {"mode": opts.child, "crashed": traceback.format_exc(), "tests": {}}
        Path(opts.out).write_text(json.dumps(report))
        return 0

    modes = ["plain"] + ([] if opts.chaos and opts.no_compiled else ["compiled"]) + (["chaos"] if opts.chaos else [])
    reports = {}
    for mode in modes:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        reports[mode] = spawn(mode, opts)
    code = print_report(opts, reports)
    if opts.json:
        Path(opts.json).write_text(json.dumps(reports, indent=1))
    return code


if __name__ == "__main__":
    if "--child" in sys.argv and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # the child runs as a script: its folder is no place to import the library's tests from
    sys.exit(main())
