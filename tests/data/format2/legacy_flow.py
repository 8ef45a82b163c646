"""A program snapshotted by the runtime before points had labels (snapshot format 2): see test_legacy_snapshots."""
from runtime import durable


@durable
def legacy_flow(n):
    total = 0
    with open(__file__) as fh:
        first = fh.readline()[:3]
    for i in range(n):
        try:
            got = yield ("ask", i)
        except KeyError as exc:
            got = yield ("retry", str(exc))
        total += got
    return (first, total)
