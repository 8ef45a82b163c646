"""Benchmark: cold compile throughput, and warm imports through the hook's cache against plain imports."""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import median, paired_ratio  # noqa: E402

DURABLE_FUNCTIONS = textwrap.dedent('''


    from runtime import durable


    @durable
    def bench_flow_a(items):
        done = []
        for item in items:
            try:
                got = yield item
            except ValueError as exc:
                got = str(exc)
            done.append(got)
        return done


    @durable
    def bench_flow_b(n):
        total = 0
        with open(__file__) as fh:
            for i in range(n):
                total += yield fh.readline()
        return total


    @durable
    def bench_flow_c(pages):
        while pages:
            page = pages.pop()
            result = yield from bench_flow_a(page)
            if not result:
                break
''')


def _helpers(count: int) -> str:
    parts = ['"""A synthetic module: many plain functions, a few durable ones."""', "import math"]
    for i in range(count):
        parts.append(textwrap.dedent(f'''

            def helper_{i}(values, scale={i}):
                """Helper {i}."""
                total = 0
                for v in values:
                    if v % 2:
                        total += v * scale
                    else:
                        total -= math.floor(v / 3)
                return total
        '''))
    return "\n".join(parts)


def modules() -> dict[str, str]:
    """Name -> source of every module measured: three durable functions each."""
    stdlib = Path(importlib.util.find_spec("argparse").origin).read_text(encoding="utf-8")  # type: ignore[arg-type]
    return {
        "synthetic-500": _helpers(45) + DURABLE_FUNCTIONS,
        "synthetic-5000": _helpers(470) + DURABLE_FUNCTIONS,
        "argparse+3": stdlib + DURABLE_FUNCTIONS,
    }


def lines(source: str) -> int:
    return source.count("\n") + 1


def compile_rows(sources: dict[str, str], repeats: int) -> list[tuple[str, int, float]]:
    from transpiler import compile_source

    rows = []
    for name, source in sources.items():
        compile_source(source, f"{name}.py")  # warms libcst's own lazy imports
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            compile_source(source, f"{name}.py")
            times.append(time.perf_counter() - start)
        rows.append((name, lines(source), median(times)))
    return rows


IMPORT_ONCE = """
import sys, time
sys.path.insert(0, {folder!r})
import runtime
if {hooked!r}:
    from transpiler import install_import_hook
    install_import_hook([{name!r}])
start = time.perf_counter_ns()
import {name}
elapsed = time.perf_counter_ns() - start
assert {hooked!r} == hasattr({name}.bench_flow_a, "__durable__")
assert "libcst" not in sys.modules
print(elapsed)
"""


def _import_once(folder: Path, name: str, hooked: bool) -> float:
    """Nanoseconds to import ``name`` in a new interpreter whose runtime (and hook) are loaded."""
    code = IMPORT_ONCE.format(folder=str(folder), name=name, hooked=hooked)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_ENV, check=True,
                          cwd=folder)
    return float(done.stdout)


_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}


def _install_copy(site: Path) -> None:
    """Lay ``runtime`` and ``transpiler`` out as an installed copy (a ``site-packages`` folder) that
    the measured interpreters use: what users get from a wheel (an installed compiler is identified
    by its version, a source tree by its files' stamps too)."""
    root = Path(__file__).resolve().parent.parent
    for package in ("runtime", "transpiler"):
        shutil.copytree(root / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    _ENV["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])


def import_rows(sources: dict[str, str], rounds: int) -> list[tuple[str, float, float, float]]:
    """Import time of each module in fresh interpreters, alternating: plain (from its .pyc, with
    ``@durable`` a no-op) and through the hook's warm cache. Medians, and the median paired ratio."""
    folder = Path(tempfile.mkdtemp(prefix="dg-bench-import-"))
    _install_copy(folder / "site-packages")
    rows = []
    try:
        for i, (label, source) in enumerate(sources.items()):
            plain, hooked = f"bench_plain_{i}", f"bench_hooked_{i}"
            # the plain module is the same code with @durable a no-op: an ordinary module
            (folder / f"{plain}.py").write_text(source.replace(
                "from runtime import durable", "def durable(fn):\n    return fn"), encoding="utf-8")
            (folder / f"{hooked}.py").write_text(source, encoding="utf-8")
            _import_once(folder, plain, False)  # writes the .pyc
            code = IMPORT_ONCE.format(folder=str(folder), name=hooked, hooked=True).replace(
                'assert "libcst" not in sys.modules', "")
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=_ENV, cwd=folder)  # fills the cache
            samples: dict[str, list[float]] = {"plain": [], "hook": []}
            for _ in range(rounds):
                samples["plain"].append(_import_once(folder, plain, False))
                samples["hook"].append(_import_once(folder, hooked, True))
            rows.append((label, median(samples["plain"]), median(samples["hook"]),
                         paired_ratio(samples["hook"], samples["plain"])))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def libcst_import_seconds() -> float:
    import subprocess

    code = "import time; t = time.perf_counter(); import libcst; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a few seconds)")
    args = parser.parse_args()
    repeats, rounds = (3, 7) if args.quick else (7, 31)
    sources = modules()
    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} cores; median of {repeats} compiles, "
          f"{rounds} fresh interpreters per import\n")
    print("| Module | lines | cold compile | lines/s | target | |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name, count, seconds in compile_rows(sources, repeats):
        speed = count / seconds
        print(f"| {name} | {count:,} | {seconds * 1000:.1f} ms | {speed:,.0f} | ≥ 5,000 | "
              f"{'PASS' if speed >= 5000 else 'MISS'} |")
    print(f"\n(`import libcst` itself, paid once per process on a cache miss: "
          f"{libcst_import_seconds() * 1000:.0f} ms)\n")
    print("| Module | plain import | warm import with the hook | hook / plain | target | |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name, plain, hooked, ratio in import_rows(sources, rounds):
        print(f"| {name} | {plain / 1000:.0f} µs | {hooked / 1000:.0f} µs | {ratio:.2f}× | ≤ 1.20× | "
              f"{'PASS' if ratio <= 1.2 else 'MISS'} |")


if __name__ == "__main__":
    main()
