"""Replay: rebuild, step through, re-drive and export recorded executions."""
