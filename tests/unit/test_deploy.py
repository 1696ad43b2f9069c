"""`agentrt deploy k8s`: the manifests are valid Kubernetes objects (checked against the API's
schemas for the version we target) and say what the design says: headless Services only, one
StatefulSet per node group, each pod holding only its group's keys, traffic only between the run's pods."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml
import zmq

from agentrt.runtime import spec_from_dict
from agentrt.runtime._cli import main
from agentrt.runtime._deploy import k8s_manifests, node_groups

K8S_VERSION = "1.33.0"  # the oldest minor still supported upstream when this was written

SPEC = {
    "run": {"name": "Research Run", "entry": "coordinator"},
    "nodes": [
        {
            "name": "coord",
            "actors": [{"name": "coordinator", "class": "agentrt.actors:Coordinator"}],
        },
        {"name": "plan", "actors": [{"name": "producer", "class": "agentrt.actors:Producer"}]},
        *(
            {
                "name": f"w{i}",
                "host": "workers",
                "actors": [{"name": f"worker-{i}", "class": "agentrt.actors:Worker"}],
            }
            for i in range(3)
        ),
    ],
}


def manifests(**kw: Any) -> list[dict[str, Any]]:
    spec = spec_from_dict(SPEC)
    return k8s_manifests(spec, spec_text="# spec\n", image="registry.local/agentrt:1", **kw)


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    for res in manifests(namespace="agents", store_secret="research-db"):
        kubernetes_validate.validate(res, K8S_VERSION, strict=True)


def test_a_wrong_manifest_is_caught_by_the_validator() -> None:
    """The check above can fail: a typo'd field is refused by the same validator."""
    bad = by_kind(manifests(), "StatefulSet")[0]
    bad["spec"]["replica"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_one_statefulset_per_node_group_behind_a_headless_service() -> None:
    res = manifests()
    groups = node_groups(spec_from_dict(SPEC))
    assert list(groups) == ["coord", "plan", "workers"]
    sets = {s["metadata"]["name"]: s for s in by_kind(res, "StatefulSet")}
    assert {n: s["spec"]["replicas"] for n, s in sets.items()} == {
        "research-run-coord": 1,
        "research-run-plan": 1,
        "research-run-workers": 3,
    }
    services = by_kind(res, "Service")
    assert services and all(s["spec"]["clusterIP"] == "None" for s in services)  # no load balancer
    names = {s["metadata"]["name"] for s in services}
    assert {s["spec"]["serviceName"] for s in sets.values()} <= names
    # Pod i of the workers' set is worker node w<i>: it joins with that node's key.
    workers = sets["research-run-workers"]["spec"]["template"]["spec"]
    items = workers["volumes"][0]["secret"]["items"]
    assert items == [
        {"key": f"w{i}.key", "path": f"research-run-workers-{i}.key"} for i in range(3)
    ]
    command = workers["containers"][0]["command"]
    assert command[:2] == ["agentrt", "node"] and "/etc/agentrt/key/$(POD_NAME).key" in command


def test_keys_are_fresh_valid_curve_pairs_and_each_pod_mounts_only_its_groups() -> None:
    res = manifests()
    secret = by_kind(res, "Secret")[0]["stringData"]
    assert set(secret) == {"supervisor.key", "coord.key", "plan.key", "w0.key", "w1.key", "w2.key"}
    files = {k: msgspec.json.decode(v) for k, v in secret.items()}
    for f in files.values():
        assert zmq.curve_public(f["secret"].encode()).decode() == f["public"]
        assert f["members"] == {g["member"]: g["public"] for g in files.values()}  # the allow-list
    again = by_kind(manifests(), "Secret")[0]["stringData"]
    assert again["supervisor.key"] != secret["supervisor.key"]  # a new deployment, new keys
    mounted = {
        r["metadata"]["name"]: {
            i["key"] for i in r["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"]
        }
        for r in res
        if r["kind"] in ("Deployment", "StatefulSet")
    }
    assert mounted == {
        "research-run-supervisor": {"supervisor.key"},
        "research-run-coord": {"coord.key"},
        "research-run-plan": {"plan.key"},
        "research-run-workers": {"w0.key", "w1.key", "w2.key"},
    }


def test_network_policy_admits_only_the_runs_own_pods_and_the_store() -> None:
    res = manifests(store_secret="db")
    (policy,) = by_kind(res, "NetworkPolicy")
    own = policy["spec"]["podSelector"]["matchLabels"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": own}}]}]
    assert {"to": [{"podSelector": {"matchLabels": own}}]} in policy["spec"]["egress"]
    ports = [p for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    assert {"protocol": "TCP", "port": 5432} in ports
    pods = [r for r in res if r["kind"] in ("Deployment", "StatefulSet")]
    assert all(own.items() <= p["spec"]["template"]["metadata"]["labels"].items() for p in pods)
    # The store's URL comes from the operator's Secret, never from the manifests.
    envs = [e for p in pods for c in p["spec"]["template"]["spec"]["containers"] for e in c["env"]]
    store = [e for e in envs if e["name"] == "AGENTRT_STORE"]
    assert len(store) == len(pods) and all(
        e["valueFrom"]["secretKeyRef"]["name"] == "db" for e in store
    )


def one_node_spec(tmp_path: Path) -> Path:
    """A spec folder: run 'hello', one node 'front' on host 'edge' (so it joins: a pod)."""
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "spec.toml").write_text(
        '[run]\nname = "hello"\nentry = "greeter"\n\n[[nodes]]\nname = "front"\nhost = "edge"\n'
        'actors = [{ name = "greeter", class = "shout:Greeter" }]\n'
    )
    return spec_dir


def test_the_cli_writes_the_manifests_with_the_secret_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_dir = one_node_spec(tmp_path)
    out = tmp_path / "k8s"
    assert main(["deploy", "k8s", str(spec_dir), "-o", str(out), "--image", "img:1"]) == 0
    files = sorted(out.iterdir())
    kinds = [yaml.safe_load(f.read_text())["kind"] for f in files]
    assert kinds == [
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "Service",
        "StatefulSet",
        "NetworkPolicy",
    ]
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    assert [m for n, m in modes.items() if "-secret-" in n] == [0o600]
    config = yaml.safe_load(next(f for f in files if "-configmap-" in f.name).read_text())
    assert config["data"]["spec.toml"] == (spec_dir / "spec.toml").read_text()
    assert "mode 0600" in capsys.readouterr().out


def test_the_supervisors_and_nodes_commands_are_ones_agentrt_takes_and_every_node_joins(tmp_path: Path) -> None:
    """The manifests' commands parse as `agentrt run` / `agentrt node` command lines, and the
    supervisor's spawns nothing (every node is a pod) and reads its allow-list from its key file."""
    from agentrt.runtime._cli import parser, with_cluster
    from agentrt.runtime._cluster import cluster_trust

    res = manifests()
    deployment = by_kind(res, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    args = parser().parse_args(deployment[1:])
    spec = with_cluster(spec_from_dict(SPEC), args)
    assert all(spec.cluster.joins(n) for n in spec.nodes)
    key = tmp_path / "member.key"
    key.write_text(by_kind(res, "Secret")[0]["stringData"]["supervisor.key"])
    own, spawned = cluster_trust(msgspec.structs.replace(spec, cluster=msgspec.structs.replace(spec.cluster, keys=str(key))), str(key))
    assert own.me == "supervisor" and spawned == {} and set(own.members) == {"supervisor", "coord", "plan", "w0", "w1", "w2"}
    for workers in by_kind(res, "StatefulSet"):
        command = workers["spec"]["template"]["spec"]["containers"][0]["command"]
        parsed = parser().parse_args(command[1:])
        assert parsed.join.startswith("tcp://") and parsed.key.endswith(".key")


def test_the_secret_is_never_written_through_a_symlink_planted_where_it_goes(tmp_path: Path) -> None:
    spec_dir = one_node_spec(tmp_path)
    out = tmp_path / "k8s"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    (out / "00-secret-hello-keys.yaml").symlink_to(elsewhere)
    assert main(["deploy", "k8s", str(spec_dir), "-o", str(out), "--image", "img:1"]) == 2
    assert elsewhere.read_text() == ""  # no private key went through the link


def test_a_spec_whose_store_url_holds_a_password_is_refused_before_it_reaches_a_configmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`deploy k8s` puts the spec into a ConfigMap as is (readable by whoever may read the
    namespace's ConfigMaps): a store URL with a password in it is refused where specs are read,
    as model keys are; the URL without a password, or from the Secret, is fine."""
    base = '[[nodes]]\nname = "w1"\nactors = [{ name = "worker-1", class = "agentrt.actors:Worker" }]\n'
    for store in ("postgresql://u:hunter2@db/x", "postgresql://u@db/x?password=hunter2"):
        path = tmp_path / "pw.toml"
        path.write_text(f'[run]\nname = "x"\nstore = "{store}"\n{base}')
        assert main(["deploy", "k8s", str(path), "-o", str(tmp_path / "k8s"), "--image", "i:1"]) == 2
        said = capsys.readouterr().err
        assert "run.store" in said and "AGENTRT_STORE" in said and "hunter2" not in said
        assert not (tmp_path / "k8s").exists()
    path.write_text(f'[run]\nname = "x"\nstore = "postgresql://u@db/x"\n{base}')
    assert main(["deploy", "k8s", str(path), "-o", str(tmp_path / "k8s"), "--image", "i:1"]) == 0
