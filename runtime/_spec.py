"""Launch specs: which nodes run which actors, with which models, for which job."""

from __future__ import annotations

import fnmatch
import re
import runpy
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec

from agentrt.protocols import Limits, SpecError

from ._keys import Trust
from ._models import ModelConfig

# Node and actor names: addresses and file names (logs/<node>.log). A subset of the id rule
# (protocols.ID_PATTERN) without `.` and `:`, which addresses use (`node:<name>`).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


class _SpecStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ActorSpec(_SpecStruct, kw_only=True):
    """One actor: its unique name, its class as `module:Class`, its config and model."""

    name: str
    cls: str = msgspec.field(name="class")
    config: dict[str, Any] = {}
    model: ModelConfig | None = None


class NodeSpec(_SpecStruct, kw_only=True):
    """One OS process and the actors it hosts. `restart` (OTP's child restart types):
    permanent, restarted whenever it dies; transient, only when it dies abnormally (a
    non-zero exit or a signal); temporary, never."""

    name: str
    actors: list[ActorSpec]
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    # Where the node runs: "" on the supervisor's host (the supervisor spawns it); otherwise
    # the name of a host or host group where `agentrt node --join` starts it (by hand, by a
    # host's agent, or as a pod of the group's StatefulSet under Kubernetes).
    host: str = ""
    # The CPUs this node's process may run on (os.sched_setaffinity); empty: as `[placement]` says.
    cpus: list[int] = []


class SupervisionSpec(_SpecStruct, kw_only=True):
    """How the supervisor restarts nodes that die (OTP's strategies and intensity): restart
    the one that died, all of them, or it and every node after it in the spec; more than
    `max_restarts` restarts within `period_s` fail the run instead of restarting forever."""

    strategy: Literal["one-for-one", "one-for-all", "rest-for-one"] = "one-for-one"
    max_restarts: int = msgspec.field(default=3)
    period_s: float = 30.0
    # A node that sends no heartbeat for heartbeat_timeout_s (hung, stopped) is killed and
    # dealt with as dead. A death itself is seen at once: the OS reports a child's exit.
    heartbeat_s: float = 1.0
    heartbeat_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"supervision.max_restarts must be >= 0, got {self.max_restarts}")
        if self.period_s <= 0:
            raise ValueError(f"supervision.period_s must be > 0, got {self.period_s}")
        if not 0 < self.heartbeat_s < self.heartbeat_timeout_s:
            raise ValueError(
                "supervision: 0 < heartbeat_s < heartbeat_timeout_s is required, got "
                f"{self.heartbeat_s} and {self.heartbeat_timeout_s}"
            )


class ClusterSpec(_SpecStruct, kw_only=True):
    """Nodes on other hosts: where the supervisor listens for them and which keys it admits.
    `listen` is host:port (traces arrive on the next port); `advertise` is how other hosts reach
    that address (default: the listen address, which must then not be 0.0.0.0); `keys` is the
    folder `agentrt keys gen` wrote (or the supervisor's key file alone, when every node joins):
    the supervisor's key and the public key of every node allowed to join."""

    listen: str = ""
    advertise: str = ""
    keys: str = ""
    # false: the supervisor spawns no node, every node joins (an orchestrator starts them all,
    # as under `agentrt deploy k8s`); true: nodes without a host are spawned here.
    spawn: bool = True

    def joins(self, node: NodeSpec) -> bool:
        """Does `node` join over TCP (rather than being spawned by the supervisor)?"""
        return bool(node.host) or not self.spawn


class PlacementSpec(_SpecStruct, kw_only=True):
    """Which CPUs node processes run on. `pin = "auto"` gives each node a CPU of its own when
    there are no more nodes than CPUs (a thread woken on another CPU costs 30-40 us on a VM,
    3-5 us on its own), `"on"` shares the CPUs out round robin whatever the count, `"off"` lets
    the OS place them; a node's own `cpus` always win."""

    pin: Literal["auto", "on", "off"] = "auto"


def placement(spec: Spec, available: list[int]) -> dict[str, list[int]]:
    """The CPUs each node the supervisor spawns is pinned to (a node left out is not pinned),
    from the CPUs this process may use. SpecError for a node's `cpus` naming one it may not."""
    out: dict[str, list[int]] = {}
    local = [n for n in spec.nodes if not spec.cluster.joins(n)]  # a node that joins runs elsewhere
    for i, node in enumerate(spec.nodes):
        if node.cpus and node in local:
            wrong = sorted(set(node.cpus) - set(available))
            if wrong:
                raise SpecError(
                    f"nodes[{i}].cpus names CPU {wrong[0]}, which this host does not offer to the run "
                    f"(it may use CPUs {', '.join(map(str, available))}); pick among those or leave cpus out"
                )
            out[node.name] = sorted(set(node.cpus))
    rest = [n for n in local if not n.cpus]
    pin = spec.placement.pin
    if not available or pin == "off" or (pin == "auto" and len(local) > len(available)):
        return out
    for k, node in enumerate(rest):
        out[node.name] = [available[k % len(available)]]
    return out


class RunSpec(_SpecStruct, kw_only=True):
    """The job: which actor receives it, which skill, and its input. With no `entry`, the
    job goes to the one actor that offers `skill` (known once the nodes have started)."""

    name: str = "run"
    entry: str | None = None
    skill: str = "run"
    goal: str = ""
    input: dict[str, Any] = {}
    timeout_s: float = 600.0
    start_timeout_s: float = 60.0
    drain_s: float = 10.0  # on Ctrl-C / SIGTERM: how long work in flight may take to finish
    # Where actors' state lives: "" for a SQLite file in the run's folder (one host), or a
    # `postgresql://` URL (nodes on several hosts). Keep passwords out of the spec: libpq's
    # PGPASSWORD or ~/.pgpass, or the whole URL in AGENTRT_STORE, which overrides this.
    store: str = ""

    def job_input(self, goal: str | None = None) -> dict[str, Any]:
        data = dict(self.input)
        if goal or self.goal:
            data["goal"] = goal or self.goal
        return data


_Names = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]


class AllowRule(_SpecStruct, kw_only=True):
    """`[[allow]]`: actors `from` may ask `skills` of actors `to` (names or globs like
    `worker-*`; `*` is everyone, every skill)."""

    # Each list names one at least, none empty, and each glob of `from` and `to` matches an
    # actor of the spec: a rule that matches nothing allows nothing, yet turns the allow-list on
    # (refused when the spec is read, naming the field).
    from_: _Names = msgspec.field(name="from")
    to: _Names
    skills: _Names = msgspec.field(default_factory=lambda: ["*"])

    def matches(self, sender: str, recipient: str, skill: str) -> bool:
        return (
            any(fnmatch.fnmatchcase(sender, p) for p in self.from_)
            and any(fnmatch.fnmatchcase(recipient, p) for p in self.to)
            and any(fnmatch.fnmatchcase(skill, p) for p in self.skills)
        )

    def __str__(self) -> str:
        return f"from {self.from_} to {self.to} skills {self.skills}"


def refusal(rules: list[AllowRule], sender: str, recipient: str, skill: str) -> str | None:
    """Why `sender` may not ask `skill` of `recipient` under `rules`, or None if it may. No rules:
    every actor may ask every skill. The supervisor (which asks the run's job) always may."""
    if not rules or sender == "supervisor" or any(r.matches(sender, recipient, skill) for r in rules):
        return None
    return (
        f"not allowed: '{sender}' may not ask skill '{skill}' of '{recipient}': no [[allow]] rule "
        f"of the spec matches (rules: {'; '.join(str(r) for r in rules)}); add a rule with "
        f'from = ["{sender}"], to = ["{recipient}"], skills = ["{skill}"] to allow it'
    )


class A2ASpec(_SpecStruct, kw_only=True):
    """The A2A gateway of `agentrt serve`: where it listens, which actors it exposes (every
    actor unless listed; the entry actor's card is also at the root), the base URL the
    cards name when clients reach it through a proxy (default: http://<listen>), and who may
    call it."""

    listen: str = "127.0.0.1:8000"
    expose: list[str] = []
    public_url: str = ""
    # Callers by name; each one's bearer token is read from AGENTRT_A2A_TOKEN_<NAME> (never
    # from the spec). With callers, a request without a known token is refused (401) and
    # each caller sees only its own tasks; without, the gateway is open and one scope.
    callers: list[str] = []
    # HTTPS: a PEM certificate (chain) and its key. Without them the gateway speaks plain
    # HTTP, which is for 127.0.0.1 or behind a proxy that terminates TLS.
    tls_cert: str = ""
    tls_key: str = ""
    # How many ended tasks of each caller, per actor, GetTask and ListTasks still know (in
    # memory and in the run's store); an older ended task is forgotten (GetTask: not found).
    # A task still running is never forgotten.
    keep_tasks: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000


class Spec(_SpecStruct, kw_only=True):
    run: RunSpec = RunSpec()
    a2a: A2ASpec | None = None
    model: ModelConfig = ModelConfig()
    limits: Limits = Limits()
    supervision: SupervisionSpec = SupervisionSpec()
    cluster: ClusterSpec = ClusterSpec()
    placement: PlacementSpec = PlacementSpec()
    nodes: list[NodeSpec]
    # Who may ask which skills of whom, checked by the receiving node; none: everyone anything.
    allow: list[AllowRule] = []
    base_dir: str = ""  # where the spec lives; custom actor modules are imported from there

    def actor(self, name: str) -> ActorSpec | None:
        return next((a for n in self.nodes for a in n.actors if a.name == name), None)


class NodeBoot(_SpecStruct, kw_only=True):
    """What the supervisor hands a node process on its standard input."""

    run_id: str
    node: NodeSpec
    endpoint: str
    supervisor_endpoint: str
    trace_endpoint: str
    limits: Limits
    default_model: ModelConfig
    store: str  # a SQLite file's path, or a postgresql:// URL with this node's own role
    run_dir: str = ""
    heartbeat_s: float = 1.0
    allow: list[AllowRule] = []
    sys_path: list[str] = []
    terminal: str | None = None  # the user's terminal device, when the run has one
    cpus: list[int] = []  # the CPUs to pin the process to (empty: not pinned)
    trust: Trust  # this node's CurveZMQ keypair (secret: stdin only) and the run's public keys
    epoch: int = 0  # this incarnation's, given by the supervisor (fencing)
    # The host (or host:port) other hosts reach this node's `endpoint` at, when it binds
    # tcp://0.0.0.0 or a port chosen at bind ("*"); "" for ipc and for a concrete tcp address.
    advertise: str = ""
    # A joined node stops after this long without a `Lease` from the supervisor (0: a spawned
    # node, which dies with its parent instead).
    lease_s: float = 0.0


def entry_actor(run: RunSpec, offering: list[str]) -> str:
    """The actor that takes the job: `run.entry`, or else the one actor (of `offering`, those
    whose cards offer `run.skill`) that offers the run's skill; SpecError if none or several do."""
    if run.entry is not None:
        return run.entry
    if len(offering) == 1:
        return offering[0]
    found = f"{len(offering)} actors offer it ({', '.join(sorted(offering))})" if offering else "no actor offers it"
    raise SpecError(
        f"{run.name}: run.entry is not set, so the job goes to the one actor offering skill "
        f"'{run.skill}' (run.skill), but {found}; set run.entry to the actor that takes the job"
    )


def check_spec(spec: Spec, origin: str = "spec") -> Spec:
    """Check what the types cannot: names, uniqueness, the entry actor, class strings."""
    if not spec.nodes:
        raise SpecError(f"{origin}: 'nodes' is empty; a run needs at least one node")
    seen_nodes: set[str] = set()
    seen_actors: set[str] = set()
    for i, node in enumerate(spec.nodes):
        where = f"{origin}: nodes[{i}]"
        if not _NAME.fullmatch(node.name):
            raise SpecError(f"{where}.name {node.name!r} must match {_NAME.pattern} (it names a log file and an address)")
        if node.name == "supervisor":
            raise SpecError(f"{where}.name 'supervisor' is the supervisor's; name the node otherwise")
        if node.name in seen_nodes:
            raise SpecError(f"{where}.name '{node.name}' is used by two nodes; names are unique")
        seen_nodes.add(node.name)
        if not node.actors:
            raise SpecError(f"{where}.actors is empty; a node hosts at least one actor")
        for j, actor in enumerate(node.actors):
            aw = f"{where}.actors[{j}]"
            if not _NAME.fullmatch(actor.name):
                raise SpecError(f"{aw}.name {actor.name!r} must match {_NAME.pattern} (it is an address)")
            if actor.name in seen_actors or actor.name == "supervisor":
                raise SpecError(f"{aw}.name '{actor.name}' is taken; actor names are unique")
            seen_actors.add(actor.name)
            module, _, cls = actor.cls.partition(":")
            if not module or not cls:
                raise SpecError(
                    f"{aw}.class '{actor.cls}' must be 'module:Class', e.g. 'agentrt.actors:Worker'"
                )
    quotas = [("model.quota", spec.model.quota if spec.model else None)] + [
        (f"nodes[{i}].actors[{j}].model.quota", a.model.quota if a.model else None)
        for i, n in enumerate(spec.nodes)
        for j, a in enumerate(n.actors)
    ]
    for where, quota in quotas:
        if quota is not None and quota not in seen_actors:
            raise SpecError(
                f"{origin}: {where} '{quota}' is not an actor of the spec; add a Quota actor "
                "(class 'agentrt.actors:Quota') with that name"
            )
    for i, rule in enumerate(spec.allow):
        for field, names in (("from", rule.from_), ("to", rule.to)):
            for name in names:
                if not any(ch in name for ch in "*?[") and name not in seen_actors and name != "supervisor":
                    raise SpecError(
                        f"{origin}: allow[{i}].{field} names '{name}', which is not an actor of the "
                        f"spec (actors: {', '.join(sorted(seen_actors))}); use a name or a glob like 'worker-*'"
                    )
                if not any(fnmatch.fnmatchcase(actor, name) for actor in [*seen_actors, "supervisor"]):
                    raise SpecError(
                        f"{origin}: allow[{i}].{field} has the glob '{name}', which matches no actor of "
                        f"the spec (actors: {', '.join(sorted(seen_actors))}); fix or remove it"
                    )
    if spec.a2a and bool(spec.a2a.tls_cert) != bool(spec.a2a.tls_key):
        raise SpecError(f"{origin}: a2a.tls_cert and a2a.tls_key go together; set both or neither")
    for name in spec.a2a.expose if spec.a2a else []:
        if name not in seen_actors:
            raise SpecError(
                f"{origin}: a2a.expose names '{name}', which is not an actor of the spec "
                f"(actors: {', '.join(sorted(seen_actors))})"
            )
    if spec.run.entry is not None and spec.run.entry not in seen_actors:
        raise SpecError(
            f"{origin}: run.entry '{spec.run.entry}' is not an actor of the spec "
            f"(actors: {', '.join(sorted(seen_actors))})"
        )
    return spec


_SECRET_FIELDS = ("api_key", "apikey", "key", "auth_token", "token", "secret")


def _refuse_secrets(data: dict[str, Any], origin: str) -> None:
    """A model table with a key in it is refused before anything reads it further."""
    tables = [("model", data.get("model"))] + [
        (f"nodes[{i}].actors[{j}].model", a.get("model"))
        for i, n in enumerate(data.get("nodes") or [])
        if isinstance(n, dict)
        for j, a in enumerate(n.get("actors") or [])
        if isinstance(a, dict)
    ]
    for where, table in tables:
        if isinstance(table, dict):
            for field in table:
                if field.lower().replace("-", "_") in _SECRET_FIELDS:
                    raise SpecError(
                        f"{origin}: {where}.{field}: keys are never read from a spec file; "
                        "set ANTHROPIC_API_KEY in the environment"
                    )
    run = data.get("run")
    store = run.get("store") if isinstance(run, dict) else None
    if isinstance(store, str) and "://" in store:
        url = urlsplit(store)
        if url.password is not None or "password" in parse_qs(url.query):
            raise SpecError(
                f"{origin}: run.store: the URL holds a password; passwords are never read from a "
                "spec file (it is copied: into a Kubernetes ConfigMap by `agentrt deploy k8s`); give "
                "the whole URL in AGENTRT_STORE, or the password in PGPASSWORD or ~/.pgpass"
            )


def spec_from_dict(data: dict[str, Any], origin: str = "spec", base_dir: str = "") -> Spec:
    _refuse_secrets(data, origin)
    try:
        spec = msgspec.convert({**data, "base_dir": base_dir}, Spec)
    except msgspec.ValidationError as exc:
        raise SpecError(f"{origin}: {exc}") from None
    return check_spec(spec, origin)


def checked(spec: Spec, origin: str = "spec") -> Spec:
    """`spec` checked as a spec file is: one built in code (its structs made directly, or
    changed with `msgspec.structs.replace`) gets the same errors, naming the field and the
    rule (a bound of `limits`, a name, an allow rule), before anything is started."""
    return spec_from_dict(msgspec.to_builtins(spec), origin, spec.base_dir)


def load_spec(path: str | Path) -> Spec:
    """Load a spec from a .toml or .py file, or from a folder holding spec.toml / spec.py.

    A Python spec defines `SPEC`, a dict of the same shape as the TOML file.
    """
    p = Path(path)
    if p.is_dir():
        for candidate in ("spec.toml", "spec.py"):
            if (p / candidate).is_file():
                p = p / candidate
                break
        else:
            raise SpecError(f"{path}: folder has no spec.toml or spec.py")
    if not p.is_file():
        raise SpecError(f"{path}: no such spec file")
    base = str(p.resolve().parent)
    if p.suffix == ".toml":
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{p}: not valid TOML: {exc}") from None
    elif p.suffix == ".py":
        data = runpy.run_path(str(p)).get("SPEC")
        if not isinstance(data, dict):
            raise SpecError(f"{p}: a Python spec must define SPEC as a dict")
    else:
        raise SpecError(f"{p}: a spec is a .toml or .py file")
    return spec_from_dict(data, str(p), base)


def with_model_kind(spec: Spec, kind: str) -> Spec:
    """The spec with every model (the default and each actor's) switched to `kind`; names and
    quotas are kept. What `agentrt run --model` does."""
    if kind not in ("offline", "anthropic"):
        raise SpecError(f"model kind must be 'offline' or 'anthropic', got '{kind}'")

    def switch(m: ModelConfig | None) -> ModelConfig | None:
        if m is None or m.kind == kind:
            return m
        name = m.name if kind == "anthropic" and (m.name or "").startswith("claude") else None
        return msgspec.structs.replace(m, kind=kind, name=name)  # type: ignore[arg-type]

    nodes = [
        msgspec.structs.replace(
            n, actors=[msgspec.structs.replace(a, model=switch(a.model)) for a in n.actors]
        )
        for n in spec.nodes
    ]
    return msgspec.structs.replace(spec, model=switch(spec.model), nodes=nodes)
