"""Benchmark: cold compile throughput, and warm imports through the hook's cache against plain imports."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import measure, median, paired_ratio  # noqa: E402

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


def _importer(name: str) -> Callable[[], None]:
    def run() -> None:
        sys.modules.pop(name, None)
        importlib.import_module(name)
    return run


def import_rows(sources: dict[str, str], rounds: int, target_ns: int) -> list[tuple[str, float, float]]:
    """Median import time of each module: plain (from its .pyc) and through the hook's warm cache."""
    from transpiler import install_import_hook

    import runtime  # both sides run with the runtime already loaded  # noqa: F401

    folder = Path(tempfile.mkdtemp(prefix="dg-bench-import-"))
    sys.path.insert(0, str(folder))
    saved_flag = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    rows = []
    try:
        for i, (label, source) in enumerate(sources.items()):
            plain, hooked = f"bench_plain_{i}", f"bench_hooked_{i}"
            # the plain module is the same code with @durable a no-op: an ordinary module
            (folder / f"{plain}.py").write_text(source.replace(
                "from runtime import durable", "def durable(fn):\n    return fn"), encoding="utf-8")
            (folder / f"{hooked}.py").write_text(source, encoding="utf-8")
            importlib.invalidate_caches()
            hook = install_import_hook([hooked])
            _importer(plain)()   # writes the .pyc
            _importer(hooked)()  # compiles, writes the durable cache
            assert hasattr(sys.modules[hooked].bench_flow_a, "__durable__"), "the hook did not compile"
            samples = measure({"plain": _importer(plain), "hook": _importer(hooked)}, rounds, target_ns)
            hook.uninstall()
            rows.append((label, median(samples["plain"]), median(samples["hook"]),
                         paired_ratio(samples["hook"], samples["plain"])))
    finally:
        sys.dont_write_bytecode = saved_flag
        sys.path.remove(str(folder))
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
    repeats, rounds, target = (3, 5, 20_000_000) if args.quick else (7, 15, 50_000_000)
    sources = modules()
    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} cores; median of {repeats} compiles, "
          f"{rounds} import rounds\n")
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
    for name, plain, hooked, ratio in import_rows(sources, rounds, target):
        print(f"| {name} | {plain / 1000:.0f} µs | {hooked / 1000:.0f} µs | {ratio:.2f}× | ≤ 1.20× | "
              f"{'PASS' if ratio <= 1.2 else 'MISS'} |")


if __name__ == "__main__":
    main()
