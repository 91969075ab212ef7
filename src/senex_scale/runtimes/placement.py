"""Placement: which host a new instance of a pool goes to, and which instances a scale-in takes.

Pure functions over counts (no I/O, no clock), so the rule is tested on its own::

    spread (the only rule so far)
      scale-out   the reachable host with the fewest of the pool's instances and room under
                  its maximum; a tie goes to the host listed first
      scale-in    one at a time from the host with the most (a tie: the host listed last),
                  taking that host's first candidate in the caller's order (out of service
                  first, then least loaded, then newest)

Instance numbers stay unique across the pool's hosts (``django@3`` runs on one host only),
so a number names one instance everywhere: its member in the balancer, its samples, its
journal rows. Placement decides only the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def choose_host(
    order: Sequence[str],
    counts: Mapping[str, int],
    maxima: Mapping[str, int | None],
    reachable: Callable[[str], bool],
) -> str | None:
    """The host for one more instance (None when no reachable host has room)."""
    best: str | None = None
    for host in order:
        if not reachable(host):
            continue
        count = counts.get(host, 0)
        limit = maxima.get(host)
        if limit is not None and count >= limit:
            continue
        if best is None or count < counts.get(best, 0):
            best = host
    return best


def removal_order(
    candidates: Sequence[int],
    host_of: Callable[[int], str | None],
    counts: Mapping[str, int],
    order: Sequence[str],
    count: int,
) -> list[int]:
    """``count`` of ``candidates`` (already in the caller's order of preference) to take, so
    that the hosts end as even as possible: each pick from the host with the most."""
    left = dict(counts)
    queue = list(candidates)
    rank = {host: i for i, host in enumerate(order)}
    chosen: list[int] = []
    while queue and len(chosen) < count:
        hosts = {host_of(n) for n in queue}
        fullest = max(hosts, key=lambda h: (left.get(h, 0) if h else 0, rank.get(h or "", -1)))
        pick = next(n for n in queue if host_of(n) == fullest)
        queue.remove(pick)
        chosen.append(pick)
        if fullest is not None:
            left[fullest] = left.get(fullest, 0) - 1
    return chosen
