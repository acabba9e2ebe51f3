"""Projections: all workflow state as rebuildable folds over the event log, and audit queries."""
