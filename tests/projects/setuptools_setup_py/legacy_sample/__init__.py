"""Sample package whose setup.py installs the durable build_py command."""
