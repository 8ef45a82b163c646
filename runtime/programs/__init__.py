"""Programs: durable generators run as workflows from a store (requests, runner, worker, clock, stores, CLI)."""
