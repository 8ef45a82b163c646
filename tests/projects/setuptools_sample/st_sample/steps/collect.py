"""A durable generator in a subpackage: compiled because its package is configured."""
from runtime import durable


@durable
def collect(names):
    seen = []
    for name in names:
        answer = yield f"ask {name}"
        seen.append((name, answer))
    return seen
