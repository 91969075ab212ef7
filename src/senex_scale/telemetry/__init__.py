"""The controller's own telemetry: Prometheus metrics and structured logs."""
