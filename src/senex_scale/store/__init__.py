"""The controller's state and audit log: SQLite (embedded default) or PostgreSQL.

See ``senex_scale.store.sql`` for the schema and what survives a restart.
"""

from senex_scale.store.sql import ActionRow, DecisionRow, Store, open_store

__all__ = ["ActionRow", "DecisionRow", "Store", "open_store"]
