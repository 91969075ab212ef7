"""``senex-scale hosts``: each host of the policy, reachable or not, and the pools' instances
on it, checked now through the host's own transport (what the controller would use).

::

    host    address     transport  reachable  ms   instances                  error
    web01   10.0.0.11   ssh        yes        41   django [1, 3, 5]
    web02   10.0.0.12   ssh        no         -    -                          ssh: No route ...

Every host is asked at once (threads), each bounded by its ``connect_timeout`` plus the
runtime's own timeout. The controller's own view (hosts it declared lost, with the time)
is in its status (``senex-scale status --json``, the status page's Hosts panel); this
command does not need the controller to run.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from senex_scale.errors import SenexError
from senex_scale.policy.models import Policy
from senex_scale.runtimes.base import UnitState
from senex_scale.runtimes.transport import run, transport_for

LIVE = (UnitState.RUNNING, UnitState.STARTING)


def check_host(policy: Policy, name: str) -> dict[str, Any]:
    """One host: ``true`` through its transport (timed), then each pool's units there."""
    from senex_scale.runtimes.systemd import SystemdRuntime

    host = policy.hosts[name]
    doc: dict[str, Any] = {
        "host": name,
        "address": host.address,
        "transport": host.transport,
        "reachable": False,
        "ms": None,
        "pools": {},
        "error": None,
    }
    started = time.monotonic()
    try:
        transport = transport_for(host)
        done = run(transport, ["true"], host.connect_timeout + 5)
        if done.returncode != 0:
            raise SenexError(f"{transport.where}: `true` exited {done.returncode}")
    except SenexError as exc:
        doc["error"] = str(exc)
        return doc
    doc["reachable"] = True
    doc["ms"] = round((time.monotonic() - started) * 1000)
    errors = []
    for pool_name, pool in policy.pools.items():
        if name not in {h.name for h in pool.hosts} or pool.runtime is None:
            continue
        runtime = SystemdRuntime(pool_name, pool, pool.runtime.options, host=host, host_name=name)
        try:
            doc["pools"][pool_name] = [i.n for i in runtime.list() if i.state in LIVE]
        except SenexError as exc:
            errors.append(f"{pool_name}: {exc}")
    doc["error"] = "; ".join(errors) or None
    return doc


def check_hosts(policy: Policy) -> list[dict[str, Any]]:
    """Every host of the policy, in file order (see ``check_host``)."""
    names = list(policy.hosts)
    if not names:
        return []
    with ThreadPoolExecutor(min(16, len(names)), thread_name_prefix="hosts") as ex:
        return list(ex.map(lambda name: check_host(policy, name), names))
