"""One host vs three: a demos/research-like fan-out (20 source lookups on 2 workers, critiqued,
then a synthesis, judged) with every node on this host over ipc, then with the supervisor,
planner, coordinator and review on one network-namespace host and each worker on its own
(tests/netns.py), every message over TCP with CurveZMQ; then again with 10 ms of netem delay on
the workers' links where the kernel has sch_netem (else a row says why not).

    sudo .venv/bin/python bench/multihost.py      # root: network namespaces

Each figure is the median of 3 runs' job wall time (from sending the job to its reply). The
offline model's simulated latency (0.05-0.2 s per call) stands in for a model's. Its last line is
`multi-host/one-host wall time: X.XX`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests/netns.py

from agentrt.runtime import run, spec_from_dict  # noqa: E402
from tests import netns  # noqa: E402

BIN = Path(sys.executable).parent
REPEATS = 3
SOURCES = [f"source-{i:02d}" for i in range(20)]
SKILL_RUNS: list[int] = []  # per run: every skill run it caused (plan, tasks, critiques, verdict)


def spec_data() -> dict[str, Any]:
    data = tomllib.loads((ROOT / "demos" / "research" / "spec.toml").read_text())
    for node in data["nodes"]:
        for actor in node["actors"]:
            if actor["name"] == "producer":
                actor["config"]["sources"] = SOURCES
            if "model" in actor:
                actor["model"]["latency_s"] = [0.05, 0.2]
    data["model"]["latency_s"] = [0.05, 0.2]
    return data


def one_host(folder: Path) -> float:
    summary = run(spec_from_dict(spec_data(), "bench", str(folder)), runs_dir=folder / "runs")
    assert summary.state == "completed", summary.error
    SKILL_RUNS.append(summary.tasks)
    return summary.wall_s


def three_hosts(hosts: netns.Hosts, folder: Path, run_id: str) -> float:
    data = spec_data()
    for node in data["nodes"]:
        if node["name"] in ("worker-1", "worker-2"):
            node["host"] = "b" if node["name"] == "worker-1" else "c"
    sup = f"{hosts.addresses['sup']}:7600"
    data["cluster"] = {"listen": sup, "keys": str(folder / "keys")}
    (folder / "spec.json").write_bytes(msgspec.json.encode(data))
    spec = folder / "spec.py"
    spec.write_text(f"import json, pathlib\nSPEC = json.loads(pathlib.Path({str(folder / 'spec.json')!r}).read_text())\n")
    subprocess.run([BIN / "agentrt", "keys", "gen", spec, "-o", folder / "keys"], check=True, capture_output=True)
    runs = folder / "runs"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    supervisor = subprocess.Popen(
        [*hosts.prefix("sup"), str(BIN / "agentrt"), "run", str(spec), "--run-id", run_id, "--runs-dir", str(runs), "--quiet", "--non-interactive", "--model", "offline"],
        **quiet,
    )
    nodes = [
        subprocess.Popen([*hosts.prefix(host), str(BIN / "agentrt"), "node", "--join", f"tcp://{sup}", "--key", str(folder / "keys" / f"{name}.key")], **quiet)
        for host, name in (("b", "worker-1"), ("c", "worker-2"))
    ]
    try:
        code = supervisor.wait(300)
    finally:
        for node in nodes:
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
    summary = msgspec.json.decode((runs / run_id / "summary.json").read_bytes())
    assert code == 0 and summary["state"] == "completed", summary["error"]
    SKILL_RUNS.append(summary["tasks"])
    return float(summary["wall_s"])


def netem_missing() -> str | None:
    probe = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no sch_netem in this kernel (tc said: {probe.stderr.strip()})"
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    return None


def main() -> None:
    why = netns.available()
    if why is not None:  # not an error of the bench run: say why there are no figures
        print(f"bench/multihost.py: skipped: hosts as network namespaces: {why}")
        return
    os.environ.setdefault("AGENTRT_RUNS_DIR", tempfile.gettempdir())
    with tempfile.TemporaryDirectory() as tmp, netns.hosts(["sup", "b", "c"]) as hosts:
        base = Path(tmp)
        local = [one_host(Path(tempfile.mkdtemp(dir=base))) for _ in range(REPEATS)]
        remote = [three_hosts(hosts, Path(tempfile.mkdtemp(dir=base)), f"three-{i}") for i in range(REPEATS)]
        delayed: list[float] = []
        missing = netem_missing()
        if missing is None:
            links = [hosts.links[h] for h in ("b", "c")]
            try:
                for link in links:
                    subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "netem", "delay", "10ms"], check=True)
                delayed = [three_hosts(hosts, Path(tempfile.mkdtemp(dir=base)), f"delayed-{i}") for i in range(REPEATS)]
            finally:
                for link in links:
                    subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], capture_output=True)
    one, many = statistics.median(local), statistics.median(remote)
    tasks = len(SOURCES) + 1
    print(
        f"fan-out: {len(SOURCES)} lookups + synthesis ({tasks} tasks, each critiqued; skill runs per run: "
        f"{', '.join(map(str, sorted(set(SKILL_RUNS))))}), offline model 0.05-0.2 s per call"
    )
    print(f"one host (6 processes, ipc):            {one:.2f}s  (runs: {', '.join(f'{w:.2f}' for w in local)})")
    print(f"three hosts (netns, tcp + CurveZMQ):    {many:.2f}s  (runs: {', '.join(f'{w:.2f}' for w in remote)})")
    if delayed:
        print(f"three hosts + 10 ms netem delay:        {statistics.median(delayed):.2f}s  (runs: {', '.join(f'{w:.2f}' for w in delayed)})")
    else:
        print(f"three hosts + 10 ms netem delay:        skipped: {missing}")
    print(f"multi-host/one-host wall time: {many / one:.2f}")


if __name__ == "__main__":
    main()
