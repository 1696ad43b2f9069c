"""Kubernetes manifests for a run: `agentrt deploy k8s SPEC -o DIR`.

Placement and restarts of pods belong to Kubernetes; the run-level policy (death watch,
re-dispatch, in-doubt tasks, restart strategy) stays with agentrt's supervisor. So:

- each node group (the spec nodes sharing one `host` value; a node without one is a group of
  its own) is a StatefulSet with a headless Service: pods get stable DNS names
  (`<pod>.<service>`), and ZeroMQ connects to each peer pod directly; no load-balanced
  ClusterIP sits in the data path;
- the supervisor is a Deployment of one pod behind its own headless Service;
- a Secret holds every member's CurveZMQ key file (fresh keys for each `deploy`); the
  supervisor's pod mounts only its own, a group's pods only their group's;
- a NetworkPolicy lets the run's pods talk only to each other (plus DNS and the store);
- the PostgreSQL store's URL comes from a Secret the operator creates (`--store-secret`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentrt.protocols import SpecError

from ._files import write_private
from ._keys import Trust, issue, key_file
from ._spec import NodeSpec, Spec

SUPERVISOR_PORT = 7600  # control plane and messages to the supervisor
TRACE_PORT = 7601  # the trace collector
NODE_PORT = 7700  # each node's messages
_DNS1123 = re.compile(r"[^a-z0-9-]+")


def _dns_name(text: str) -> str:
    """`text` as a DNS-1123 label (lower case, digits and '-', at most 63 characters)."""
    name = _DNS1123.sub("-", text.lower()).strip("-")
    if not name:
        raise SpecError(f"'{text}' gives an empty Kubernetes name")
    return name[:63].rstrip("-")


def node_groups(spec: Spec) -> dict[str, list[NodeSpec]]:
    """The spec's nodes by group, in spec order: nodes sharing a `host` value form one group; a
    node without one is a group of its own, named after it."""
    groups: dict[str, list[NodeSpec]] = {}
    for node in spec.nodes:
        groups.setdefault(node.host or node.name, []).append(node)
    return groups


def member_keys(spec: Spec) -> dict[str, Trust]:
    """A fresh CurveZMQ keypair for the supervisor and each node, as each member's Trust."""
    return issue({n.name: [a.name for a in n.actors] for n in spec.nodes})


def k8s_manifests(
    spec: Spec,
    *,
    spec_text: str,
    image: str,
    namespace: str = "default",
    app: str | None = None,
    store_secret: str | None = None,
    store_port: int = 5432,
    keys: dict[str, Trust] | None = None,
) -> list[dict[str, Any]]:
    """Every resource of a run's deployment, as dicts in apply order."""
    app = _dns_name(app or spec.run.name)
    keys = keys or member_keys(spec)
    labels = {"app.kubernetes.io/name": "agentrt", "app.kubernetes.io/instance": app}
    sup = f"{app}-supervisor"
    sup_host = f"{sup}.{namespace}.svc.cluster.local"

    def meta(name: str, **extra: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": {**labels, **extra}}

    env_store = (
        [
            {
                "name": "AGENTRT_STORE",
                "valueFrom": {"secretKeyRef": {"name": store_secret, "key": "url"}},
            }
        ]
        if store_secret
        else []
    )
    resources: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(f"{app}-keys"),
            "type": "Opaque",
            "stringData": {f"{m}.key": key_file(t).decode() for m, t in keys.items()},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{app}-spec"),
            "data": {"spec.toml": spec_text},
        },
    ]

    def key_volume(member: str) -> dict[str, Any]:
        # The supervisor's pod mounts its own key file only, read-only.
        return {
            "name": "key",
            "secret": {
                "secretName": f"{app}-keys",
                "items": [{"key": f"{member}.key", "path": "member.key"}],
                "defaultMode": 0o440,
            },
        }

    common_mounts = [
        {"name": "key", "mountPath": "/etc/agentrt/key", "readOnly": True},
        {"name": "spec", "mountPath": "/etc/agentrt/spec", "readOnly": True},
    ]
    # Key files are 0440 and group-owned by the pod's fsGroup: readable by the run's user only.
    pod_security = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }

    # The supervisor: one pod, reached by its headless Service's DNS name.
    resources.append(
        _headless(
            meta(sup, **{"agentrt.dev/role": "supervisor"}),
            labels,
            "supervisor",
            [("control", SUPERVISOR_PORT), ("trace", TRACE_PORT)],
        )
    )
    resources.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(sup, **{"agentrt.dev/role": "supervisor"}),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # never two supervisors of one run
                "selector": {"matchLabels": {**labels, "agentrt.dev/role": "supervisor"}},
                "template": {
                    "metadata": {"labels": {**labels, "agentrt.dev/role": "supervisor"}},
                    "spec": {
                        "securityContext": pod_security,
                        "containers": [
                            {
                                "name": "supervisor",
                                "image": image,
                                "command": [
                                    "agentrt",
                                    "run",
                                    "/etc/agentrt/spec/spec.toml",
                                    "--run-id",
                                    app,
                                    "--non-interactive",
                                    "--listen",
                                    f"0.0.0.0:{SUPERVISOR_PORT}",
                                    "--advertise",
                                    f"{sup_host}:{SUPERVISOR_PORT}",
                                    "--key",
                                    "/etc/agentrt/key/member.key",
                                    "--no-spawn",
                                ],
                                "env": [
                                    {"name": "AGENTRT_RUNS_DIR", "value": "/var/lib/agentrt/runs"},
                                    *env_store,
                                ],
                                "ports": [
                                    {"name": "control", "containerPort": SUPERVISOR_PORT},
                                    {"name": "trace", "containerPort": TRACE_PORT},
                                ],
                                "volumeMounts": [
                                    *common_mounts,
                                    {"name": "runs", "mountPath": "/var/lib/agentrt"},
                                ],
                                "securityContext": security,
                            }
                        ],
                        "volumes": [
                            key_volume("supervisor"),
                            {"name": "spec", "configMap": {"name": f"{app}-spec"}},
                            {"name": "runs", "emptyDir": {}},
                        ],
                    },
                },
            },
        }
    )
    for group, nodes in node_groups(spec).items():
        name = f"{app}-{_dns_name(group)}"
        role = {"agentrt.dev/role": "node", "agentrt.dev/group": _dns_name(group)}
        resources.append(
            _headless(meta(name, **role), labels, None, [("messages", NODE_PORT)], role)
        )
        # Pod i of the group is the group's i-th node in the spec; it mounts that node's key.
        pods = {f"{name}-{i}": node.name for i, node in enumerate(nodes)}
        resources.append(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta(name, **role),
                "spec": {
                    "serviceName": name,
                    "replicas": len(nodes),
                    "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": {**labels, **role}},
                    "template": {
                        "metadata": {"labels": {**labels, **role}},
                        "spec": {
                            "securityContext": pod_security,
                            "containers": [
                                {
                                    "name": "node",
                                    "image": image,
                                    "command": [
                                        "agentrt",
                                        "node",
                                        "--join",
                                        f"tcp://{sup_host}:{SUPERVISOR_PORT}",
                                        "--key",
                                        "/etc/agentrt/key/$(POD_NAME).key",
                                        "--listen",
                                        f"0.0.0.0:{NODE_PORT}",
                                        "--advertise",
                                        f"$(POD_NAME).{name}.{namespace}.svc.cluster.local:{NODE_PORT}",
                                    ],
                                    "env": [
                                        {
                                            "name": "POD_NAME",
                                            "valueFrom": {
                                                "fieldRef": {"fieldPath": "metadata.name"}
                                            },
                                        },
                                        *env_store,
                                    ],
                                    "ports": [{"name": "messages", "containerPort": NODE_PORT}],
                                    "volumeMounts": common_mounts,
                                    "securityContext": security,
                                }
                            ],
                            "volumes": [
                                {
                                    "name": "key",
                                    "secret": {
                                        "secretName": f"{app}-keys",
                                        "items": [
                                            {"key": f"{node}.key", "path": f"{pod}.key"}
                                            for pod, node in pods.items()
                                        ],
                                        "defaultMode": 0o440,
                                    },
                                },
                                {"name": "spec", "configMap": {"name": f"{app}-spec"}},
                            ],
                        },
                    },
                },
            }
        )
    resources.append(
        _network_policy(meta(f"{app}-only-own-pods"), labels, store_port if store_secret else None)
    )
    return resources


def _headless(
    metadata: dict[str, Any],
    labels: dict[str, str],
    role: str | None,
    ports: list[tuple[str, int]],
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    selector = {**labels, **(extra or {})}
    if role:
        selector["agentrt.dev/role"] = role
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",  # headless: DNS names each pod; no load balancing in the path
            "publishNotReadyAddresses": True,  # peers connect while pods start
            "selector": selector,
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports],
        },
    }


def _network_policy(
    metadata: dict[str, Any], labels: dict[str, str], store_port: int | None
) -> dict[str, Any]:
    own = [{"podSelector": {"matchLabels": labels}}]
    egress: list[dict[str, Any]] = [
        {"to": own},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},  # DNS
    ]
    if store_port is not None:
        egress.append({"ports": [{"protocol": "TCP", "port": store_port}]})  # the PostgreSQL store
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": own}],
            "egress": egress,
        },
    }


def write_k8s(resources: list[dict[str, Any]], out: Path) -> list[Path]:
    """One YAML file per resource kind and name, in apply order; the Secret's file is 0600."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, res in enumerate(resources):
        path = out / f"{i:02d}-{res['kind'].lower()}-{res['metadata']['name']}.yaml"
        text = yaml.safe_dump(res, sort_keys=False)
        if res["kind"] == "Secret":  # 0600 before the keys are in it; never through a symlink
            write_private(path, text)
        else:
            path.write_text(text)
            path.chmod(0o644)
        written.append(path)
    return written
