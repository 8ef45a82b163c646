"""Durable generators runtime: snapshot, restore and detach compiled generators (depends on msgpack only)."""
