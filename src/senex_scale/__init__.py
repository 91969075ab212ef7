"""Senex Scale: autoscaling for Django/Daphne + Celery + PostgreSQL + Redis on Podman/systemd."""

__version__ = "0.1.0"
