"""Durable generators compiler: rewrites generator functions into resumable state machines (libcst)."""
