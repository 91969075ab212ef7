"""``INSTALLED_APPS = [..., "senex_scale.contrib.django"]``: registers the system checks and the
replica gauges (the app has no models and no migrations)."""

from __future__ import annotations

from django.apps import AppConfig


class SenexScaleConfig(AppConfig):
    """The Django app of Senex Scale's application side."""

    name = "senex_scale.contrib.django"
    label = "senex_scale"
    verbose_name = "Senex Scale"
    default = True

    def ready(self) -> None:
        from senex_scale.contrib.django import checks  # noqa: F401  (registers the checks)
        from senex_scale.contrib.django.metrics import register_replica_collector

        register_replica_collector()
