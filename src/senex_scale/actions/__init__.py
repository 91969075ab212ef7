"""Actions that are not an instance count: notify a person, run a runbook command."""
