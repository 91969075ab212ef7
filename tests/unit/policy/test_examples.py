"""The example multi-host policy agrees with the example inventory (the same deployment)."""

from __future__ import annotations

from pathlib import Path

from senex_scale.policy import load_policy
from senex_scale.render.inventory import load_inventory

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_multi_host_policy_and_the_inventory_describe_the_same_deployment() -> None:
    """Hosts and addresses, the web pool's ports and counts, the local HAProxy's backend,
    config and socket, and the controller's address are the same in both files."""
    policy = load_policy(str(EXAMPLES / "policy-multi-host.toml"))
    inventory = load_inventory(EXAMPLES / "inventory.toml")
    web_hosts = [name for name, _ in inventory.hosts_with("web")]
    worker_hosts = [name for name, _ in inventory.hosts_with("worker")]
    django = policy.pools["django"]
    assert [h.name for h in django.hosts] == web_hosts
    for name in web_hosts + worker_hosts:
        assert policy.hosts[name].address == inventory.hosts[name].address, name
    web = inventory.pools[inventory.nginx.pool]
    assert (django.port, django.min, django.max, django.health) == (
        web.port,
        web.min,
        web.max,
        web.health,
    )
    assert django.balancer is not None
    assert django.balancer.type == "haproxy"  # each web host's local HAProxy, behind its nginx
    options = django.balancer.options
    assert options["backend"] == inventory.nginx.upstream
    assert options["config"] == inventory.web_haproxy.config
    assert options["socket"] == f"{{address}}:{inventory.web_haproxy.admin_port}"
    assert options["per_host"] is True
    assert django.websockets is not None  # clean drains and rebalancing
    trading = policy.pools["celery-worker-trading"]
    assert [h.name for h in trading.hosts] == worker_hosts
    assert trading.queues == inventory.pools["celery-worker-trading"].queues
    assert policy.controller.listen == inventory.prometheus.controller
