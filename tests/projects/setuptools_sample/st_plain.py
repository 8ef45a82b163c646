"""A top-level module the build step leaves as it is (not named in [tool.durable] modules)."""


def labels(count):
    return [f"item-{i}" for i in range(count)]
