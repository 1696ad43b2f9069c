"""A small MCP server, written with the official `mcp` SDK: searches the notes shipped in
`notes/` beside this file (read-only tools) and writes a note (`write_note`, destructive).

Run by `agentrt.actors:MCPTools` over stdio (`module = "notes_server"` in demos/mcp/spec.toml);
`python demos/mcp/notes_server.py --http 8000` serves it over streamable HTTP instead.
New notes go to `$AGENTRT_RUN_DIR/notes/` (the run's folder), never into `notes/`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

NOTES = Path(__file__).resolve().parent / "notes"
READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)
LOOKUP_S = 0.5  # each lookup takes a moment, as a real index would: the fan-out shows

server = MCPServer("notes", instructions="Search and write short markdown notes.")


class Hit(BaseModel):
    note: str
    line: str


class SearchResult(BaseModel):
    query: str
    hits: list[Hit]


class NoteList(BaseModel):
    notes: list[str]


def _out_dir() -> Path:
    folder = Path(os.environ.get("AGENTRT_RUN_DIR") or tempfile.gettempdir()) / "notes"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@server.tool(annotations=READ_ONLY)
def list_notes() -> NoteList:
    """List the notes by name."""
    time.sleep(LOOKUP_S)
    return NoteList(notes=sorted(p.stem for p in NOTES.glob("*.md")))


@server.tool(annotations=READ_ONLY)
def search_notes(query: str) -> SearchResult:
    """Find the lines of the notes that mention a word (case-insensitive)."""
    print(f"search_notes: {query!r}", file=sys.stderr, flush=True)  # into the node's log
    time.sleep(LOOKUP_S)
    word = query.lower()
    hits = [
        Hit(note=p.stem, line=line.strip())
        for p in sorted(NOTES.glob("*.md"))
        for line in p.read_text().splitlines()
        if word in line.lower() and not line.startswith("#")
    ]
    return SearchResult(query=query, hits=hits)


@server.tool(annotations=READ_ONLY)
def read_note(name: str) -> str:
    """The text of one note."""
    path = NOTES / f"{name}.md"
    if not re.fullmatch(r"[\w-]+", name) or not path.is_file():
        raise ToolError(f"no note called '{name}'; list_notes names them")
    return path.read_text()


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False))
def write_note(name: str, text: str) -> str:
    """Write a note (replacing one of that name): a side effect, so it needs approval."""
    if not re.fullmatch(r"[\w-]+", name):
        raise ToolError(f"a note name is letters, digits, '_' and '-'; got '{name}'")
    path = _out_dir() / f"{name}.md"
    path.write_text(text + "\n")
    return f"wrote {path}"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
