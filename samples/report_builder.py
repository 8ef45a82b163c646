"""A durable report builder: reads a sales CSV file chunk by chunk and yields its progress.

``build_report`` is an ordinary generator function marked ``@durable``. Once its module is
compiled (``transpiler.install_import_hook(["report_builder"])`` before importing it), a
suspended ``build_report`` generator can be saved with ``runtime.snapshot`` and continued later,
in another process, with ``runtime.restore``.

Between two chunks the generator holds only plain data (the file path, counters, dicts and the
``range`` iterator over chunk offsets); the open file lives inside ``read_chunk`` and is closed
before each ``yield``, so a snapshot is small and never contains a file handle.
"""
from __future__ import annotations

import csv

from runtime import durable

REGIONS = ("north", "south", "east", "west")
PRODUCTS = ("widget", "gadget", "gizmo", "doohickey", "sprocket")


def write_sample_sales(path: str, rows: int = 120) -> None:
    """Write a deterministic sales file: date, region, product, quantity, unit price."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "region", "product", "quantity", "unit_price"])
        for k in range(rows):
            day = 1 + k % 28
            region = REGIONS[(k * 7) % len(REGIONS)]
            product = PRODUCTS[(k * 3 + k // 5) % len(PRODUCTS)]
            quantity = 1 + (k * 13) % 9
            price = 2.5 + (k * 37) % 50 / 4
            writer.writerow([f"2024-03-{day:02d}", region, product, quantity, f"{price:.2f}"])


def count_rows(path: str) -> int:
    with open(path, newline="") as f:
        return sum(1 for _ in f) - 1  # minus the header line


def read_chunk(path: str, start: int, size: int) -> list[list[str]]:
    """Rows ``start`` .. ``start + size - 1`` of the file (header excluded)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = []
        for index, row in enumerate(reader):
            if index >= start + size:
                break
            if index >= start:
                rows.append(row)
        return rows


@durable
def build_report(path, chunk_size=20):
    """Yield a progress dict after each chunk; return the finished report (a dict)."""
    total_rows = count_rows(path)
    revenue_by_region = {}
    units_by_product = {}
    revenue = 0.0
    done = 0
    biggest = None  # (amount, date, region, product)
    for start in range(0, total_rows, chunk_size):
        for date, region, product, quantity, unit_price in read_chunk(path, start, chunk_size):
            amount = int(quantity) * float(unit_price)
            revenue += amount
            revenue_by_region[region] = revenue_by_region.get(region, 0.0) + amount
            units_by_product[product] = units_by_product.get(product, 0) + int(quantity)
            if biggest is None or amount > biggest[0]:
                biggest = (amount, date, region, product)
            done += 1
        yield {"rows_done": done, "rows_total": total_rows, "revenue_so_far": round(revenue, 2)}
    best_region = max(revenue_by_region, key=revenue_by_region.get)
    return {
        "rows": done,
        "revenue": round(revenue, 2),
        "revenue_by_region": {r: round(v, 2) for r, v in sorted(revenue_by_region.items())},
        "units_by_product": dict(sorted(units_by_product.items())),
        "best_region": best_region,
        "biggest_sale": {"amount": round(biggest[0], 2), "date": biggest[1], "region": biggest[2],
                         "product": biggest[3]},
    }
