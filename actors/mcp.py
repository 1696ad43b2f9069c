"""MCP tools as skills: an actor that connects to MCP servers and offers each tool they list.

The rules (what the annotations mean, approvals, what a failure may do next, reconnecting)
are in `_mcp_core.py`, with no I/O; this module is the shell: an asyncio loop on a thread of
its own runs the official `mcp` SDK's client for every server, and skill handlers hand it
calls and wait for the answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types
import msgspec
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPError

from agentrt.protocols import Escalation, EscalationAnswer, new_id
from agentrt.runtime import Actor, LineRedactor, Request, SpecError, known_secrets

from ._mcp_core import (
    APPROVE,
    AfterFailure,
    Approvals,
    Connect,
    ConnectAt,
    Failure,
    GiveUp,
    Link,
    LinkCommand,
    ToolRule,
    after_failure,
    on_repeat,
    skill_id,
)
from ._mcp_launch import PID_LINE

_ACTOR_KEYS = {
    "servers", "approve", "human", "approval_timeout_s", "connect_timeout_s", "call_wait_s",
    "backoff_s", "backoff_max_s", "max_reconnects",
}
_SERVER_KEYS = {"name", "command", "module", "args", "env", "cwd", "url", "headers", "prefix", "timeout_s", "mode"}


@dataclass
class ServerConfig:
    """One `[[...config.servers]]` entry: a stdio `command` (or a Python `module`, run with the
    node's interpreter and import path) or a streamable-HTTP `url`."""

    name: str
    command: list[str] = field(default_factory=list)
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    timeout_s: float = 60.0
    mode: str = "auto"  # the SDK's: "auto" (2026-07-28 if the server has it) or "legacy"

    def secrets(self) -> list[str]:
        """Values never to show in a log: what was put in the server's environment or headers
        (PYTHONPATH aside), long enough to be a token."""
        values = [v for k, v in self.env.items() if k != "PYTHONPATH"] + list(self.headers.values())
        return [v for v in values if len(v) >= 8]

    @classmethod
    def parse(cls, actor: str, i: int, raw: Any) -> ServerConfig:
        where = f"MCPTools '{actor}': config.servers[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(f"{where} must be a table, got {type(raw).__name__}")
        unknown = sorted(set(raw) - _SERVER_KEYS)
        if unknown:
            raise SpecError(f"{where} has unknown keys {unknown}; known: {sorted(_SERVER_KEYS)}")
        kinds = [k for k in ("command", "module", "url") if raw.get(k)]
        if len(kinds) != 1:
            raise SpecError(
                f"{where} needs exactly one of 'command' (stdio), 'module' (stdio, a Python "
                f"module) or 'url' (streamable HTTP); it has {kinds or 'none'}"
            )
        name = str(raw.get("name") or f"server{i}")
        mode = str(raw.get("mode", "auto"))
        if mode not in ("auto", "legacy"):
            raise SpecError(f"{where}.mode must be 'auto' or 'legacy' (the initialize handshake), got '{mode}'")
        args = [str(a) for a in raw.get("args", [])]
        command: list[str] = []
        if "command" in raw:
            cmd = raw["command"]
            command = ([cmd] if isinstance(cmd, str) else [str(c) for c in cmd]) + args
        elif "module" in raw:
            command = [sys.executable, "-m", str(raw["module"]), *args]
        env = {str(k): _from_environment(str(v), f"{where}.env.{k}") for k, v in raw.get("env", {}).items()}
        if "module" in raw:
            # The module is found as actor classes are: on the node's import path (the spec's
            # folder first).
            env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
        return cls(
            name=name,
            command=command,
            url=str(raw["url"]) if "url" in raw else None,
            env=env,
            cwd=str(raw["cwd"]) if raw.get("cwd") else None,
            headers={
                str(k): _from_environment(str(v), f"{where}.headers.{k}") for k, v in raw.get("headers", {}).items()
            },
            prefix=str(raw.get("prefix", "")),
            timeout_s=float(raw.get("timeout_s", 60.0)),
            mode=mode,
        )


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _from_environment(value: str, where: str) -> str:
    """`value` with each `${NAME}` replaced by the node's environment variable NAME: secrets
    (tokens, keys) stay out of the spec."""

    def lookup(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise SpecError(f"{where} refers to ${{{m.group(1)}}}, which is not set in the environment")
        return os.environ[m.group(1)]

    return _ENV_REF.sub(lookup, value)


class ToolFailed(Exception):
    """A tool call that did not produce a result: what happened, and what may happen next."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class _Server:
    """The shell around one server's `Link`: opens the SDK client, lists the tools, keeps the
    connection (reconnecting with backoff), and makes calls. Runs on the actor's asyncio loop."""

    def __init__(self, owner: MCPTools, config: ServerConfig) -> None:
        self.owner = owner
        self.config = config
        self.link = Link(
            backoff_s=float(owner.config.get("backoff_s", 0.2)),
            backoff_max_s=float(owner.config.get("backoff_max_s", 5.0)),
            max_failures=int(owner.config.get("max_reconnects", 8)),
        )
        self.client: Client | None = None
        self.tools: dict[str, mcp_types.Tool] = {}
        self.up = asyncio.Event()
        self.given_up: str | None = None
        self.first = asyncio.Event()  # set once the first connect succeeded or failed for good
        self.stopping = asyncio.Event()
        self.lost = asyncio.Event()
        self.pump: _StderrPump | None = None  # its stderr, into the node's log
        self.task: asyncio.Task[None] | None = None

    # -- the connection -------------------------------------------------------------

    async def run(self) -> None:
        commands = self.link.start()
        while commands and not self.stopping.is_set():
            cmd = commands.pop(0)
            if isinstance(cmd, Connect):
                commands += await self._connection()
            elif isinstance(cmd, ConnectAt):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), max(0.0, cmd.at - time.monotonic()))
                commands += self.link.due()
            elif isinstance(cmd, GiveUp):
                self.given_up = cmd.reason
                self.owner.ctx.event("mcp.gave-up", server=self.config.name, reason=cmd.reason)
                self.first.set()
        self.link.stop()

    async def _connection(self) -> list[LinkCommand]:
        """One connection, from opening to its loss (or our stop); the link's next commands."""
        self.lost.clear()
        error = "closed"
        try:
            async with contextlib.AsyncExitStack() as stack:
                self.client = client = await self._open(stack)
                changes = None
                # Listen before listing, so no change between the two goes unseen.
                with contextlib.suppress(ListenNotSupportedError):
                    changes = await stack.enter_async_context(client.listen(tools_list_changed=True))
                await self.refresh()
                self.up.set()
                self.link.connected()
                self.first.set()
                self.owner.ctx.event(
                    "mcp.connected",
                    server=self.config.name,
                    transport="http" if self.config.url else "stdio",
                    protocol=client.protocol_version,
                    tools=sorted(self.tools),
                    server_pid=self.pump.pid if self.pump is not None else None,
                    restarts=self.link.restarts,
                )
                await self._watch(changes)
        except Exception as exc:  # the SDK raises many kinds; each is a lost connection here
            error = _describe(exc)
        finally:
            self.up.clear()
            self.client = None
        if self.stopping.is_set():
            return []
        self.owner.ctx.event("mcp.lost", server=self.config.name, error=error)
        return self.link.lost(time.monotonic(), error)

    async def _open(self, stack: contextlib.AsyncExitStack) -> Client:
        """Connect (starting a stdio server) and open the SDK client; `stack` closes both."""
        cfg = self.config
        transport: Any
        if cfg.url is not None:
            http = None
            if cfg.headers:  # the SDK's own client has the same timeouts, and no headers
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0))
                )
            transport = streamable_http_client(cfg.url, http_client=http)
        else:
            launch = [sys.executable, "-m", "agentrt.actors._mcp_launch", str(os.getpid())]
            env = dict(cfg.env)
            if self.owner.ctx.run_dir is not None:  # where a server may leave files for people
                env.setdefault("AGENTRT_RUN_DIR", str(self.owner.ctx.run_dir))
            params = StdioServerParameters(
                command=launch[0], args=[*launch[1:], *cfg.command], env=env, cwd=cfg.cwd
            )
            if self.pump is None:
                self.pump = _StderrPump(cfg.name, cfg.secrets())
            transport = stdio_client(params, errlog=self.pump)
        client = Client(
            transport, message_handler=self._on_message, cache=None, read_timeout_seconds=cfg.timeout_s, mode=cfg.mode
        )
        return await stack.enter_async_context(client)

    async def _watch(self, changes: Any) -> None:
        """Until stopped or lost: on a 2026-07-28 connection, the tools/list_changed stream
        (its loss is the connection's); on an older one, notifications come unasked."""
        stop = asyncio.ensure_future(self.stopping.wait())
        lost = asyncio.ensure_future(self.lost.wait())
        listen = asyncio.ensure_future(self._listen(changes))
        try:
            done, _ = await asyncio.wait({stop, lost, listen}, return_when=asyncio.FIRST_COMPLETED)
            if listen in done and listen.exception() is not None:
                raise listen.exception()  # type: ignore[misc]
            if lost in done:
                raise ConnectionError("the server stopped answering")
        finally:
            self.up.clear()  # before the client closes, which can take a while
            for t in (stop, lost, listen):
                t.cancel()
            await asyncio.gather(stop, lost, listen, return_exceptions=True)

    async def _listen(self, changes: Any) -> None:
        if changes is None:  # an older server: its notifications reach _on_message
            await asyncio.Event().wait()
        async for _event in changes:
            await self.refresh()
        raise ConnectionError("the server closed its tools/list_changed stream")

    def _mark_lost(self) -> None:
        """The connection is gone: calls from now on wait for the next one."""
        self.up.clear()
        self.lost.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self._mark_lost()
        elif isinstance(message, mcp_types.ToolListChangedNotification) and self.client is not None:
            await self.refresh()

    async def refresh(self) -> None:
        """List the tools (every page) and declare them as skills; withdraw the ones gone."""
        client = self.client
        if client is None:
            return
        tools: dict[str, mcp_types.Tool] = {}
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            tools.update({t.name: t for t in page.tools})
            cursor = page.next_cursor
            if cursor is None:
                break
        before = set(self.tools)
        self.tools = tools
        self.owner.declare_tools(self, before)

    def stop(self) -> None:
        self.stopping.set()

    # -- calls ------------------------------------------------------------------------

    async def call(self, tool: str, args: dict[str, Any], wait_s: float) -> mcp_types.CallToolResult:
        """Call `tool` once the server is up (waiting up to `wait_s` for a reconnect)."""
        if self.given_up:
            raise ToolFailed("lost", f"server '{self.config.name}' is not reachable: {self.given_up}")
        try:
            await asyncio.wait_for(self.up.wait(), wait_s)
        except TimeoutError:
            raise ToolFailed(
                "lost",
                f"server '{self.config.name}' was not connected within {wait_s:g}s"
                + (f" (last error: {self.link.last_error})" if self.link.last_error else ""),
            ) from None
        client = self.client
        assert client is not None
        try:
            return await client.call_tool(tool, args, read_timeout_seconds=self.config.timeout_s)
        except MCPError as exc:
            code = exc.error.code
            if code == mcp_types.REQUEST_TIMEOUT:
                raise ToolFailed("timeout", f"no answer within {self.config.timeout_s:g}s") from None
            if code == mcp_types.CONNECTION_CLOSED:
                self._mark_lost()
                raise ToolFailed("lost", exc.error.message) from None
            raise ToolFailed("refused", f"server '{self.config.name}' refused the call: {exc.error.message}") from None
        except TimeoutError:
            raise ToolFailed("timeout", f"no answer within {self.config.timeout_s:g}s") from None
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._mark_lost()
            raise ToolFailed("lost", _describe(exc)) from None
        except RuntimeError as exc:  # e.g. structured content the output schema does not allow
            raise ToolFailed("refused", str(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _StderrPump:
    """A pipe for a stdio server's stderr: each line goes to this node's log, redacted."""

    def __init__(self, server: str, secrets: list[str]) -> None:
        read_fd, write_fd = os.pipe()
        self.file = os.fdopen(write_fd, "w")
        self.server = server
        # One redactor for the stream: a private key block spans lines. The secrets of this
        # server's config (its ${NAME} values) on top of the environment's.
        self.clean = LineRedactor([*known_secrets(), *secrets])
        self.pid: int | None = None  # the server's process, from the launcher's first line
        self.thread = threading.Thread(target=self._pump, args=(read_fd,), daemon=True, name=f"mcp-stderr-{server}")
        self.thread.start()

    def fileno(self) -> int:
        return self.file.fileno()

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for raw in stream:
                line = self.clean(raw.decode(errors="replace")).rstrip()
                if not line and raw.strip():  # a private key's body line, masked whole
                    continue
                if line.startswith(PID_LINE):  # the launcher's first line: a new server process
                    self.pid = int(line.removeprefix(PID_LINE))
                sys.stderr.write(f"[mcp {self.server}] {line}\n")
                sys.stderr.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


class MCPTools(Actor):
    """Offers the tools of MCP servers as skills: each tool listed by a server is a skill whose
    input schema is the tool's `inputSchema` (and output schema its `outputSchema`).

    Config:
    - `servers`: a list of tables, each with `name` and one of `command` (a stdio server:
      a list, or a string, plus `args`, `env`, `cwd`), `module` (a stdio server written in
      Python: run with the node's interpreter, found on the node's import path) or `url`
      (streamable HTTP, with `headers`); `prefix` (put before its tools' names),
      `timeout_s` (per call, 60) and `mode` ("auto", or "legacy": the initialize handshake);
      `${NAME}` in `env` and `headers` is read from the node's environment;
    - `approve` ("first"): destructive tools (`destructiveHint`, MCP's default for a tool
      not read-only) are put to the human actor before their `first` call, before `always`
      every call, or `never`;
    - `human`: the actor to ask (default: the first one offering `escalate`), and
      `approval_timeout_s` (3600): how long to wait for its answer;
    - `connect_timeout_s` (30): how long start waits for every server's tool list;
      `call_wait_s` (10): how long a call waits for a lost server to be back;
      `backoff_s` (0.2), `backoff_max_s` (5), `max_reconnects` (8): reconnecting.
    """

    description = "Offers the tools of MCP servers as skills."
    concurrency = 32

    def on_start(self) -> None:
        unknown = sorted(set(self.config) - _ACTOR_KEYS)
        if unknown:
            raise SpecError(
                f"MCPTools '{self.ctx.name}': unknown config keys {unknown}; known: {sorted(_ACTOR_KEYS)}"
            )
        raw = self.config.get("servers")
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"MCPTools '{self.ctx.name}': config.servers must be a non-empty list of servers")
        self.servers_config = [ServerConfig.parse(self.ctx.name, i, s) for i, s in enumerate(raw)]
        names = [s.name for s in self.servers_config]
        if len(set(names)) != len(names):
            raise SpecError(f"MCPTools '{self.ctx.name}': server names must differ, got {names}")
        approve = str(self.config.get("approve", "first"))
        if approve not in APPROVE:
            raise SpecError(
                f"MCPTools '{self.ctx.name}': config.approve '{approve}' is unknown; use one of {list(APPROVE)}"
            )
        self.approvals = Approvals(approve)  # type: ignore[arg-type]
        # Approvals given before a restart of this node still hold (`first`).
        saved = self.ctx.state.keys()
        for key in saved:
            if key.startswith("approved/") and self.ctx.state.get(key):
                self.approvals.granted.add(key.removeprefix("approved/"))
        self.approval_timeout_s = float(self.config.get("approval_timeout_s", 3600.0))
        self.call_wait_s = float(self.config.get("call_wait_s", 10.0))
        self.routes: dict[str, tuple[_Server, str]] = {}  # skill id -> (server, tool name)
        self.rules: dict[str, ToolRule] = {}
        self._routes_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name=f"{self.ctx.name}-mcp"
        )
        self.loop_thread.start()
        self.servers = [_Server(self, c) for c in self.servers_config]
        wait_s = float(self.config.get("connect_timeout_s", 30.0))
        self._submit(self._start_all()).result(wait_s + 1)
        deadline = time.monotonic() + wait_s
        for server in self.servers:
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
                self._submit(asyncio.wait_for(server.first.wait(), left)).result(left + 1)
            if not server.up.is_set():
                why = server.given_up or server.link.last_error or f"not connected within {wait_s:g}s"
                self.on_stop()
                raise RuntimeError(f"MCP server '{server.config.name}' did not start: {why}")

    async def _start_all(self) -> None:
        for server in self.servers:
            server.task = asyncio.ensure_future(server.run())

    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def on_stop(self) -> None:
        async def stop_all() -> None:
            for server in self.servers:
                server.stop()
            tasks = [s.task for s in self.servers if s.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=8)

        with contextlib.suppress(Exception):
            self._submit(stop_all()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(5)
        for server in self.servers:
            if server.pump is not None:
                server.pump.close()

    # -- the card -----------------------------------------------------------------------

    def declare_tools(self, server: _Server, before: set[str]) -> None:
        """Make `server`'s tools skills (after a listing); withdraw those no longer listed."""
        prefix = server.config.prefix
        with self._routes_lock:
            for name in before - set(server.tools):
                sid = skill_id(prefix, name)
                self.routes.pop(sid, None)
                self.withdraw_skill(sid)
            for name, tool in server.tools.items():
                sid = skill_id(prefix, name)
                taken = self.routes.get(sid)
                if taken is not None and taken[0] is not server:
                    self.ctx.event(
                        "mcp.tool-clash",
                        skill=sid,
                        servers=[taken[0].config.name, server.config.name],
                        text=f"tool '{name}' of '{server.config.name}' has the skill id of a tool of "
                        f"'{taken[0].config.name}'; set a `prefix` on one of them. Kept the first.",
                    )
                    continue
                hints = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
                rule = ToolRule.from_annotations(hints)
                self.routes[sid] = (server, name)
                self.rules[sid] = rule
                self.declare_skill(
                    sid,
                    self._handler(sid),
                    input=tool.input_schema,
                    output=tool.output_schema,
                    read_only=rule.read_only,
                    # A call that may wait for a person has no deadline of the caller's (the
                    # call itself still has the server's `timeout_s`).
                    timeout_s=None if self.approvals.may_ask(rule) else server.config.timeout_s,
                    description=(tool.description or tool.title or name).strip().split("\n")[0],
                    name=tool.title or name,
                    tags=rule.tags(),
                )
        added, removed = set(server.tools) - before, before - set(server.tools)
        if before and (added or removed):
            self.ctx.event(
                "mcp.tools-changed", server=server.config.name, added=sorted(added), removed=sorted(removed)
            )

    def _handler(self, sid: str) -> Any:
        return lambda req: self._call(sid, req)

    # -- a call -------------------------------------------------------------------------

    def _call(self, sid: str, req: Request) -> Any:
        with self._routes_lock:
            route = self.routes.get(sid)
        if route is None:
            req.fail(f"tool '{sid}' is no longer listed by its server", retryable=False)
            return req.defer()
        server, tool = route
        rule = self.rules[sid]
        # A tool that is not idempotent is journaled by idempotency key (see _mcp_core).
        journal = f"call/{sid}/{req.idempotency_key}" if req.idempotency_key and not rule.idempotent else None
        if journal is not None:
            record = self.ctx.state.get(journal)
            repeat = on_repeat(record)
            if repeat == "answer":
                self.ctx.event("mcp.call-repeated", tool=sid, answer="the journaled result")
                return record["result"]
            if repeat == "refuse":
                req.fail(
                    f"{sid}: a call with this idempotency key was made before and its end is "
                    "unknown (its effect may or may not have happened); the tool is not "
                    "idempotent, so it is not made again: check, then run it under a new key",
                    retryable=False,
                )
                return req.defer()
        if self.approvals.needed(rule, sid) and not self._approved(sid, req, server):
            return req.defer()
        if journal is not None:
            self.ctx.state.put(journal, {"state": "started", "at": time.time()})
        started = time.time()
        future = self._submit(server.call(tool, dict(req.data), self.call_wait_s))
        try:
            result = self._wait(future, req)
        except ToolFailed as exc:
            step: AfterFailure = after_failure(rule, exc.failure, sid, exc.detail)
            if journal is not None:
                self.ctx.state.put(journal, {"state": "in-doubt" if step.in_doubt else "failed"})
            self.ctx.event(
                "mcp.call", server=server.config.name, tool=tool, ok=False, failure=exc.failure,
                retryable=step.retryable, started_at=started, finished_at=time.time(),
            )
            req.fail(step.reason, retryable=step.retryable)
            return req.defer()
        self.ctx.event(
            "mcp.call", server=server.config.name, tool=tool, ok=not result.is_error,
            started_at=started, finished_at=time.time(),
        )
        if result.is_error:
            if journal is not None:
                self.ctx.state.put(journal, {"state": "failed"})
            message = _text(result) or "the tool reported an error and no message"
            req.fail(f"{sid}: {message}", retryable=False)
            return req.defer()
        if result.structured_content is not None:
            answer: dict[str, Any] = dict(result.structured_content)
        else:
            answer = {"text": _text(result), "content": [b.model_dump(by_alias=True, exclude_none=True) for b in result.content]}
        if journal is not None:
            self.ctx.state.put(journal, {"state": "done", "result": answer})
        return answer

    def _wait(self, future: concurrent.futures.Future[Any], req: Request) -> Any:
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if req.cancelled.is_set():
                    future.cancel()
                    raise ToolFailed("timeout", "cancelled by the caller (its timeout)") from None

    def on_cancel(self, req: Request, reason: str) -> None:
        """The handler watches `req.cancelled` and cancels the call (the SDK tells the server)."""

    # -- approval -----------------------------------------------------------------------

    def _approved(self, sid: str, req: Request, server: _Server) -> bool:
        """Ask the human actor whether a destructive call may run; fail `req` if not."""
        human = self.config.get("human") or next(
            (a for a in self.ctx.actors_with_skill("escalate") if a != self.ctx.name), None
        )
        if human is None:
            req.fail(
                f"{sid} is destructive (destructiveHint) and needs approval (approve = "
                f"'{self.approvals.policy}'), but no actor offers 'escalate': add an "
                "agentrt.actors:Human actor, or set approve = \"never\"",
                retryable=False,
            )
            return False
        ticket = Escalation(
            ticket_id=f"approve-{sid}-{new_id()[:8]}",
            loop=f"tool:{sid}",
            reason="approval",
            summary=(
                f"{sid} (MCP server '{server.config.name}') is destructive: may it run with "
                f"{_clip(msgspec.json.encode(req.data).decode())}? accept-best: approve and run "
                f"it; abort: refuse (the task fails)"
                + (" — a yes covers its later calls" if self.approvals.policy == "first" else "")
            ),
            iteration=1,
            options=["accept-best", "abort"],
            details={"tool": sid, "server": server.config.name, "arguments": req.data, "approve": self.approvals.policy},
        )
        self.ctx.event("mcp.approval-asked", tool=sid, ticket_id=ticket.ticket_id, human=human)
        result = self.ctx.ask(
            human, "escalate", msgspec.to_builtins(ticket), timeout_s=self.approval_timeout_s
        ).result()
        answer: EscalationAnswer | None = None
        if result.ok:
            with contextlib.suppress(msgspec.ValidationError):
                answer = msgspec.convert(result.data, EscalationAnswer)
        approved = answer is not None and answer.decision in ("accept-best", "continue")
        by = answer.by if answer is not None else f"no valid answer ({result.error or result.data})"
        self.ctx.event("mcp.approval", tool=sid, ticket_id=ticket.ticket_id, approved=approved, by=by)
        self.approvals.answered(sid, approved)
        if approved and self.approvals.policy == "first":
            self.ctx.state.put(f"approved/{sid}", True)
        if not approved:
            req.fail(f"{sid} was not approved ({by}); it did not run", retryable=False)
        return approved


def _text(result: mcp_types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
