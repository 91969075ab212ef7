"""The Celery app: settings from Django's (``CELERY_*``), tasks on three queues.

Workers per queue, as the strategy runs them::

    celery -A senextrader worker -Q trading
    celery -A senextrader worker -Q accounts,general
"""

from __future__ import annotations

import os

from celery import Celery

from senex_scale.contrib.django.metrics import install_celery_metrics
from senex_scale.contrib.django.router import install_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "senextrader.settings")

app = Celery("senextrader")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Tasks read what the view that queued them wrote (the pin travels in a header).
install_celery()
_metrics_port = os.environ.get("SENEX_CELERY_METRICS_PORT")
install_celery_metrics(int(_metrics_port) if _metrics_port else None)
