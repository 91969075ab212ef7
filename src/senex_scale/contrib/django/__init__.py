"""The application side of the scaling strategy for Django (``senex-scale[django]``).

- ``router``: reads to healthy, caught-up replicas; writes, migrations and reads inside
  ``atomic()`` to the primary; read-your-writes pinned in a context variable.
- ``registry``: the JSON replica registry the router re-reads when it changes.
- ``settings``: DATABASES for PgBouncer transaction pooling; CACHES, Celery broker and
  CHANNEL_LAYERS from one list of Redis Sentinels.
- ``checks``: Django system checks for pooler-unsafe and Sentinel-unsafe settings.
- ``health``: a liveness view that never touches a server, a readiness view that does.
- ``metrics``: request, WebSocket and Celery task metrics on ``/metrics``.
- ``cache``: versioned cache entries invalidated on commit, without stampedes or stale refills.

Add ``"senex_scale.contrib.django"`` to ``INSTALLED_APPS`` for the checks; see docs/django.md.
"""
