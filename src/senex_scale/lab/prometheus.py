"""Prometheus on loopback: its config (JSON, which YAML reads) and TSDB under ``root``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from senex_scale.lab.base import HOST, LabError, Server, binary


def static_job(name: str, targets: Sequence[str], **more: Any) -> dict[str, Any]:
    """A scrape config of job ``name`` with static ``targets`` ("host:port")."""
    return {"job_name": name, "static_configs": [{"targets": list(targets)}], **more}


class Prometheus(Server):
    """One ``prometheus`` server on ``127.0.0.1:port``."""

    name = "prometheus"
    stop_timeout = 10.0
    ready_timeout = 30.0
    not_yet: ClassVar[tuple[type[BaseException], ...]] = (OSError, httpx.HTTPError)

    def __init__(
        self,
        root: Path | str,
        port: int | None = None,
        *,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[Path | str] = (),
        scrape_interval: str = "1s",
    ) -> None:
        """``scrape_configs``: Prometheus's own (``static_job`` makes the simple kind);
        ``scrape_interval`` is also the scrape timeout and the rule evaluation interval."""
        super().__init__(root, port)
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.rule_files = [str(f) for f in rule_files]
        self.scrape_interval = scrape_interval

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    def query(self, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The ``result`` of an instant query."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=timeout)
        body = response.json()
        if body.get("status") != "success":
            raise LabError(f"prometheus query {promql!r}: {body.get('error', response.text)}")
        return list(body["data"]["result"])

    def targets_up(self) -> bool:
        """Every active target has been scraped and is up (true with no targets)."""
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5)
        targets = response.json()["data"]["activeTargets"]
        return all(target["health"] == "up" for target in targets)

    def _prepare(self) -> None:
        interval = self.scrape_interval
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": self.scrape_configs,
        }
        self.config.write_text(json.dumps(config, indent=2) + "\n")

    def _argv(self) -> list[str]:
        return [
            binary("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
