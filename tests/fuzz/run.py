"""Long-mode fuzz driver for ``runtime.restore`` and ``runtime.inspect_snapshot``.

    python -m tests.fuzz.run --inputs 200000 --workers 4 --seed 0 --max-seconds 600 [--findings DIR]
    python -m tests.fuzz.run --replay DIR_OR_FILE...      # check saved inputs again, in this process

The contract under test: given ANY bytes, restore and inspect_snapshot either succeed or raise a
``runtime.SnapshotError`` subclass; never another exception, never a hang, never a crash of the
process, never more than 200 bytes of peak memory per input byte plus 50 MB; restore (and the
inspector) call nothing the data names (the target's functions and hooks record themselves, and
``print`` is replaced by a recorder); a restored generator dropped with ``runtime.detach`` runs no
user code and prints no "Exception ignored" noise.

The parent runs worker subprocesses, each over a range of seeds (``grammar.generate(seed)``). A
worker writes each input to its state file before running it; the parent watches the state files:
a worker stuck on one input longer than the timeout is a hang, a worker that dies is a crash; either
way the input is saved and the worker restarted past it. Findings go to ``--findings`` (default
/tmp/dg-fuzz-findings), one directory per distinct finding with its smallest inputs and a one-line
description. At the end a table is printed; the exit status is 1 if anything was found.
"""
from __future__ import annotations

import argparse
import builtins
import collections
import gc
import hashlib
import inspect
import io
import json
import os
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz import grammar  # noqa: E402

MEMORY_PER_BYTE = 200
MEMORY_SLACK = 50 * 1024 * 1024
MEASURE_FROM = 64 * 1024  # inputs this big have their own peak memory measured (others: when it grows)
HEADER = struct.Struct("<qQ")  # state file: seed (or input index), input length; then the input bytes
GENERATING = 2 ** 64 - 1  # state file length while the worker makes the input (a hang there is the fuzzer's)
RECYCLE = 3  # worker exit status: restart me at the seed I printed (my memory high-water mark is spent)


def slow_limit(size: int) -> float:
    """Seconds one call may take on an input of ``size`` bytes before it counts as slow."""
    return 1.0 + size * 2e-6


def hang_limit(size: int, timeout: float) -> float:
    return timeout + size * 5e-6


# =============================================================================================
# the worker: checks one input at a time
# =============================================================================================

class Interrupted(BaseException):
    """Raised by the per-input timer in Python code that runs too long."""


class Recorder:
    """Stands in for a callable a snapshot could name; remembers every call."""

    def __init__(self, name: str, calls: list[Any]) -> None:
        self.name = name
        self.calls = calls
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((self.name, len(args)))


class Checker:
    """Runs restore and inspect_snapshot on one input and judges the outcome against the contract."""

    def __init__(self, interrupt_after: float | None = 5.0) -> None:
        import runtime
        self.runtime = runtime
        self.SnapshotError = runtime.SnapshotError
        self.restore = runtime.restore
        self.inspect = runtime.inspect_snapshot
        self.detach = runtime.detach
        self.target = grammar.target()
        grammar.templates()
        self.calls: list[Any] = self.target.CALLS
        self.unraisable: list[str] = []
        self.warned: list[str] = []
        self.interrupt_after = interrupt_after
        self._install_guards()
        self.peaks = Peaks()
        for _, _, data in grammar.templates():  # warm up: what restore imports lazily is imported now
            self.check(data)
        self.calls.clear()
        gc.collect()
        self.peaks = Peaks()
        self.peaks.reset()

    def _install_guards(self) -> None:
        import os as _os
        import subprocess as _subprocess
        builtins.print = Recorder("print", self.calls)  # type: ignore[assignment]
        for owner, names in ((_os, ("system", "popen", "execv", "execvp", "remove", "unlink", "kill")),
                             (_subprocess, ("Popen", "run", "call", "check_output")),
                             (builtins, ("breakpoint", "input"))):  # (not exec: importlib runs modules with it)
            for name in names:
                if hasattr(owner, name):
                    setattr(owner, name, Recorder(f"{owner.__name__}.{name}", self.calls))
        sys.unraisablehook = self._on_unraisable
        warnings.simplefilter("always")
        warnings.showwarning = self._on_warning  # type: ignore[assignment]
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_unraisable(self, info: Any) -> None:
        self.unraisable.append(f"{type(info.exc_value).__name__}: {info.exc_value} "
                               f"(in {info.err_msg or 'Exception ignored in'} {_short_repr(info.object)})")

    def _on_warning(self, message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        self.warned.append(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")

    @staticmethod
    def _on_alarm(signum: int, frame: Any) -> None:
        raise Interrupted()

    # -- one input --------------------------------------------------------------------------

    def check(self, data: bytes) -> tuple[list[str], list[dict[str, Any]], int | None]:
        """(outcomes, findings, peak memory above the resident size before the input, when measured)."""
        outcomes: list[str] = []
        findings: list[dict[str, Any]] = []
        big = len(data) >= MEASURE_FROM
        if big:
            self.peaks.reset()
        slow = slow_limit(len(data))
        gen = self._call("restore", self.restore, data, outcomes, findings, slow)
        if gen is not None:
            self._drop(gen, findings)
            del gen
        self._call("inspect", self._inspect, data, outcomes, findings, slow)
        peak = self.peaks.growth()
        if peak is not None and (big or peak > MEMORY_SLACK // 4):
            self.peaks.reset()  # measure the next inputs from here
        elif not big:
            peak = None
        if self.warned:
            findings.append({"kind": "warning", "api": "restore/inspect", "type": "warning",
                             "message": self.warned[0], "where": self.warned[0].rsplit("(", 1)[-1].rstrip(")")})
            self.warned.clear()
        return outcomes, findings, peak

    def _inspect(self, data: bytes) -> Any:
        info = self.inspect(data)
        str(info)
        info.to_dict()
        return None

    def _call(self, api: str, fn: Any, data: bytes, outcomes: list[str], findings: list[dict[str, Any]],
              slow: float) -> Any:
        calls = self.calls
        result = None
        timer = self.interrupt_after is not None and hasattr(signal, "setitimer")
        start = time.perf_counter()
        try:
            if timer:
                signal.setitimer(signal.ITIMER_REAL, max(self.interrupt_after, slow * 3))  # type: ignore[arg-type]
            try:
                result = fn(data)
            finally:
                if timer:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            outcomes.append(f"{api}: ok")
        except self.SnapshotError as exc:
            outcomes.append(f"{api}: {type(exc).__name__}")
        except Interrupted as exc:
            outcomes.append(f"{api}: INTERRUPTED")
            findings.append(_finding("hang", api, exc, f"interrupted after {time.perf_counter() - start:.1f} s"))
        except BaseException as exc:  # noqa: BLE001 - anything else is what we are looking for
            outcomes.append(f"{api}: {type(exc).__name__}")
            findings.append(_finding("exception", api, exc))
        elapsed = time.perf_counter() - start
        if elapsed > slow:
            findings.append({"kind": "slow", "api": api, "type": "slow", "where": "",
                             "message": f"{api} took {elapsed:.2f} s on {len(data)} bytes (limit {slow:.2f} s)",
                             "elapsed": elapsed})
        if calls:
            names = sorted({str(c[0]) for c in calls})
            findings.append({"kind": "called", "api": api, "type": "call", "where": ",".join(names),
                             "message": f"{api} called {', '.join(names)}: {[c[:2] for c in calls[:4]]!r}"[:300]})
            calls.clear()
        return result

    def _drop(self, gen: Any, findings: list[dict[str, Any]]) -> None:
        """Detach a restored generator and drop it: no exception, no user code, no unraisable noise."""
        if not inspect.isgenerator(gen):
            findings.append({"kind": "exception", "api": "restore", "type": "NotAGenerator", "where": "",
                             "message": f"restore returned {type(gen).__name__}"})
            return
        try:
            self.detach(gen)
        except BaseException as exc:  # noqa: BLE001
            findings.append(_finding("detach", "detach", exc))
        del gen
        gc.collect(0)
        if self.calls:
            names = sorted({str(c[0]) for c in self.calls})
            findings.append({"kind": "called", "api": "detach", "type": "call", "where": ",".join(names),
                             "message": f"detach/drop ran {', '.join(names)}"})
            self.calls.clear()
        if self.unraisable:
            findings.append({"kind": "noise", "api": "detach", "type": "unraisable",
                             "where": re.sub(r"0x[0-9a-f]+", "", self.unraisable[0])[:120],
                             "message": self.unraisable[0][:300]})
            self.unraisable.clear()


def _short_repr(obj: Any) -> str:
    try:
        return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))[:80]
    except BaseException:  # noqa: BLE001
        return f"<{type(obj).__name__}>"


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback inside the project (else the innermost at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if str(ROOT) in f.filename and "/tests/fuzz/" not in f.filename]
    chosen = inside[-1] if inside else (frames[-1] if frames else None)
    if chosen is None:
        return "?"
    return f"{os.path.relpath(chosen.filename, ROOT) if str(ROOT) in chosen.filename else os.path.basename(chosen.filename)}:{chosen.lineno} ({chosen.name})"


def _finding(kind: str, api: str, exc: BaseException, message: str | None = None) -> dict[str, Any]:
    try:
        text = message or f"{type(exc).__name__}: {exc}"
    except BaseException:  # noqa: BLE001 - str() of the exception failed (an int too long to print, say)
        text = f"{type(exc).__name__}: <str() failed>"
    frames = traceback.extract_tb(exc.__traceback__)
    tb = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames[-6:]))
    return {"kind": kind, "api": api, "type": type(exc).__name__, "where": _where(exc), "message": text[:300],
            "traceback": tb}


def _maxrss() -> int:
    """Peak resident memory of this process in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class Peaks:
    """Peak resident memory per input: Linux lets a process reset its high-water mark
    (``/proc/self/clear_refs``), after which ``ru_maxrss`` is the peak since the reset. Where that
    is not possible the growth is measured from the start and the worker restarts itself when its
    high-water mark is spent (``Peaks.spent``)."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self.fd = None
        self.base = _maxrss()

    def reset(self) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, b"5")
            except OSError:
                self.fd = None
        self.base = _maxrss()

    def growth(self) -> int | None:
        """How far the peak rose above the resident size at the last reset."""
        return _maxrss() - self.base

    @property
    def spent(self) -> bool:
        return self.fd is None and self.growth() > MEMORY_SLACK  # type: ignore[operator]


def finding_key(f: dict[str, Any], family: str) -> str:
    kind = f["kind"]
    base_family = family.replace("-large", "")
    if kind in ("slow", "memory", "hang", "crash") and not f.get("where"):
        return f"{kind}|{f['api']}|{base_family}"
    return f"{kind}|{f['api']}|{f['type']}|{f.get('where', '')}"


def _slug(key: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80].strip("_")
    return f"{text}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def save_finding(findings_dir: Path, key: str, f: dict[str, Any], family: str, seed: int, data: bytes) -> str:
    """Write the input and a one-line description; returns the input's path."""
    folder = findings_dir / _slug(key)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{len(data):08d}-{family}-{seed}.bin"
    path.write_bytes(data)
    line = f"{f['kind']} in {f['api']}: {f['message']} [where: {f.get('where', '')}] family={family} seed={seed} " \
           f"size={len(data)} python={sys.version.split()[0]}"
    path.with_suffix(".txt").write_text(line + "\n" + (f"traceback: {f['traceback']}\n" if f.get("traceback") else ""))
    return str(path)


def worker_main(args: argparse.Namespace) -> int:
    """Check inputs ``start``..``end`` (seeds, or indexes into ``--inputs-file``), reporting on stdout."""
    import faulthandler
    out = sys.stdout
    faulthandler.enable()
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=False)
    explicit: list[tuple[str, bytes]] | None = None
    if args.inputs_file:
        import msgpack
        explicit = [(str(n), bytes(d)) for n, d in msgpack.unpackb(Path(args.inputs_file).read_bytes(), raw=False)]
    checker = Checker(interrupt_after=args.interrupt)
    findings_dir = Path(args.findings)
    state = os.open(args.state, os.O_RDWR | os.O_CREAT, 0o600)
    stats: collections.Counter[str] = collections.Counter()
    seen: dict[str, int] = {}  # finding key -> smallest input size saved
    last_report = time.monotonic()
    peak_ratio = 0.0
    peak_info = ""
    emit = out.write

    def report(extra: dict[str, Any] | None = None) -> None:
        nonlocal stats
        message: dict[str, Any] = {"stats": dict(stats), "peak_ratio": peak_ratio, "peak_info": peak_info}
        if extra:
            message.update(extra)
        emit(json.dumps(message) + "\n")
        out.flush()
        stats = collections.Counter()

    index = args.start
    while index < args.end:
        begin = time.perf_counter()
        os.pwrite(state, HEADER.pack(index, GENERATING), 0)
        if explicit is not None:
            family, data = explicit[index]
        else:
            try:
                family, data = grammar.generate(index, large=args.large)
            except Exception:  # noqa: BLE001 - a bug of the fuzzer itself: say so, skip the seed
                stats["grammar errors (fuzzer bugs, skipped)"] += 1
                sys.stderr.write(f"grammar error at seed {index}:\n{traceback.format_exc()}")
                index += 1
                continue
        os.pwrite(state, HEADER.pack(index, len(data)) + data, 0)
        outcomes, found, traced_peak = checker.check(data)
        stats["inputs"] += 1
        stats["bytes"] += len(data)
        stats[f"family {family}"] += 1
        took = int((time.perf_counter() - begin) * 1e6)
        stats[f"time {family}"] += took
        if len(data) < 4096:
            stats["small inputs"] += 1
            stats["small time"] += took
        for outcome in outcomes:
            stats[outcome] += 1
        peak = traced_peak
        if peak is not None and data:
            ratio = peak / len(data)
            if ratio > peak_ratio and len(data) >= MEASURE_FROM:
                peak_ratio, peak_info = ratio, f"{peak / 1e6:.1f} MB for {len(data)} bytes ({family}, input {index})"
            if peak > MEMORY_PER_BYTE * len(data) + MEMORY_SLACK:
                found.append({"kind": "memory", "api": "restore/inspect", "type": "memory", "where": "",
                              "message": f"peak {peak / 1e6:.1f} MB for {len(data)} bytes "
                                         f"({peak / len(data):.0f} bytes per input byte)"})
        for f in found:
            key = finding_key(f, family)
            stats[f"finding {key}"] += 1
            smallest = seen.get(key)
            if smallest is None or len(data) < smallest:
                seen[key] = len(data)
                path = save_finding(findings_dir, key, f, family, index, data)
                emit(json.dumps({"finding": f, "key": key, "family": family, "seed": index, "size": len(data),
                                 "path": path}) + "\n")
                out.flush()
        index += 1
        now = time.monotonic()
        if now - last_report > 0.1:
            report({"next": index})
            last_report = now
        if checker.peaks.spent:  # the high-water mark is spent: a fresh process measures the next inputs
            report({"next": index, "recycle": True})
            os._exit(RECYCLE)
    report({"next": index, "finished": True})
    return 0


# =============================================================================================
# the parent: runs workers, watches them, prints the table
# =============================================================================================

class Worker:
    def __init__(self, campaign: "Campaign", number: int, start: int, end: int) -> None:
        self.campaign = campaign
        self.number = number
        self.start = start
        self.end = end
        self.proc: subprocess.Popen[bytes] | None = None
        self.state_path = campaign.workdir / f"worker{number}.state"
        self.err_path = campaign.workdir / f"worker{number}.stderr"
        self.buffer = b""
        self.finished = False
        self.current = -1
        self.since = time.monotonic()
        self.spawn(start)

    def spawn(self, start: int) -> None:
        self.start = start
        if start >= self.end:
            self.finished = True
            self.proc = None
            return
        c = self.campaign
        command = [sys.executable, "-X", "faulthandler", "-m", "tests.fuzz.run", "--worker", "--start", str(start),
                   "--end", str(self.end), "--state", str(self.state_path), "--findings", str(c.findings),
                   "--large", str(c.large), "--interrupt", str(c.interrupt)]
        if c.inputs_file:
            command += ["--inputs-file", str(c.inputs_file)]
        self.state_path.write_bytes(HEADER.pack(-1, 0))
        err = open(self.err_path, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(command, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=err, env=env)
        err.close()
        self.buffer = b""
        self.current = -1
        self.since = time.monotonic()
        c.spawns += 1

    def read_state(self) -> tuple[int, bytes]:
        try:
            raw = self.state_path.read_bytes()
        except OSError:
            return -1, b""
        if len(raw) < HEADER.size:
            return -1, b""
        seed, size = HEADER.unpack_from(raw)
        return seed, raw[HEADER.size:HEADER.size + size] if size != GENERATING else b""

    def state_seed_and_size(self) -> tuple[int, int]:
        try:
            with open(self.state_path, "rb") as f:
                raw = f.read(HEADER.size)
        except OSError:
            return -1, 0
        if len(raw) < HEADER.size:
            return -1, 0
        return HEADER.unpack(raw)


class Campaign:
    def __init__(self, *, inputs: int, workers: int, seed: int, max_seconds: float, findings: Path,
                 timeout: float, large: float, interrupt: float, inputs_file: Path | None = None,
                 families: list[str] | None = None, quiet: bool = False) -> None:
        self.inputs = inputs
        self.seed = seed
        self.max_seconds = max_seconds
        self.findings = findings
        self.timeout = timeout
        self.large = large
        self.interrupt = interrupt
        self.inputs_file = inputs_file
        self.quiet = quiet
        self.workdir = Path(tempfile.mkdtemp(prefix="dg-fuzz-"))
        self.stats: collections.Counter[str] = collections.Counter()
        self.keys: dict[str, dict[str, Any]] = {}
        self.spawns = 0
        self.hangs = 0
        self.crashes = 0
        self.peak_ratio = 0.0
        self.peak_info = ""
        self.workers_count = workers
        self.worker_list: list[Worker] = []
        findings.mkdir(parents=True, exist_ok=True)

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        self.began = time.monotonic()
        per = -(-self.inputs // self.workers_count)
        for k in range(self.workers_count):
            start = self.seed + k * per
            end = min(self.seed + self.inputs, start + per)
            if start < end:
                self.worker_list.append(Worker(self, k, start, end))
        deadline = self.began + self.max_seconds
        try:
            while any(not w.finished for w in self.worker_list):
                if time.monotonic() > deadline:
                    for w in self.worker_list:
                        self._stop(w)
                    self.stats["stopped at the time limit"] += 1
                    break
                self._poll()
        finally:
            for w in self.worker_list:
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
        self.elapsed = time.monotonic() - self.began
        shutil.rmtree(self.workdir, ignore_errors=True)
        return 1 if self.keys else 0

    def _stop(self, w: Worker) -> None:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
            self._drain(w)
        w.finished = True

    def _poll(self) -> None:
        live = {w.proc.stdout.fileno(): w for w in self.worker_list
                if not w.finished and w.proc is not None and w.proc.stdout is not None}
        if live:
            ready, _, _ = select.select(list(live), [], [], 0.2)
            for fd in ready:
                w = live[fd]
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    w.buffer += chunk
                    self._lines(w)
        now = time.monotonic()
        for w in self.worker_list:
            if w.finished or w.proc is None:
                continue
            code = w.proc.poll()
            if code is not None:
                self._drain(w)
                self._exited(w, code)
                continue
            seed, size = w.state_seed_and_size()
            if seed != w.current:
                w.current, w.since = seed, now
            elif seed >= 0 and now - w.since > hang_limit(0 if size == GENERATING else size, self.timeout):
                self._hang(w)

    def _drain(self, w: Worker) -> None:
        if w.proc is not None and w.proc.stdout is not None:
            rest = w.proc.stdout.read()
            if rest:
                w.buffer += rest
            self._lines(w)

    def _lines(self, w: Worker) -> None:
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "stats" in message:
                self.stats.update(message["stats"])
                if message.get("peak_ratio", 0) > self.peak_ratio:
                    self.peak_ratio, self.peak_info = message["peak_ratio"], message["peak_info"]
                if "next" in message:
                    w.next = message["next"]
                if message.get("finished"):
                    w.finished_clean = True
            if "finding" in message:
                self._record(message["key"], message["finding"], message["family"], message["seed"],
                             message["size"], message["path"])

    def _record(self, key: str, f: dict[str, Any], family: str, seed: int, size: int, path: str) -> None:
        entry = self.keys.get(key)
        if entry is None:
            entry = self.keys[key] = {"finding": f, "families": set(), "smallest": (size, family, seed, path),
                                      "first_seed": seed}
            if not self.quiet:
                print(f"FINDING {key}\n    {f['message'][:200]}\n    family={family} seed={seed} size={size} -> {path}",
                      file=sys.stderr, flush=True)
        entry["families"].add(family)
        if size < entry["smallest"][0]:
            entry["smallest"] = (size, family, seed, path)
            entry["finding"] = f

    def _exited(self, w: Worker, code: int) -> None:
        if code == 0 and getattr(w, "finished_clean", False):
            w.finished = True
            w.proc = None
            return
        if code == RECYCLE:
            w.finished_clean = False
            w.spawn(getattr(w, "next", w.start))
            return
        seed, size = w.state_seed_and_size()
        if size == GENERATING:  # died making its input: the fuzzer's own bug
            self.stats["grammar errors (fuzzer bugs, skipped)"] += 1
            sys.stderr.write(f"grammar crash at seed {seed} (a fuzzer bug)\n{self._stderr_tail(w)}\n")
            w.spawn(seed + 1)
            return
        seed, data = w.read_state()
        if seed < 0:  # died before its first input: a broken worker, not a finding
            tail = self._stderr_tail(w)
            raise SystemExit(f"fuzz worker {w.number} failed to start (exit {code}):\n{tail}")
        self.crashes += 1
        how = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"
        tail = self._stderr_tail(w)
        fatal = next((line for line in tail.splitlines() if "Fatal Python error" in line or "Error" in line), "")
        f = {"kind": "crash", "api": "restore/inspect", "type": how, "where": "",
             "message": f"worker {how}: {fatal.strip()[:200]}", "traceback": _stack_from(tail)}
        self._worker_finding(w, f, seed, data)
        w.spawn(seed + 1)

    def _hang(self, w: Worker) -> None:
        assert w.proc is not None
        seed, size = w.state_seed_and_size()
        if size == GENERATING:  # the fuzzer's own bug: not a finding
            w.proc.kill()
            w.proc.wait()
            self._drain(w)
            self.stats["grammar errors (fuzzer bugs, skipped)"] += 1
            sys.stderr.write(f"grammar hang at seed {seed} (a fuzzer bug)\n{self._stderr_tail(w)}\n")
            w.spawn(seed + 1)
            return
        seed, data = w.read_state()
        if hasattr(signal, "SIGUSR1"):
            try:
                w.proc.send_signal(signal.SIGUSR1)  # faulthandler dumps the stuck stack
                time.sleep(0.3)
            except OSError:
                pass
        w.proc.kill()
        w.proc.wait()
        self._drain(w)
        self.hangs += 1
        tail = self._stderr_tail(w)
        f = {"kind": "hang", "api": "restore/inspect", "type": "hang", "where": "",
             "message": f"no progress for {time.monotonic() - w.since:.0f} s on {len(data)} bytes",
             "traceback": _stack_from(tail)}
        self._worker_finding(w, f, seed, data)
        w.spawn(seed + 1)

    def _worker_finding(self, w: Worker, f: dict[str, Any], seed: int, data: bytes) -> None:
        family = self._family_of(seed)
        if f.get("traceback"):
            f["where"] = f["traceback"].split(" <- ")[0]
        key = finding_key(f, family)
        self.stats["inputs"] += 1
        self.stats[f"family {family}"] += 1
        self.stats[f"finding {key}"] += 1
        path = save_finding(self.findings, key, f, family, seed, data)
        self._record(key, f, family, seed, len(data), path)

    def _family_of(self, seed: int) -> str:
        if self.inputs_file:
            import msgpack
            names = [n for n, _ in msgpack.unpackb(Path(self.inputs_file).read_bytes(), raw=False)]
            return str(names[seed]) if 0 <= seed < len(names) else "?"
        return grammar.generate(seed, large=self.large)[0] if seed >= 0 else "?"

    @staticmethod
    def _stderr_tail(w: Worker) -> str:
        try:
            raw = w.err_path.read_bytes()
        except OSError:
            return ""
        text = raw[-8000:].decode("utf-8", "replace")
        w.err_path.write_bytes(b"")
        return text

    # -- the table ---------------------------------------------------------------------------

    def table(self) -> str:
        s = self.stats
        n = s["inputs"]
        rate = n / self.elapsed if self.elapsed else 0.0
        lines = [f"fuzz: Python {sys.version.split()[0]}, {len(self.worker_list)} worker(s), seeds "
                 f"{self.seed}..{self.seed + self.inputs - 1}, {self.elapsed:.1f} s"
                 + (" (stopped at --max-seconds)" if s["stopped at the time limit"] else ""),
                 f"  inputs run            {n}",
                 f"  inputs/second         {rate:.0f} total, {rate / max(1, len(self.worker_list)):.0f} per worker",
                 f"  inputs/second/worker while checking (no startups, no hang waits, generation included): "
                 f"{n / max(1e-9, sum(v for k, v in s.items() if k.startswith('time ')) / 1e6):.0f}",
                 f"  inputs under 4 KB: {s['small inputs']}, {s['small inputs'] / max(1e-9, s['small time'] / 1e6):.0f} "
                 f"inputs/second/worker while checking",
                 f"  input bytes           {s['bytes']} (mean {s['bytes'] // max(1, n)} per input)",
                 f"  hangs                 {self.hangs}",
                 f"  crashes               {self.crashes}",
                 f"  worker (re)starts     {self.spawns}",
                 f"  peak memory per input byte (inputs >= {MEASURE_FROM // 1024} KB): "
                 f"{self.peak_ratio:.0f}" + (f"  [{self.peak_info}]" if self.peak_info else ""),
                 "  outcomes:"]
        for api in ("restore", "inspect"):
            for key, count in sorted(((k, v) for k, v in s.items() if k.startswith(api + ":")), key=lambda kv: -kv[1]):
                lines.append(f"    {key:<40} {count}")
        lines.append("  families (inputs, mean µs per input):")
        for key, count in sorted(((k, v) for k, v in s.items() if k.startswith("family ")), key=lambda kv: -kv[1]):
            fam = key[7:]
            lines.append(f"    {fam:<22} {count:>8}  {s['time ' + fam] / max(1, count):>10.0f}")
        if s["grammar errors (fuzzer bugs, skipped)"]:
            lines.append(f"  grammar errors (fuzzer bugs, seeds skipped): {s['grammar errors (fuzzer bugs, skipped)']}")
        lines.append(f"  FINDINGS: {len(self.keys)} distinct" + ("" if self.keys else " (none)"))
        for key, entry in sorted(self.keys.items()):
            f = entry["finding"]
            size, family, seed, path = entry["smallest"]
            lines.append(f"    [{s['finding ' + key]}x] {key}")
            lines.append(f"        {f['message'][:240]}")
            if f.get("traceback"):
                lines.append(f"        at {f['traceback'][:240]}")
            lines.append(f"        families: {', '.join(sorted(entry['families']))}; smallest: {size} bytes "
                         f"({family}, seed {seed}) {path}")
        return "\n".join(lines)


def _stack_from(text: str) -> str:
    """The innermost frames of a faulthandler dump."""
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', text)
    return " <- ".join(f"{os.path.basename(f)}:{line} ({name})" for f, line, name in frames[:6])


def replay(paths: list[str]) -> int:
    """Check saved inputs in this process and print what each does (no isolation: a crash ends it)."""
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        files += sorted(path.rglob("*.bin")) if path.is_dir() else [path]
    checker = Checker(interrupt_after=30.0)
    bad = 0
    for path in files:
        data = path.read_bytes()
        start = time.perf_counter()
        outcomes, found, peak = checker.check(data)
        took = time.perf_counter() - start
        sys.stdout.write(f"{path} ({len(data)} bytes, {took:.3f} s): {', '.join(outcomes)}\n")
        for f in found:
            bad += 1
            sys.stdout.write(f"    {f['kind']} in {f['api']}: {f['message'][:300]} [{f.get('where', '')}]\n")
    return 1 if bad else 0


def run_campaign(*, inputs: int, workers: int = 1, seed: int = 0, max_seconds: float = 600.0,
                 findings: str | Path = "/tmp/dg-fuzz-findings", timeout: float = 5.0, large: float = 0.01,
                 interrupt: float = 4.0, inputs_file: str | Path | None = None, quiet: bool = False) -> Campaign:
    """Run a campaign and return it (``.keys`` holds the distinct findings, ``.table()`` the summary)."""
    campaign = Campaign(inputs=inputs, workers=workers, seed=seed, max_seconds=max_seconds, findings=Path(findings),
                        timeout=timeout, large=large, interrupt=interrupt,
                        inputs_file=Path(inputs_file) if inputs_file else None, quiet=quiet)
    campaign.run()
    return campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=20000, help="how many inputs (seeds) to run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--findings", default="/tmp/dg-fuzz-findings")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds without progress that make a hang")
    parser.add_argument("--large", type=float, default=0.01, help="share of inputs of about 1 MB")
    parser.add_argument("--interrupt", type=float, default=4.0, help="per-call timer (seconds) in the worker")
    parser.add_argument("--inputs-file", help="msgpack list of [name, bytes] to check instead of seeds")
    parser.add_argument("--replay", nargs="+", metavar="PATH", help="check saved inputs in this process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.replay:
        return replay(args.replay)
    inputs = args.inputs
    if args.inputs_file:
        import msgpack
        inputs = len(msgpack.unpackb(Path(args.inputs_file).read_bytes(), raw=False))
    campaign = Campaign(inputs=inputs, workers=args.workers, seed=0 if args.inputs_file else args.seed,
                        max_seconds=args.max_seconds, findings=Path(args.findings), timeout=args.timeout,
                        large=args.large, interrupt=args.interrupt,
                        inputs_file=Path(args.inputs_file) if args.inputs_file else None)
    code = campaign.run()
    sys.stdout.write(campaign.table() + "\n")
    sys.stdout.write(f"findings saved under {args.findings}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
