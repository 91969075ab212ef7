"""``sentinel status``'s verdict from what each sentinel says."""

from __future__ import annotations

from senex_scale.ops.sentinel import Node, SentinelView, assess

M = Node("10.0.0.1:6379", ("master",))
R1 = Node("10.0.0.2:6379", ("slave",))
R2 = Node("10.0.0.3:6379", ("slave",))


def view(address: str, **kw: object) -> SentinelView:
    base: dict[str, object] = {
        "master": M, "replicas": (R1, R2), "sentinels": ("s2:26379", "s3:26379"), "quorum": 2,
        "ckquorum": "OK 3 usable Sentinels", "quorum_ok": True,
    }  # fmt: skip
    base.update(kw)
    return SentinelView(address, **base)  # type: ignore[arg-type]


def test_healthy_group() -> None:
    health = assess("m", [view("s1:26379"), view("s2:26379"), view("s3:26379")])
    assert health.healthy
    assert health.master == M.address
    assert health.quorum == 2
    assert [r["up"] for r in health.replicas] == [True, True]


def test_each_problem_is_named() -> None:
    """A silent sentinel, a disagreement, a down replica and a failed CKQUORUM."""
    down = Node("10.0.0.3:6379", ("s_down", "slave"))
    health = assess(
        "m",
        [
            view("s1:26379", replicas=(R1, down)),
            SentinelView("s2:26379", error="no answer (refused)"),
            view("s3:26379", master=R1, quorum_ok=False, ckquorum="NOQUORUM 1 usable"),
        ],
    )
    assert not health.healthy
    text = "\n".join(health.problems)
    assert "sentinel s2:26379: no answer" in text
    assert "disagree on the master" in text
    assert "replica 10.0.0.3:6379 is down" in text
    assert "CKQUORUM: NOQUORUM" in text


def test_no_replica_up_means_no_failover() -> None:
    health = assess("m", [view("s1:26379", replicas=(Node("x:1", ("slave",), "err"),))])
    assert any("nowhere to go" in p for p in health.problems)


def test_master_down_and_nobody_answering() -> None:
    odown = Node(M.address, ("master", "o_down"))
    assert any("is down" in p for p in assess("m", [view("s1:26379", master=odown)]).problems)
    nobody = assess("m", [SentinelView("s1:26379", error="no answer")])
    assert nobody.master is None
    assert "no sentinel answers for m" in nobody.problems
