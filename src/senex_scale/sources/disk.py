"""Disk: used % of the filesystem holding each path in ``metric.query``.

``metric.query`` is one absolute path or several, comma-separated; each gives one sample whose
instance is the path as written (the rule's ``aggregate = "max"`` then acts on the fullest).
The value is what ``df`` shows as Use%, unrounded, from ``statvfs(path)``::

    used % = (f_blocks - f_bfree) / (f_blocks - f_bfree + f_bavail) * 100

i.e. blocks reserved for root count as neither used nor available, so 100 % means "an
unprivileged process can write nothing more" (``psutil.disk_usage`` computes the same, rounded
to one decimal). A missing path is a configuration error (``SourceError``, not temporary).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from senex_scale.core.state import Sample
from senex_scale.errors import SourceError
from senex_scale.sources.base import MetricRequest, Settings, parse_settings


class DiskSettings(Settings):
    """``[sources.NAME] type = "disk"``: no settings; the paths are in each rule's query."""


def used_percent(path: str) -> float:
    """Used % of the filesystem holding ``path``, as ``df`` computes it (OSError passes)."""
    st = os.statvfs(path)
    used = st.f_blocks - st.f_bfree
    usable = used + st.f_bavail
    return used / usable * 100.0 if usable > 0 else 0.0


class DiskSource:
    """Used % of the filesystems holding the paths a rule names."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.settings = parse_settings(DiskSettings, name, options)

    def __repr__(self) -> str:
        return f"DiskSource(name={self.name!r})"

    def close(self) -> None:
        """Nothing to release."""

    def _fail(self, request: MetricRequest, message: str, *, temporary: bool) -> SourceError:
        return SourceError(
            f"sources.{self.name}: rule {request.rule}: {message}", temporary=temporary
        )

    def query(self, request: MetricRequest, now: float) -> list[Sample]:
        """One sample per path, instance = the path."""
        paths = [p.strip() for p in request.metric.query.split(",") if p.strip()]
        if not paths:
            raise self._fail(
                request,
                'metric.query is empty: give a path (e.g. "/var/lib/containers")',
                temporary=False,
            )
        samples: list[Sample] = []
        for path in paths:
            if not os.path.isabs(path):
                raise self._fail(request, f'"{path}" is not an absolute path', temporary=False)
            try:
                value = used_percent(path)
            except FileNotFoundError as exc:
                raise self._fail(
                    request, f"{path}: no such file or directory", temporary=False
                ) from exc
            except OSError as exc:
                # Permission and path-shape errors will not heal by themselves; an I/O error
                # or a hung network mount may.
                permanent = exc.errno in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.ELOOP)
                raise self._fail(
                    request, f"{path}: {exc.strerror or exc}", temporary=not permanent
                ) from exc
            samples.append(Sample(now, value, path))
        return samples
