"""Agents: decision functions, runtimes, transports, external-system adapters and the CLI."""
