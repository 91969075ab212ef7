"""``senex-scale render``: every config file the scaling strategy names, from one inventory.

``inventory`` is the validated description of a deployment (hosts and roles, pools, ports,
limits, data tier, monitoring; secrets by reference only); ``render`` turns it into Quadlet
units, nginx/HAProxy, PgBouncer, PostgreSQL, Redis/Sentinel, Prometheus, Grafana and systemd
files through the Jinja2 templates in ``templates/``, checks them and swaps them into the
output directory atomically; ``monitoring`` holds the seed's decision matrix as Prometheus rules
and the Grafana dashboard; ``scram`` computes PgBouncer/PostgreSQL SCRAM-SHA-256 secrets.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from senex_scale.render.inventory import Inventory, InventoryError, load_inventory
    from senex_scale.render.render import RenderedFile, RenderError, Result, render

__all__ = [
    "Inventory",
    "InventoryError",
    "RenderError",
    "RenderedFile",
    "Result",
    "load_inventory",
    "render",
]

_WHERE = {
    "Inventory": "inventory",
    "InventoryError": "inventory",
    "load_inventory": "inventory",
    "RenderError": "render",
    "RenderedFile": "render",
    "Result": "render",
    "render": "render",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: ``senex-scale --help`` should not pay for Jinja2 and the models."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
