"""Nodes on several hosts, the pure parts: endpoints as peers reach them, key files, and the
checks a [cluster] gets before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrt.protocols import SpecError
from agentrt.runtime import spec_from_dict
from agentrt.runtime._cli import main
from agentrt.runtime._cluster import public_endpoint, run_trust
from agentrt.runtime._keys import load_key_file


def spec(**cluster: Any) -> Any:
    return spec_from_dict(
        {
            "nodes": [
                {"name": "coord", "actors": [{"name": "coordinator", "class": "agentrt.actors:Coordinator"}]},
                {"name": "w1", "host": "gpu-a", "actors": [{"name": "worker-1", "class": "agentrt.actors:Worker"}]},
            ],
            "cluster": cluster,
        }
    )


def test_public_endpoint_names_the_bound_port_at_the_advertised_host() -> None:
    assert public_endpoint("tcp://10.0.0.5:41234") == "tcp://10.0.0.5:41234"
    assert public_endpoint("tcp://0.0.0.0:7600", "sup.example") == "tcp://sup.example:7600"
    assert public_endpoint("tcp://0.0.0.0:7700", "pod-0.svc:7800") == "tcp://pod-0.svc:7800"
    assert public_endpoint("ipc:///tmp/x/node.sock", "ignored") == "ipc:///tmp/x/node.sock"
    with pytest.raises(SpecError, match="--advertise"):
        public_endpoint("tcp://0.0.0.0:7600")


def test_keys_gen_writes_one_private_file_per_member_that_holds_the_allow_list(tmp_path: Path, capsys: Any) -> None:
    py = tmp_path / "spec.toml"
    py.write_text(
        '[[nodes]]\nname = "coord"\nactors = [{ name = "coordinator", class = "agentrt.actors:Coordinator" }]\n'
        '[[nodes]]\nname = "w1"\nhost = "gpu-a"\nactors = [{ name = "worker-1", class = "agentrt.actors:Worker" }]\n'
    )
    assert main(["keys", "gen", str(py), "-o", str(tmp_path / "keys")]) == 0
    files = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert files == ["coord.key", "supervisor.key", "w1.key"]
    assert all((tmp_path / "keys" / f).stat().st_mode & 0o777 == 0o600 for f in files)
    w1 = load_key_file(str(tmp_path / "keys" / "w1.key"))
    sup = load_key_file(str(tmp_path / "keys" / "supervisor.key"))
    assert w1.me == "w1" and w1.members == sup.members and set(sup.members) == {"supervisor", "coord", "w1"}
    assert w1.hosts == {"coordinator": "coord", "worker-1": "w1"}
    assert "secret" not in repr(w1) and w1.keys.secret not in repr(w1)
    # What the supervisor loads: its own key, and the keys of the nodes it spawns (not w1's).
    trust = run_trust(spec(listen="0.0.0.0:7600", advertise="10.0.0.5", keys=str(tmp_path / "keys")))
    assert set(trust) == {"supervisor", "coord"} and trust["supervisor"].members == sup.members


def test_a_cluster_that_cannot_work_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"w1 join over TCP .* \[cluster\] listen"):
        run_trust(spec())
    with pytest.raises(SpecError, match="keys gen"):
        run_trust(spec(listen="0.0.0.0:7600"))
    with pytest.raises(SpecError, match="HOST:PORT"):
        run_trust(spec(listen="0.0.0.0", keys=str(tmp_path)))
    # libzmq binds port 99999 as 34463 (mod 65536): the run would wait for nodes that dial
    # 99999. The next port carries traces, so the last one is 65534.
    for port in ("99999", "65535", "0"):
        with pytest.raises(SpecError, match="PORT from 1 to 65534"):
            run_trust(spec(listen=f"0.0.0.0:{port}", keys=str(tmp_path)))
    with pytest.raises(SpecError, match="cannot be read"):
        run_trust(spec(listen="0.0.0.0:7600", keys=str(tmp_path)))  # an empty folder
    other = tmp_path / "other"
    other_spec = tmp_path / "other.py"
    other_spec.write_text(
        "SPEC = {'nodes': [{'name': 'x', 'actors': [{'name': 'a', 'class': 'agentrt.actors:Worker'}]}]}\n"
    )
    assert main(["keys", "gen", str(other_spec), "-o", str(other)]) == 0
    with pytest.raises(SpecError, match="made for another spec"):
        run_trust(spec(listen="0.0.0.0:7600", keys=str(other)))


def test_keys_gen_never_writes_a_secret_through_a_symlink_planted_where_a_key_file_goes(tmp_path: Path) -> None:
    py = tmp_path / "spec.toml"
    py.write_text('[[nodes]]\nname = "w1"\nhost = "gpu-a"\nactors = [{ name = "worker-1", class = "agentrt.actors:Worker" }]\n')
    keys = tmp_path / "keys"
    keys.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    (keys / "w1.key").symlink_to(elsewhere)
    assert main(["keys", "gen", str(py), "-o", str(keys)]) == 2
    assert elsewhere.read_text() == ""  # w1's secret key did not go through the link


def test_a_key_given_as_text_on_the_command_line_is_refused_before_it_is_used(
    tmp_path: Path, capsys: Any
) -> None:
    """argv is world-readable (ps): `--key "$(cat w1.key)"` would show w1's secret key to every
    user of the host, and to the node's host agent's child's command line too."""
    py = tmp_path / "spec.toml"
    py.write_text('[[nodes]]\nname = "w1"\nhost = "gpu-a"\nactors = [{ name = "worker-1", class = "agentrt.actors:Worker" }]\n')
    assert main(["keys", "gen", str(py), "-o", str(tmp_path / "keys")]) == 0
    text = (tmp_path / "keys" / "w1.key").read_text()
    capsys.readouterr()
    assert main(["node", "--join", "tcp://127.0.0.1:9", "--key", text, "--wait", "0.5"]) == 2
    said = capsys.readouterr().err
    assert "AGENTRT_NODE_KEY" in said and "visible to every user" in said
