"""Ordinary code the build step leaves as it is (not named in [tool.durable] modules)."""


def double(value):
    return 2 * value
