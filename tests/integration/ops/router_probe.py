"""Run in a subprocess by ``test_replica.py``: a Django process configured with the router
and the replica registry ``replica add`` wrote, reading a row through the ORM's routing.

argv: PRIMARY_PORT REGISTRY. Prints JSON: the alias the read went to, whether that server is
in recovery, its port, and the row.
"""

from __future__ import annotations

import json
import sys
import time

import django
from django.conf import settings

port, registry = sys.argv[1], sys.argv[2]
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": port,
            "NAME": "postgres",
            "USER": "postgres",
            "OPTIONS": {"connect_timeout": 3},
        }
    },
    DATABASE_ROUTERS=["senex_scale.contrib.django.router.ReplicaRouter"],
    SENEX_SCALE_ROUTER={"PRIMARY": "default", "REPLICAS": [], "REGISTRY": registry,
                        "HEALTH_TTL": 0.1},
    INSTALLED_APPS=["django.contrib.contenttypes"],
    USE_TZ=True,
)  # fmt: skip
django.setup()

from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.db import connections  # noqa: E402

alias = "default"
for _ in range(50):  # the first request probes; later ones use the healthy replica
    alias = ContentType.objects.all().db
    if alias != "default":
        break
    time.sleep(0.1)
with connections[alias].cursor() as cur:
    cur.execute("SELECT pg_is_in_recovery(), current_setting('port'), note FROM t WHERE id = 1")
    recovery, served_by, note = cur.fetchone()
print(json.dumps({"alias": alias, "in_recovery": recovery, "port": int(served_by), "note": note}))
