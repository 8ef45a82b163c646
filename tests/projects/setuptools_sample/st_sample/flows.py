"""A durable generator that delegates to one in a subpackage."""
from runtime import durable

from .steps.collect import collect


@durable
def pipeline(names):
    collected = yield from collect(names)
    yield f"collected {len(collected)}"
    return collected
