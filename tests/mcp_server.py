"""An MCP server written with the `mcp` SDK, for the MCP tests: over stdio (no arguments) or
streamable HTTP (`--http PORT`, on 127.0.0.1).

Every call appends `{"tool", "edge": "start"|"end", "t", "pid"}` to the JSONL file named by
`$MCP_TEST_LOG`, so a test can see from the server's side which calls overlapped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

server = MCPServer("test-tools")
READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False)


def _log(tool: str, edge: str, **extra: object) -> None:
    path = os.environ.get("MCP_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"tool": tool, "edge": edge, "t": time.time(), "pid": os.getpid(), **extra}) + "\n")


class Hit(BaseModel):
    name: str
    line: int


class Hits(BaseModel):
    query: str
    hits: list[Hit]


@server.tool(annotations=READ_ONLY)
def search(query: str, delay_s: float = 0.3) -> Hits:
    """Search the notes for a word."""
    _log("search", "start", query=query)
    time.sleep(delay_s)
    _log("search", "end", query=query)
    return Hits(query=query, hits=[Hit(name="a.md", line=1)])


@server.tool(annotations=WRITES)
def write_note(name: str, text: str, delay_s: float = 0.2) -> str:
    """Write a note (replaces one of that name)."""
    _log("write_note", "start", name=name)
    if text == "crash":
        os._exit(3)
    time.sleep(delay_s)
    _log("write_note", "end", name=name)
    return f"wrote {name}"


@server.tool(annotations=READ_ONLY)
def fail(message: str) -> str:
    """Always fails, with `message` (isError)."""
    _log("fail", "start")
    raise ToolError(message)


@server.tool(annotations=READ_ONLY)
def crash_once(marker: str) -> str:
    """The first call kills this server (mid-call); later calls, with the marker file there,
    answer."""
    _log("crash_once", "start")
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(3)
    _log("crash_once", "end")
    return f"answered by {os.getpid()}"


@server.tool(annotations=READ_ONLY)
def leak() -> str:
    """Writes a secret to stderr (the node's log must not show it)."""
    print(f"token in use: {os.environ.get('SERVER_TOKEN', '')} and sk-ant-api03-abcdefghijkl", file=sys.stderr, flush=True)
    # A key block, a line at a time (its body must not reach the log either).
    print("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BKEYBODY1\nKEYBODY2xyz\n-----END PRIVATE KEY-----", file=sys.stderr, flush=True)
    return "leaked to stderr"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True))
async def add_tool(ctx: Context) -> str:
    """Adds the tool `late` and tells the clients the tool list changed."""
    server.add_tool(lambda: "late answer", name="late", description="Added while running.",
                    annotations=READ_ONLY)
    await ctx.notify_tools_changed()  # to subscriptions/listen streams (2026-07-28)
    if ctx.protocol_version != "2026-07-28":  # a handshake-era client: the plain notification
        await ctx.session.send_tool_list_changed()
    return "added"


@server.tool(annotations=READ_ONLY)
def hold(seconds: float, name: str = "") -> str:
    """Busy for `seconds` (a thread the server waits for before it can exit)."""
    _log("hold", "start", name=name)
    time.sleep(seconds)
    _log("hold", "end", name=name)
    return "held"


@server.tool(annotations=READ_ONLY)
def header(name: str, ctx: Context) -> str:
    """The value of one HTTP header of this request ('' over stdio)."""
    return (ctx.headers or {}).get(name.lower(), "")


@server.tool(annotations=READ_ONLY)
def pid() -> int:
    """This server's process id."""
    return os.getpid()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
