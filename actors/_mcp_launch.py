"""Start a stdio MCP server that dies with its node: `python -m agentrt.actors._mcp_launch
NODE_PID COMMAND [ARGS...]` asks Linux to SIGKILL this process when the thread that started it
goes away (PR_SET_PDEATHSIG, kept across exec), then becomes COMMAND.

A node killed with -9 cannot stop its servers; the kernel does it for it. The MCP SDK starts
servers in a new session, so no signal sent to the node's group reaches them either.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PID_LINE = "mcp launcher: starting the server as pid "


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m agentrt.actors._mcp_launch NODE_PID COMMAND [ARGS...]")
    node_pid, command = int(argv[0]), argv[1:]
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the node's orderly stop is all there is
        pass
    if os.getppid() != node_pid:  # the node died before the line above: do not start at all
        sys.exit(f"mcp launcher: node {node_pid} is gone")
    # The first line on stderr (the node's log) says which process the server is.
    os.write(2, f"{PID_LINE}{os.getpid()}\n".encode())
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.exit(f"mcp launcher: cannot run {command[0]!r}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
