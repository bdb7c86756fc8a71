"""Scenario loading and validation: every built-in file loads, every mistake is caught."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from simnet.errors import ScenarioError
from simnet.scenario import builtin_names, load, parse, resolve

BASE: dict[str, Any] = {
    "name": "t",
    "duration": 60.0,
    "nodes": {"count": 6, "groups": {"a": "0-2", "b": [3, 4, 5]}},
    "topology": {"kind": "random", "degree": 2},
    "link": {"latency": {"dist": "uniform", "low": 5, "high": 10}, "loss": 0.01},
    "writes": {"writers": 2, "rate": 2.0, "total": 20},
    "events": [
        {"at": 5.0, "kind": "partition", "groups": ["a", "b"]},
        {"at": 10.0, "kind": "heal"},
        {"at": 12.0, "kind": "crash", "node": 1},
        {"at": 15.0, "kind": "restart", "node": 1},
    ],
}


def scenario(**patch: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for dotted, value in patch.items():
        *parents, leaf = dotted.split("__")
        target = data
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return data


def test_base_scenario_is_valid() -> None:
    sc = parse(scenario())
    assert sc.nodes == 6
    assert sc.groups["a"] == (0, 1, 2) and sc.groups["b"] == (3, 4, 5)
    assert sc.groups["all"] == tuple(range(6))
    assert sc.writes.writers == (0, 1)
    assert sc.link.latency.mean_ms() == 7.5
    assert [e.kind for e in sc.events] == ["partition", "heal", "crash", "restart"]


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_scenarios_load(name: str) -> None:
    sc = resolve(name)
    assert sc.name == name
    assert sc.description


def test_builtins_cover_the_brief() -> None:
    assert {"partition-heal", "late-joiner", "churn", "lossy-wifi", "member-removal",
            "relay-only", "large-community"} <= set(builtin_names())
    assert resolve("large-community").nodes == 1000


@pytest.mark.parametrize(("data", "path", "words"), [
    (scenario(bogus=1), "bogus", "unknown key"),
    (scenario(link__jitter=3), "link.jitter", "unknown key"),
    (scenario(events__0__color="red"), "events[0].color", "unknown key"),
    (scenario(duration="long"), "duration", "must be a number, got a string"),
    (scenario(nodes__count=2.5), "nodes.count", "must be an integer"),
    (scenario(nodes__count=True), "nodes.count", "boolean"),
    (scenario(link__loss=1.5), "link.loss", "<= 0.9"),
    (scenario(duration=None), "duration", "is required"),
    (scenario(topology__kind="ring"), "topology.kind", "must be one of"),
    ({**scenario(), "sync": {"push": "fast"}}, "sync.push", "must be one of"),
    (scenario(link__latency={"dist": "uniform", "low": 9, "high": 1}), "link.latency.high",
     ">= low"),
    (scenario(nodes__groups={"a": "0-9"}), "nodes.groups.a", "node 6 does not exist"),
    (scenario(nodes__groups={"a": "x-y"}), "nodes.groups.a", "bad node range"),
    (scenario(events__2__node=17), "events[2].node", "node 17 does not exist"),
    (scenario(events__0__groups=["a", "nope"]), "events[0].groups[1]", "unknown group 'nope'"),
    (scenario(events__1__at=1.0), "events[1].at", "time order"),
    (scenario(events__3__at=99.0), "events[3].at", "after the scenario duration"),
    (scenario(events__3__node=2), "events[3]", "restart of node 2, which has not crashed"),
    (scenario(events__0__kind="explode"), "events[0].kind", "must be one of"),
    (scenario(writes__writers=9), "writes.writers", "only 6 nodes"),
    (scenario(writes__writers="nope"), "writes.writers", "unknown group"),
    (scenario(topology__degree=6), "topology.degree", "must be <"),
])
def test_validation_errors(data: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert info.value.path == path
    assert words in str(info.value)


def test_link_overrides() -> None:
    data = scenario()
    data["link"]["override"] = [{"between": ["a", "b"], "loss": 0.2},
                                {"between": ["a", "a"],
                                 "latency": {"dist": "constant", "value": 1.0}}]
    sc = parse(data)
    first, second = sc.link.overrides
    assert first.between == ("a", "b") and first.link.loss == 0.2
    assert first.link.latency == sc.link.latency  # inherited from the base link
    assert second.link.latency.value == 1.0 and second.link.loss == 0.01
    data["link"]["override"] = [{"between": ["a", "zz"]}]
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert info.value.path == "link.override[0].between[1]"
    data["link"]["override"] = [{"between": ["a", "b"], "jitter": 1}]
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert info.value.path == "link.override[0].jitter"


def test_heal_without_partition() -> None:
    data = scenario()
    data["events"] = [{"at": 1.0, "kind": "heal"}]
    with pytest.raises(ScenarioError, match="heal without a partition"):
        parse(data)


def test_join_rules() -> None:
    data = scenario()
    data["events"] = [{"at": 1.0, "kind": "crash", "node": 4},
                      {"at": 2.0, "kind": "join", "node": 4}]
    with pytest.raises(ScenarioError, match="node 4 has not joined yet"):
        parse(data)
    data["events"] = [{"at": 2.0, "kind": "join", "node": 4},
                      {"at": 3.0, "kind": "join", "node": 4}]
    with pytest.raises(ScenarioError, match="joins twice"):
        parse(data)
    data["events"] = [{"at": 2.0, "kind": "join", "node": 4}]
    assert parse(data).late_joiners() == {4}


def test_lan_relay_needs_known_groups() -> None:
    data = scenario(topology={"kind": "lan_relay", "lans": ["a"], "relays": "r"})
    with pytest.raises(ScenarioError) as info:
        parse(data)
    assert info.value.path == "topology.relays"


def test_overrides() -> None:
    sc = resolve("large-community", ["nodes.count=50", "writes.total=100", "sync.mode=gossip",
                                     "link.latency={ dist = \"constant\", value = 3 }"])
    assert sc.nodes == 50 and sc.writes.total == 100 and sc.sync.mode == "gossip"
    assert sc.link.latency.dist == "constant" and sc.link.latency.value == 3.0
    with pytest.raises(ScenarioError, match=r"nodes\.count: must be an integer"):
        resolve("large-community", ["nodes.count=many"])
    with pytest.raises(ScenarioError, match="not KEY=VALUE"):
        resolve("large-community", ["nodes.count"])
    with pytest.raises(ScenarioError, match="unknown key"):
        resolve("large-community", ["nodes.colour=1"])


def test_design_spelling_of_builtin_paths() -> None:
    assert resolve("scenarios/churn.toml").name == "churn"


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("duration = [\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="no built-in scenario"):
        resolve("no-such-scenario")
