"""A batch job as a durable program: processes a list in chunks, one recorded step per chunk, with
progress checkpoints, so a crash resumes after the last committed chunk instead of starting over.

``durable run batch_job:checksum_range '[1000, 100]'`` from this folder.
"""
from __future__ import annotations

import hashlib

from runtime import durable, step


def checksum_chunk(numbers: list[int]) -> int:
    """The expensive part: a stand-in for calling a service or crunching a file."""
    digest = hashlib.sha256(",".join(map(str, numbers)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


@durable
def checksum_range(count: int, chunk: int = 50):
    total = 0
    done = 0
    for start in range(0, count, chunk):
        numbers = list(range(start, min(start + chunk, count)))
        total = (total + (yield step(checksum_chunk, numbers))) % 2**32
        done += len(numbers)
        yield {"done": done, "of": count}  # a progress checkpoint
    return {"items": count, "checksum": total}
