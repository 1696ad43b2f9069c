"""The A2A 1.0 gateway: a run's actors served over HTTP with the `a2a-sdk` server components.

Each exposed actor gets its own A2A agent at `/a2a/<actor>/` (its card at
`/a2a/<actor>/.well-known/agent-card.json`; the entry actor's card also at the root):
JSON-RPC and HTTP+JSON on that URL, SSE streaming, and the 0.3 protocol on the same routes.
The SDK's `DefaultRequestHandler` keeps the A2A tasks (GetTask, ListTasks, SubscribeToTask,
CancelTask); an `AgentExecutor` per actor turns a SendMessage into an ask of the runtime
(`Runtime.ask_async`) and the reply into artifacts and a final status. What the gateway adds
before the SDK sees a message: the skill (the message's `metadata.skill`, or the actor's only
skill) and the input checked against the skill's schema, so a bad input is -32602 with a
`google.rpc.BadRequest` naming the field and the rule instead of a failed task.

An escalation ticket raised while an A2A task runs (the run's human actor waiting for an
answer file) turns the task `TASK_STATE_INPUT_REQUIRED` with the ticket as a data part; the
client's next message on that task is written as the answer, and the task goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from a2a.auth.user import User
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError, UnsupportedOperationError
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from agentrt.protocols import (
    MAX_ID,
    AgentCard,
    Artifact,
    EscalationAnswer,
    EscalationWaiting,
    Event,
    GatewayAnswered,
    GatewayStarted,
    GatewayTask,
    GatewayWarning,
    Message,
    Part,
    ResultAccepted,
    SchemaError,
    SpecError,
    TaskDuplicate,
    TaskRejected,
    TaskStateChanged,
    new_id,
)

from . import a2a as mapping
from ._files import child_path, write_private
from ._messenger import TaskResult
from ._spec import A2ASpec, checked
from ._store import Namespace, open_store
from ._supervisor import Runtime
from ._tracing import emit, get_logger
from ._validation import validate


@dataclass(eq=False)
class _Job:
    """One A2A task of the gateway and the runtime ask behind it."""

    actor: str
    owner: str  # the caller (its name under a2a.callers; "" on an open gateway)
    task_id: str
    trace_id: str
    future: Future[TaskResult]
    # ("progress", a TaskStateChanged), ("result", a ResultAccepted), ("ticket", an escalation
    # ticket as a dict) or ("settled", the asked actor's own end of the task), in the order
    # the events arrived
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    ticket: dict[str, Any] | None = None  # the escalation ticket it waits on, if any
    settled: bool = False  # the asked actor's own end of the task is in the trace


TOKEN_ENV = "AGENTRT_A2A_TOKEN_"
GATEWAY_NAMESPACE = "gateway:a2a"  # the gateway's tasks in the run's store (no actor's name)
_SETTLE_S = 2.0  # at most this long after a reply for its task's last trace events
_REMEMBERED_MESSAGES = 10_000  # messageIds kept to answer a repeat with its first task


class _Caller(User):
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.name


def caller_tokens(callers: list[str]) -> dict[str, str]:
    """token -> caller name, from AGENTRT_A2A_TOKEN_<NAME> (a missing one is a SpecError)."""
    tokens = {}
    for name in callers:
        env = TOKEN_ENV + name.upper().replace("-", "_")
        token = os.environ.get(env)
        if not token:
            raise SpecError(f"a2a.callers names '{name}': set its bearer token in ${env}")
        tokens[token] = name
    return tokens


class _Callers(DefaultServerCallContextBuilder):
    """The caller is who its bearer token says: the SDK's task stores scope tasks by it."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def build_user(self, request: HttpRequest) -> User:
        name = self.tokens.get(_bearer(request.headers.get("authorization", "")))
        return _Caller(name) if name else super().build_user(request)


class _RequireCaller:
    """ASGI middleware: with callers declared, every request but an agent card's needs a
    known bearer token (401 otherwise, naming what to send)."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.tokens
            and not scope["path"].endswith("agent-card.json")
        ):
            headers = dict(scope.get("headers") or [])
            token = _bearer(headers.get(b"authorization", b"").decode("latin-1"))
            if token not in self.tokens:
                refused = JSONResponse(
                    {
                        "error": "this gateway needs 'Authorization: Bearer <token>' of a caller in a2a.callers"
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _LimitBody:
    """ASGI middleware: a request whose body is larger than `limit` bytes (the run's
    `limits.max_frame_bytes`: no message to an actor may be larger) is refused, 413, before
    the SDK parses any of it, so no client can make the gateway hold or store more."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        too_big = declared.isdigit() and int(declared) > self.limit
        body = bytearray()
        while not too_big:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            too_big = len(body) > self.limit
            if not message.get("more_body", False):
                break
        if too_big:
            refused = JSONResponse(
                {
                    "error": f"the request body is larger than {self.limit} bytes, the run's "
                    "limits.max_frame_bytes (what one message to an actor may carry): send "
                    "large content as a part by url"
                },
                status_code=413,
            )
            await refused(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()  # a stream's wait for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _Handler(DefaultRequestHandler):
    """The SDK's request handler, with agentrt's checks before a message becomes a task."""

    def __init__(self, gateway: Gateway, actor: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gateway = gateway
        self.actor = actor

    async def on_message_send(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> Any:
        self.gateway.check(self.actor, params, context.user.user_name)
        first = self._repeated(params, context)
        if first is None:
            return await super().on_message_send(params, context)
        # The same message again (a client's retry): its task, not a second one.
        job = self.gateway.jobs.get(first)
        if job is not None and job.ticket is None and not params.configuration.return_immediately:
            await asyncio.wrap_future(job.future)
        for _ in range(500):  # the reply is in; its last events reach the store just after
            task = await self._first_task(first, params, context)
            settled = mapping.TERMINAL | mapping.INTERRUPTED
            if (
                task is None
                or params.configuration.return_immediately
                or task.status.state in settled
            ):
                return task
            await asyncio.sleep(0.02)
        return task

    async def on_message_send_stream(
        self, params: pb.SendMessageRequest, context: ServerCallContext
    ) -> Any:
        self.gateway.check(self.actor, params, context.user.user_name)
        first = self._repeated(params, context)
        if first is None:
            async for event in super().on_message_send_stream(params, context):
                yield event
            return
        task = await self._first_task(first, params, context)
        if task is None or task.status.state in mapping.TERMINAL:
            yield task
            return
        async for event in self.on_subscribe_to_task(pb.SubscribeToTaskRequest(id=first), context):
            yield event

    async def _first_task(self, first: str, params: pb.SendMessageRequest, context: ServerCallContext) -> Any:
        """The task a repeated message made (waiting while it is being made and not saved
        yet), or TaskNotFound saying it was forgotten."""
        for _ in range(500):  # bounded, not timed
            try:
                return await self.on_get_task(pb.GetTaskRequest(id=first), context)
            except TaskNotFoundError:
                if first not in self.gateway.jobs:
                    break
                await asyncio.sleep(0.02)  # being made (returnImmediately): not saved yet
        else:
            raise TaskNotFoundError(f"task '{first}' of message '{params.message.message_id}' is not saved yet: ask again")
        raise TaskNotFoundError(
            f"message '{params.message.message_id}' made task '{first}', which has ended and "
            f"been forgotten (the gateway keeps each caller's {self.gateway.config.keep_tasks} "
            "latest ended tasks: a2a.keep_tasks); it is not run again for the same messageId"
        )

    def _repeated(self, params: pb.SendMessageRequest, context: ServerCallContext) -> str | None:
        """The task a message with this `messageId` (same caller, same actor) already made."""
        if params.message.task_id:
            return None
        return self.gateway.by_message.get(
            (context.user.user_name, self.actor, params.message.message_id)
        )


class _RunTaskStore(InMemoryTaskStore):
    """An actor's A2A tasks, kept in the run's state store (`runtime/_store.py`: the run's
    SQLite file, or its PostgreSQL) as well as in memory, so a gateway started again on the
    same run (`agentrt serve --run-id`) still answers GetTask and ListTasks for them. Each
    task is one key of the gateway's namespace, `task/<id>`, with its caller; a task that was
    still running is failed on load, since nothing follows it any more.

    Each caller's `keep` most recently ended tasks are kept; an older ended one is forgotten,
    in memory and in the store (GetTask: not found), so a gateway that serves for months
    holds a bounded number of tasks. A task still running is never forgotten."""

    def __init__(self, store: Namespace, actor: str, writes: ThreadPoolExecutor, keep: int) -> None:
        super().__init__()
        self.store = store
        self.actor = actor
        self.keep = keep
        self._writes = writes  # one thread: the store's writes, in order, off the event loop
        self._ended: dict[str, OrderedDict[str, None]] = {}  # caller -> its ended tasks, oldest first

    async def load(self) -> int:
        """Read this actor's tasks back; how many."""
        found: list[tuple[int, pb.Task, str, bool]] = []
        keys = self.store.keys()
        for key in keys:
            saved = self.store.get(key) if key.startswith("task/") else None
            if not saved or saved.get("actor") != self.actor:
                continue
            try:
                task = json_format.ParseDict(saved["task"], pb.Task(), ignore_unknown_fields=True)
            except (json_format.ParseError, KeyError, TypeError) as exc:
                # The store redacts what it keeps, which can break a task's JSON (a raw part
                # whose base64 looks like a key); one such task must not stop the gateway.
                emit(
                    get_logger(actor="gateway"),
                    GatewayWarning(
                        text=f"{GATEWAY_NAMESPACE} {key} could not be read back, so GetTask "
                        f"and ListTasks no longer know it: {exc}"
                    ),
                )
                continue
            stopped = task.status.state not in mapping.TERMINAL
            if stopped:
                task.status.CopyFrom(
                    pb.TaskStatus(
                        state=pb.TASK_STATE_FAILED,
                        message=pb.Message(
                            message_id=f"{task.id}:gateway-restart",
                            role=pb.ROLE_AGENT,
                            parts=[pb.Part(text="the A2A gateway restarted while this task ran: send the message again")],
                        ),
                    )
                )
                task.status.timestamp.GetCurrentTime()
            found.append((task.status.timestamp.ToNanoseconds(), task, str(saved.get("owner", "")), stopped))
        for _, task, owner, stopped in sorted(found, key=lambda f: (f[0], f[1].id)):  # oldest ended first
            context = ServerCallContext(user=_Caller(owner))
            if stopped:  # failed here: written back, so the next gateway finds it ended, then
                await self.save(task, context)
            else:
                await super().save(task, context)
                await self._ended_now(task.id, owner)
        return len(found)

    async def save(self, task: pb.Task, context: ServerCallContext) -> None:
        """Kept in memory, then written to the run's store on the writer thread: a write (a
        SQLite commit waiting for a lock, a PostgreSQL round trip) never holds up the event
        loop, so every other request and stream goes on meanwhile."""
        await super().save(task, context)
        owner = context.user.user_name
        saved = {"actor": self.actor, "owner": owner, "task": json_format.MessageToDict(task)}
        await self._write(
            task.id, "written to", "this gateway answers for it from memory, but one started again on this run may not know it",
            self.store.put, f"task/{task.id}", saved,
        )  # fmt: skip
        if task.status.state in mapping.TERMINAL:
            await self._ended_now(task.id, owner)

    async def _write(self, task_id: str, what: str, then: str, write: Any, *args: Any) -> None:
        """One write to the store, on the writer thread. One that fails (a store gone, a
        lock held past its timeout) fails no request: the client would get an error with no
        task id for a task that may run, and send it again. A warning in the trace says what
        was not written, and `then` what follows from it."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._writes, write, *args)
        except Exception as exc:
            emit(
                get_logger(actor="gateway"),
                GatewayWarning(
                    text=f"task {task_id} of '{self.actor}' could not be {what} the run's store "
                    f"({type(exc).__name__}: {exc}): {then}"
                ),
            )

    async def _ended_now(self, task_id: str, owner: str) -> None:
        """`task_id` (of `owner`) has ended: the newest of its caller's ended tasks; the
        oldest past `keep` are forgotten."""
        ended = self._ended.setdefault(owner, OrderedDict())
        ended[task_id] = None
        ended.move_to_end(task_id)
        while len(ended) > self.keep:
            old, _ = ended.popitem(last=False)
            await super().delete(old, ServerCallContext(user=_Caller(owner)))
            await self._write(
                old, "deleted from", "it is forgotten here, but a gateway started again on this run may know it",
                self.store.delete, f"task/{old}",
            )  # fmt: skip


class _Executor(AgentExecutor):
    """Runs an actor's skill for the SDK: the ask, then artifacts and a final status."""

    def __init__(self, gateway: Gateway, actor: str) -> None:
        self.gateway = gateway
        self.actor = actor

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = str(context.task_id), str(context.context_id)
        updater = TaskUpdater(event_queue, task_id, context_id)
        job = self.gateway.jobs.get(task_id)
        if context.current_task is None:
            message = context.message
            assert message is not None
            await event_queue.enqueue_event(
                pb.Task(
                    id=task_id,
                    context_id=context_id,
                    status=pb.TaskStatus(state=pb.TASK_STATE_SUBMITTED),
                    history=[message],
                )
            )
            job = self.gateway.ask(self.actor, task_id, context)
        elif job is not None and job.ticket is not None and context.message is not None:
            self.gateway.answer(job, context.message)
        else:
            return  # a message for a task that asks nothing: `check` lets none through
        await updater.start_work()
        await self.gateway.follow(job, updater)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = str(context.task_id)
        job = self.gateway.jobs.get(task_id)
        if job is not None:
            self.gateway.runtime.cancel(job.actor, task_id, "cancelled by the A2A client")
            self.gateway.forget(job)  # its reply, when it comes, has nobody to go to
        await TaskUpdater(event_queue, task_id, str(context.context_id)).cancel()


class Gateway:
    """Serves a running `Runtime`'s actors as A2A agents; `start()` listens, `stop()` stops."""

    def __init__(self, runtime: Runtime, config: A2ASpec | None = None) -> None:
        self.runtime = runtime
        # Checked as `[a2a]` of a spec file is: one made in code (keep_tasks=0 or below, a
        # tls_cert without its key, expose naming no actor) would fail each request instead.
        self.config = checked(
            msgspec.structs.replace(runtime.spec, a2a=config or A2ASpec()), f"a2a of run '{runtime.spec.run.name}'"
        ).a2a or A2ASpec()
        tokens = caller_tokens(self.config.callers)  # a missing token fails before binding
        host, _, port = self.config.listen.rpartition(":")
        # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets that say it, and
        # without it every reply on a kept-alive connection waited ~40 ms (Nagle, delayed ACK).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host.strip("[]") or "127.0.0.1", int(port or 8000)))
        bound_host, bound_port = self.sock.getsockname()[:2]
        scheme = "https" if self.config.tls_cert else "http"
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        self.url = (self.config.public_url or f"{scheme}://{bound_host}:{bound_port}").rstrip("/")
        self.jobs: dict[str, _Job] = {}
        # (caller, actor, messageId) -> the task it made: a repeated message gets that task
        self.by_message: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._by_trace: dict[str, _Job] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.log = get_logger(actor="gateway")
        run = runtime.spec.run
        offering = [c.name for c in runtime.messenger.cards.values() if c.skill(run.skill)]
        entry = run.entry or (offering[0] if len(offering) == 1 else None)
        names = self.config.expose or [a.name for n in runtime.spec.nodes for a in n.actors]
        self.cards: dict[str, AgentCard] = {n: runtime.messenger.card(n) for n in names}
        routes: list[Any] = []
        handlers = []
        self._state = open_store(runtime.store, run_id=runtime.run_id)
        self.store = Namespace(self._state, GATEWAY_NAMESPACE)
        self.task_stores: list[_RunTaskStore] = []
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a2a-store")
        callers = _Callers(tokens)
        if tokens and not self.config.tls_cert and bound_host not in ("127.0.0.1", "[::1]"):
            emit(
                self.log,
                GatewayWarning(
                    text="bearer tokens over plain HTTP beyond this host: set a2a.tls_cert and "
                    "a2a.tls_key, or terminate TLS in a proxy in front of the gateway"
                ),
            )
        for name, card in self.cards.items():
            a2a_card = mapping.card_to_a2a(card, f"{self.url}/a2a/{name}/", bearer=bool(tokens))
            tasks = _RunTaskStore(self.store, name, self._writes, self.config.keep_tasks)
            self.task_stores.append(tasks)
            handler = _Handler(
                self,
                name,
                agent_executor=_Executor(self, name),
                task_store=tasks,
                agent_card=a2a_card,
            )
            handlers.append(handler)
            app_routes = [
                *create_agent_card_routes(a2a_card),
                *create_jsonrpc_routes(handler, "/", callers, enable_v0_3_compat=True),
                *create_rest_routes(handler, callers, enable_v0_3_compat=True),
            ]
            routes.append(Mount(f"/a2a/{name}", routes=app_routes))
            if name == entry:
                routes[:0] = create_agent_card_routes(a2a_card)
        self.handlers = handlers
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        self.server = uvicorn.Server(
            uvicorn.Config(
                _RequireCaller(_LimitBody(self.app, runtime.spec.limits.max_frame_bytes), tokens),
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=2,
                ssl_certfile=self.config.tls_cert or None,
                ssl_keyfile=self.config.tls_key or None,
            )
        )
        self._thread: threading.Thread | None = None
        runtime.writer.listeners.append(self._on_event)

    # -- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> Any:
        self.loop = asyncio.get_running_loop()
        for tasks in self.task_stores:
            await tasks.load()
        try:
            yield
        finally:
            for handler in self.handlers:  # no SDK task left pending at shutdown
                with contextlib.suppress(Exception):
                    await handler.aclose()

    def start(self) -> Gateway:
        """Serve on a thread of its own; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="a2a-gateway", daemon=True
        )
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the A2A gateway could not start on {self.config.listen}")
            threading.Event().wait(0.02)
        emit(self.log, GatewayStarted(url=self.url, actors=sorted(self.cards)))
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop taking connections, let the requests in flight (a blocking SendMessage, a
        stream) finish for up to `grace_s`, then stop."""
        self.server.config.timeout_graceful_shutdown = grace_s
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(grace_s + 10)
        with contextlib.suppress(ValueError):
            self.runtime.writer.listeners.remove(self._on_event)
        self.sock.close()
        self._writes.shutdown(wait=True)  # what was saved is written before the store closes
        self._state.close()

    # -- before the SDK: skill, schema, answers ------------------------------------------

    def skill_of(self, actor: str, message: pb.Message, request_meta: dict[str, Any]) -> str:
        card = self.cards[actor]
        meta = {**request_meta, **mapping.from_struct(message.metadata)}
        wanted = meta.get(mapping.SKILL_METADATA_KEY)
        offered = [s.id for s in card.skills]
        if wanted is None and len(offered) == 1:
            return offered[0]
        if wanted is None or wanted not in offered:
            what = (
                "names no skill" if wanted is None else f"names skill '{wanted}', which it has not"
            )
            raise _bad(
                f"actor '{actor}' has skills {offered}: the message {what}; set "
                f"metadata.{mapping.SKILL_METADATA_KEY} to one of them",
                "message.metadata.skill",
            )
        return str(wanted)

    def input_of(
        self, actor: str, skill: str, message: pb.Message
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The data and text of a message for `skill`. A text-only message to a skill whose
        input has exactly one required string field fills that field (what a plain chat
        client sends)."""
        parts = _message(message).parts
        data, text = mapping.first_data(parts), mapping.text_of(parts) or None
        schema = self.cards[actor].contract(skill).input_schema or {}
        required = schema.get("required") or []
        props = schema.get("properties") or {}
        one_string = len(required) == 1 and (props.get(required[0]) or {}).get("type") == "string"
        if data is None and text is not None and one_string:
            data = {required[0]: text}
        return data, text

    def check(self, actor: str, params: pb.SendMessageRequest, owner: str) -> None:
        """Raise InvalidParamsError (-32602, with field violations) for a message that cannot
        become a task: no such skill, or input that breaks the skill's schema. A message on a
        task must answer the ticket it waits on; one that runs takes none (the spec's
        UnsupportedOperation)."""
        message = params.message
        if message.task_id:
            job = self.jobs.get(message.task_id)
            if job is None or job.actor != actor or job.owner != owner:
                return  # the SDK answers: TaskNotFound, or UnsupportedOperation once it ended
            if job.ticket is None:
                raise UnsupportedOperationError(
                    message=f"task '{job.task_id}' is running and takes no message until it "
                    "asks for input (TASK_STATE_INPUT_REQUIRED); send a new message for new work"
                )
            self._answer_of(job, message)
            return
        skill = self.skill_of(actor, message, mapping.from_struct(params.metadata))
        data, _ = self.input_of(actor, skill, message)
        try:
            validate(
                self.cards[actor].contract(skill).input_schema,
                data if data is not None else {},
                what=f"input of skill '{skill}' on '{actor}'",
            )
        except SchemaError as exc:
            index = next(
                (i for i, p in enumerate(message.parts) if p.WhichOneof("content") == "data"), 0
            )
            path = f"message.parts[{index}].data{exc.field[1:]}"
            raise _bad(str(exc), path, rule=exc.rule) from None

    # -- the ask and its outcome ---------------------------------------------------------

    def ask(self, actor: str, task_id: str, context: RequestContext) -> _Job:
        message = context.message
        assert message is not None
        skill = self.skill_of(actor, message, dict(context.metadata or {}))
        data, text = self.input_of(actor, skill, message)
        trace_id = new_id()
        owner = context.call_context.user.user_name
        # Known by its trace before the ask leaves: its first events may come back at once.
        job = _Job(actor=actor, owner=owner, task_id=task_id, trace_id=trace_id, future=Future())
        self.jobs[task_id] = job
        self._by_trace[trace_id] = job
        self.by_message[(owner, actor, message.message_id)] = task_id
        while len(self.by_message) > _REMEMBERED_MESSAGES:
            self.by_message.popitem(last=False)
        try:
            job.future = self.runtime.ask_async(
                actor,
                skill,
                data,
                text=text,
                idempotency_key=_idempotency_key(owner, message.message_id),
                task_id=task_id,
                trace_id=trace_id,
                validate=False,  # checked in `check`, with the A2A error
            )
        except Exception:
            self.forget(job)
            raise
        emit(
            self.log,
            GatewayTask(
                task_id=task_id,
                trace_id=trace_id,
                skill=skill,
                to=actor,
                message_id=message.message_id,
            ),
        )
        return job

    async def follow(self, job: _Job, updater: TaskUpdater) -> None:
        """Wait for the ask's reply, streaming progress meanwhile (a WORKING status update
        each time a skill run of its trace ends), or for a ticket: the reply ends the task,
        a ticket parks it in INPUT_REQUIRED (the SDK calls `execute` again with the answer)."""
        reply = asyncio.wrap_future(job.future)
        while not reply.done():
            nxt = asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait({reply, nxt}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                break
            kind, value = nxt.result()
            if kind == "progress":
                await self._progress(updater, value)
            elif kind == "result":
                await self._result(updater, value)
            elif kind == "settled":
                job.settled = True
            elif kind == "ticket":
                job.ticket = value
                summary = str(value.get("summary") or "the run needs a decision")
                options = value.get("options") or []
                await updater.requires_input(
                    updater.new_agent_message(
                        [
                            pb.Part(text=f"{summary} (answer with one of: {', '.join(options)})"),
                            mapping.to_a2a(_data(value), pb.Part),
                        ]
                    )
                )
                return
        await self._last_progress(job, updater)
        result = reply.result()
        self.forget(job)
        task = result.task
        if task.status.state == "TASK_STATE_COMPLETED":
            for artifact in task.artifacts:  # the answer: the last artifacts, then the status
                await self._artifact(updater, artifact)
            await updater.complete()
        elif task.status.state == "TASK_STATE_CANCELED":
            await updater.cancel()
        else:
            error = result.error or f"the task ended {result.state}"
            if result.maybe_ran:  # a client that sends it again as new work must know
                error += (
                    " (the request reached the run and may have run all the same: a new message "
                    "for it may run it twice)"
                )
            failed = updater.new_agent_message([pb.Part(text=error)])
            if task.status.state == "TASK_STATE_REJECTED":
                await updater.reject(failed)
            else:
                await updater.update_status(
                    pb.TASK_STATE_FAILED, message=failed, metadata={"maybeRan": True} if result.maybe_ran else None
                )

    @staticmethod
    async def _artifact(updater: TaskUpdater, artifact: Artifact) -> None:
        """One artifact as one update, whole (`lastChunk`)."""
        a2a = mapping.to_a2a(artifact, pb.Artifact)
        await updater.add_artifact(
            list(a2a.parts),
            artifact_id=a2a.artifact_id,
            name=a2a.name or None,
            metadata=dict(artifact.metadata) if artifact.metadata else None,
            last_chunk=True,
        )

    async def _result(self, updater: TaskUpdater, event: ResultAccepted) -> None:
        """A plan task's result that passed its review, as its own artifact (its id is the
        plan task's)."""
        output = event.output
        part = (
            Part(text=output, media_type="text/plain")
            if isinstance(output, str)
            else Part(data=output, media_type="application/json")
        )
        await self._artifact(
            updater, Artifact(artifact_id=str(event.plan_task), name=event.skill, parts=[part])
        )

    @staticmethod
    async def _progress(updater: TaskUpdater, event: TaskStateChanged) -> None:
        what = f"{event.skill} on {event.actor}: {event.state}"
        await updater.update_status(
            pb.TASK_STATE_WORKING,
            message=updater.new_agent_message([pb.Part(text=what)]),
            metadata={
                "actor": event.actor,
                "skill": event.skill,
                "state": event.state,
                "durationS": event.duration_s,
            },
        )

    async def _last_progress(self, job: _Job, updater: TaskUpdater) -> None:
        """The reply is in, but trace events travel apart from replies: stream those still
        on their way, up to the asked actor's own end of the task (its node ships events in
        order, so the runs it caused on that node are in by then); 2 s at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if job.settled else _SETTLE_S)
        while True:
            if not job.events.empty():
                kind, value = job.events.get_nowait()
            elif job.settled or (left := deadline - loop.time()) <= 0:
                return
            else:
                try:
                    kind, value = await asyncio.wait_for(job.events.get(), left)
                except TimeoutError:
                    return
            if kind == "settled":
                job.settled = True
            elif kind == "progress":
                await self._progress(updater, value)
            elif kind == "result":
                await self._result(updater, value)

    def forget(self, job: _Job) -> None:
        self.jobs.pop(job.task_id, None)
        self._by_trace.pop(job.trace_id, None)

    # -- escalations -------------------------------------------------------------------

    def _ignored(self, why: str) -> None:
        """A trace event the gateway does not act on, and why (`gateway.warning`)."""
        emit(self.log, GatewayWarning(text=why))

    def _escalation_paths(self, event: EscalationWaiting) -> bool:
        """True if the ticket and answer files `event` names are the human actor's own:
        `<ticket id>.json` and `<ticket id>.answer.json` in this run's escalations folder.
        The gateway reads the one and writes the other, so no event may point it elsewhere."""
        folder = (self.runtime.run_dir / "escalations").resolve()
        try:  # a symlink planted in the folder that leads out of it is refused as well
            ticket = child_path(folder, f"{event.ticket_id}.json", "ticketId")
            answer = child_path(folder, f"{event.ticket_id}.answer.json", "ticketId")
        except ValueError:
            return False
        return Path(event.ticket_path).resolve() == ticket.resolve() and Path(event.answer_path).resolve() == answer.resolve()

    def _on_event(self, event: Event) -> None:
        """Trace events (the collector's thread), in the trace of one of our tasks: a skill
        run that ended is progress (the asked actor's own end of the task settles it); a
        result the asked actor accepted is an artifact; a human actor waiting for an answer
        file is a ticket."""
        if not isinstance(
            event,
            TaskStateChanged | TaskDuplicate | TaskRejected | EscalationWaiting | ResultAccepted,
        ):
            return
        job = self._by_trace.get(str(event.trace_id))
        if job is None or self.loop is None:
            return
        tag = f"a '{type(event).__struct_config__.tag}' event of task {job.task_id}'s trace"
        host = self.runtime.messenger.trust.host_of(str(event.actor)) if event.actor else None
        if host is None or event.node not in (host, f"node:{host}"):
            # The collector stamps each event with the node it came from: an actor of one
            # node cannot speak for another's (stream a result, settle, raise a ticket).
            self._ignored(f"{tag} names actor '{event.actor}', which node '{event.node}' it came from does not host: ignored")
            return
        ended = not isinstance(event, TaskStateChanged) or event.state != "working"
        if (isinstance(event, ResultAccepted) or (ended and event.task_id == job.task_id)) and event.actor != job.actor:
            # A result streams, and the end of the task settles it, only from the actor asked
            # (the run whose plan it is): any actor the task's trace reaches knows its ids.
            self._ignored(f"{tag} is of '{event.actor}', not of '{job.actor}' the task asked: ignored")
            return
        put = job.events.put_nowait
        if isinstance(event, ResultAccepted):
            if event.plan_task is not None and event.output is not None:
                self.loop.call_soon_threadsafe(put, ("result", event))
            return
        if isinstance(event, EscalationWaiting):
            path = Path(event.ticket_path)
            if not self._escalation_paths(event):
                self._ignored(
                    f"escalation {event.ticket_id} of '{event.actor}' names a ticket or answer file "
                    f"outside this run's escalations folder ({path}, {event.answer_path}): not read, not answered"
                )
                return
            try:
                ticket = msgspec.json.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                emit(self.log, GatewayWarning(text=f"ticket {path} unreadable: {exc}"))
                return
            ticket["answerPath"] = event.answer_path
            self.loop.call_soon_threadsafe(put, ("ticket", ticket))
            return
        if ended and event.task_id == job.task_id:
            self.loop.call_soon_threadsafe(put, ("settled", event))
        elif ended and isinstance(event, TaskStateChanged):
            self.loop.call_soon_threadsafe(put, ("progress", event))

    def _answer_of(self, job: _Job, message: pb.Message) -> EscalationAnswer:
        """The client's reply to a ticket as an answer: a data part `{"decision",
        "feedback"?}`, or text that is one of the ticket's options."""
        ticket = job.ticket or {}
        parts = _message(message).parts
        data = mapping.first_data(parts)
        if not isinstance(data, dict):
            data = {"decision": mapping.text_of(parts).strip()}
        options = ticket.get("options") or []
        decision = data.get("decision")
        if decision not in options:
            raise _bad(
                f"task '{job.task_id}' waits for an answer to ticket '{ticket.get('ticketId')}': "
                f"decision '{decision}' is not one of {options}",
                "message.parts[0].data.decision",
                rule="enum",
            )
        return EscalationAnswer(
            ticket_id=str(ticket.get("ticketId")),
            decision=decision,
            feedback=data.get("feedback"),
            by="A2A client",
        )

    def answer(self, job: _Job, message: pb.Message) -> None:
        answer = self._answer_of(job, message)
        path = Path(str((job.ticket or {}).get("answerPath")))
        tmp = path.with_suffix(".tmp")
        write_private(tmp, msgspec.json.encode(answer))  # a file of the run: 0600, no symlink followed
        tmp.rename(path)  # the human actor never reads half a file
        emit(
            self.log,
            GatewayAnswered(
                task_id=job.task_id, ticket_id=answer.ticket_id, decision=answer.decision
            ),
        )
        job.ticket = None


def _idempotency_key(owner: str, message_id: str) -> str:
    """The runtime's idempotency key of a client's message: the caller's retry runs once,
    another caller's same messageId is another task. Within the envelope's bound on ids (a
    digest of the two when they are longer: a messageId may be as long as that bound)."""
    key = f"a2a:{owner}:{message_id}"
    if len(key) <= MAX_ID:
        return key
    return "a2a:sha256:" + hashlib.sha256(f"{owner}\0{message_id}".encode()).hexdigest()


def _data(value: dict[str, Any]) -> Part:
    return Part(
        data={k: v for k, v in value.items() if k != "answerPath"}, media_type="application/json"
    )


def _message(message: pb.Message) -> Message:
    """A client's message as ours (-32602 naming the field when it breaks one of our rules)."""
    try:
        return mapping.from_a2a(message, Message)
    except msgspec.ValidationError as exc:
        raise _bad(f"the message is not one agentrt takes: {exc}", "message") from None


def _bad(message: str, path: str, rule: str = "") -> InvalidParamsError:
    """-32602 with a `google.rpc.BadRequest` field violation (the SDK adds it from `errors`)."""
    return InvalidParamsError(
        message=message,
        data={"field": path, "rule": rule, "errors": [{"field": path, "message": message}]},
    )


def serve(
    spec: Any,
    listen: str | None = None,
    *,
    run_id: str | None = None,
    runs_dir: Path | str | None = None,
    on_ready: Any = None,
    terminal: str | None = None,
) -> None:
    """Start the spec's nodes and serve them over A2A until Ctrl-C / SIGTERM, supervising the
    nodes meanwhile (a node that dies is restarted as in `agentrt run`). On Ctrl-C / SIGTERM
    no new connection is taken, and the requests in flight have `run.drain_s` to finish."""
    config = spec.a2a or A2ASpec()
    if listen:
        config = msgspec.structs.replace(config, listen=listen)
    with Runtime(spec, run_id=run_id, runs_dir=runs_dir, terminal=terminal) as rt:
        gateway = Gateway(rt, config).start()
        grace_s = 2.0
        try:
            if on_ready is not None:
                on_ready(gateway)
            rt.wait(Future())  # supervise until interrupted
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the answers in flight still go out
            grace_s = spec.run.drain_s
            raise
        finally:
            gateway.stop(grace_s)
