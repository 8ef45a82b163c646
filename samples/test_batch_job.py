"""Tests of the batch job (samples/batch_job.py) with the durable test kit: its checksum survives a crash anywhere."""
from __future__ import annotations

from typing import Any

from transpiler import install_import_hook

install_import_hook(["batch_job"])

import batch_job  # noqa: E402


def expected(count: int, chunk: int) -> dict[str, int]:
    """The checksum worked out directly from the step function, chunk by chunk."""
    total = 0
    for start in range(0, count, chunk):
        total = (total + batch_job.checksum_chunk(list(range(start, min(start + chunk, count))))) % 2 ** 32
    return {"items": count, "checksum": total}


def test_the_checksum(durable_sim: Any) -> None:
    assert durable_sim.run(batch_job.checksum_range, 1000, 100).result() == expected(1000, 100)


def test_the_job_survives_a_crash_at_every_point_and_a_failing_chunk(durable_sim: Any) -> None:
    report = durable_sim.assert_survives_crashes(batch_job.checksum_range, 300, 50, points="all",
                                                 failures={batch_job.checksum_chunk: [1]})
    assert report.outcome.result() == expected(300, 50)
    assert report.crash_points == report.possible_points
