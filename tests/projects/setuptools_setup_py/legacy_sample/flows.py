"""A durable generator that the wheel ships compiled."""
from runtime import durable


@durable
def countdown(start):
    while start:
        yield start
        start -= 1
