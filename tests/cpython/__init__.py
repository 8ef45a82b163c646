"""Runs CPython's own generator test suites against the durable-generators compiler."""
