"""The data tier's runbooks as commands: read replicas, Sentinel, PgBouncer, the database
report and rightsizing (the seed's "Database Scaling", "Redis Scaling", "Performance
Optimization" and "Cost Optimization" sections).

One module per command family, each with its Typer sub-app (registered in ``senex_scale.cli``):

- ``replica``: ``replica add`` (prepare the primary, ``pg_basebackup -R``, start, verify,
  register for the Django router), ``replica status``, ``replica remove``.
- ``sentinel``: ``sentinel status`` (master, replicas, sentinels, ``CKQUORUM``).
- ``pgbouncer``: ``pgbouncer status`` (pools and stats, a recommendation when clients wait).
- ``db``: ``db report`` (pg_stat_statements, missing, unused and duplicate indexes) and
  ``db slow-log``.
- ``rightsize``: CPU and memory limits per pool, idle workers, queues that need a worker.

``common`` holds what they share: connecting with errors translated, reading a secret.
"""
