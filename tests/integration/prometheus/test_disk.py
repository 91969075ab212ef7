"""The ``disk`` source: used % of the filesystems holding the paths of a rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from senex_scale.errors import PolicyError, SourceError
from senex_scale.policy.models import Metric
from senex_scale.sources.base import MetricRequest
from senex_scale.sources.disk import DiskSource

pytestmark = pytest.mark.integration


def request_for(query: str) -> MetricRequest:
    """The request of action rule "r" (no pool) for ``query``."""
    return MetricRequest("r", Metric(source="disk", query=query))


def df_percent(path: Path) -> float:
    """Use% as df computes it, from shutil: used / (used + available to non-root)."""
    usage = shutil.disk_usage(path)
    return usage.used / (usage.used + usage.free) * 100.0


def test_matches_shutil_disk_usage(tmp_path: Path) -> None:
    """The value is df's Use% of the path's filesystem, unrounded."""
    [sample] = DiskSource("disk", {}).query(request_for(str(tmp_path)), 5.0)
    assert sample.at == 5.0
    assert sample.instance == str(tmp_path)
    assert sample.value == pytest.approx(df_percent(tmp_path), abs=0.5)
    assert 0.0 < sample.value < 100.0


def test_one_sample_per_path(tmp_path: Path) -> None:
    """Comma-separated paths give one sample each, instance = the path as written."""
    a, b = tmp_path / "a", tmp_path / "b.txt"
    a.mkdir()
    b.write_text("x")
    samples = DiskSource("disk", {}).query(request_for(f" {a} , {b},/"), 1.0)
    assert [s.instance for s in samples] == [str(a), str(b), "/"]
    assert samples[2].value == pytest.approx(df_percent(Path("/")), abs=0.5)


def test_missing_path_is_permanent(tmp_path: Path) -> None:
    """A path that does not exist is a configuration error."""
    missing = tmp_path / "nope"
    with pytest.raises(SourceError) as info:
        DiskSource("disk", {}).query(request_for(f"{tmp_path},{missing}"), 1.0)
    assert info.value.temporary is False
    assert str(info.value) == f"sources.disk: rule r: {missing}: no such file or directory"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_empty_or_relative_query_is_permanent() -> None:
    """No path, or a relative one, is a configuration error."""
    for query in ("", " , ", "var/lib"):
        with pytest.raises(SourceError) as info:
            DiskSource("disk", {}).query(request_for(query), 1.0)
        assert info.value.temporary is False


def test_no_settings_accepted() -> None:
    """The disk source has no settings: any key is unknown."""
    with pytest.raises(PolicyError) as info:
        DiskSource("disk", {"path": "/"})
    assert info.value.problems == ['sources.disk: unknown key "path"']
