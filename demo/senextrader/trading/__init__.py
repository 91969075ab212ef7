"""Positions and trades: the workload of the reference app."""
