"""The status page and its JSON API (Starlette)."""
