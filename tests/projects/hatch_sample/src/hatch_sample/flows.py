"""Durable generators that the wheel ships compiled."""
from runtime import durable

from .helpers import double


@durable
def running_total(limit):
    total = 0
    for i in range(limit):
        total += yield total
    return double(total)


@durable
def fails_after_one():
    yield 1
    raise ValueError("fails_after_one stops here")
