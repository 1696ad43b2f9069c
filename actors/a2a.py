"""External A2A agents as workers: a remote agent's skills, run like any skill of the run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import msgspec
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb

from agentrt.protocols import (
    A2AAgentReady,
    A2ACancelFailed,
    A2ACancelled,
    A2AResumed,
    A2ASent,
    AgentCapabilities,
    AgentCard,
    Escalation,
    Part,
    state_word,
)
from agentrt.runtime import Actor, Request
from agentrt.runtime import a2a as mapping

from ._remote_task import Cancel, Command, Escalate, Finish, Get, Journal, RemoteCall, Reply, Send

T = TypeVar("T")
_WELL_KNOWN = ".well-known/agent-card.json"
_BELL_FALLBACK_S = 2.0  # with a stream ringing on updates, the task is still read this often


class A2AAgent(Actor):
    """A remote A2A agent's skills as this actor's skills (an A2A client per actor).

    Config:
    - `url`: the remote's agent card (`http://host/.well-known/agent-card.json`) or base URL;
    - `read_only` (false): for skills whose card does not say (agentrt's schema extension does);
    - `timeout_s`: a default per-skill timeout for the coordinator (else the run's);
    - `poll_s` (0.1): with a remote that does not stream, the most time between two reads of
      a running remote task (GetTask; the first after 10 ms, the wait doubling up to this);
      a remote that streams is subscribed to (SubscribeToTask), and read when it updates;
    - `connect_s` (30): how long to keep trying for the remote's card at start;
    - `human` (the run's actor with an `escalate` skill): who answers INPUT_REQUIRED.

    Each request is sent once with `messageId` = its idempotency key (after a remote task of
    it failed, a retry is `<key>:<n>`); the remote task id is journaled in this actor's state under
    that key, so a request that comes again after this node restarted follows the remote task
    (GetTask) instead of sending it again. A cancel (the coordinator's timeout, or the run
    stopping) cancels the remote task. A remote INPUT_REQUIRED becomes an escalation ticket
    for the human actor: `continue` sends the answer (its feedback) on the same task, `abort`
    cancels it. Input and output are checked against the remote's skill schemas when it
    publishes them (agentrt's schema extension), by the host as for every skill. What to do
    next is decided by a sans-I/O core (`_remote_task.RemoteCall`); this class performs it.
    """

    description = "An external A2A agent, as a worker of the run."

    def on_start(self) -> None:
        url = str(self.config.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"A2AAgent '{self.ctx.name}': config.url must be the http(s) URL of an agent card, got '{url}'"
            )
        self.poll_s = float(self.config.get("poll_s", 0.1))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name=f"{self.ctx.name}-a2a", daemon=True
        )
        self.thread.start()
        self.inflight: dict[str, str] = {}  # our task id -> the remote task it runs as
        self._cancel_sent: set[str] = set()  # remote tasks a cancel was sent for
        self._cancel_lock = threading.Lock()
        # Stateful skills one at a time, as on any actor (read-only ones run on the host's pool).
        self.calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.ctx.name}-call")
        self.http = self._sync(self._open())
        card = self._fetch_card(url, float(self.config.get("connect_s", 30)))
        self.remote = card
        bindings = ["JSONRPC", "HTTP+JSON"]
        config = ClientConfig(
            streaming=False, httpx_client=self.http, supported_protocol_bindings=bindings
        )
        self.client = ClientFactory(config).create(card)
        # With a remote that streams, a running task's updates ring a bell (SubscribeToTask)
        # and the task is read when one comes, instead of on a timer.
        self.streams = bool(card.capabilities.streaming)
        watching = ClientConfig(
            streaming=True, httpx_client=self.http, supported_protocol_bindings=bindings
        )
        self.watcher = ClientFactory(watching).create(card)
        self.bells: dict[str, threading.Event] = {}  # our task id -> its wake-up
        # Its skill contracts, typed and checked as every card's are. Only its capabilities
        # are decoded: the rest of a remote card need not meet agentrt's own card's rules (a
        # skill with no tags, which ProtoJSON leaves out, is the remote's business).
        ours = AgentCard(
            name=card.name,
            description=card.description,
            version=card.version,
            capabilities=mapping.from_a2a(card.capabilities, AgentCapabilities),
        )
        published = ours.capabilities.extensions
        has_contracts = any(e.uri == mapping.SKILL_SCHEMAS_EXTENSION for e in published)
        for remote in card.skills:
            declared = ours.contract(remote.id)
            read_only = declared.read_only if has_contracts else bool(self.config.get("read_only", False))
            timeout_s = declared.timeout_s if declared.timeout_s is not None else self.config.get("timeout_s")
            self.declare_skill(
                remote.id,
                self._handler(remote.id, read_only),
                input=declared.input_schema,
                output=declared.output_schema,
                read_only=read_only,
                timeout_s=timeout_s,
                description=remote.description,
                name=remote.name,
                tags=tuple(remote.tags),
            )
        self.ctx.emit(A2AAgentReady(url=url, remote=card.name, skills=[s.id for s in card.skills]))

    def on_cancel(self, req: Request, reason: str) -> None:
        """Cancel the remote task now, not at the next poll: the run may stop right after."""
        remote = self.inflight.get(req.task_id)
        if remote is not None:
            self._cancel_remote(remote)
        bell = self.bells.get(req.task_id)
        if bell is not None:
            bell.set()

    def on_stop(self) -> None:
        if getattr(self, "loop", None) is None:
            return
        for remote in list(self.inflight.values()):  # the run stops: nobody waits for them
            self._cancel_remote(remote)
        self.calls.shutdown(wait=False, cancel_futures=True)
        try:
            self._sync(self.http.aclose(), timeout_s=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)

    def _fetch_card(self, url: str, connect_s: float) -> pb.AgentCard:
        """The remote's card, trying for up to `connect_s` (it may be starting beside the run)."""
        base, _, rest = url.partition("/" + _WELL_KNOWN)
        resolver = A2ACardResolver(self.http, base.rstrip("/"), _WELL_KNOWN + rest)
        deadline = time.monotonic() + connect_s
        while True:
            try:
                return self._sync(resolver.get_agent_card())
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"A2AAgent '{self.ctx.name}': no agent card at {url} within "
                        f"{connect_s:g}s (config.connect_s): {exc}"
                    ) from None
                time.sleep(0.2)

    async def _open(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(30.0))

    def _sync(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        """Run a coroutine of the A2A client on this actor's event loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def _handler(self, skill_id: str, read_only: bool) -> Any:
        """A read-only skill runs on the host's pool thread, in its request's context (its
        events and a ticket's ask carry the job's trace); a stateful one must not hold the
        actor's thread (cancels arrive there), so it runs on this actor's own threads."""

        def handle(req: Request) -> Any:
            if read_only:
                self._call(req, skill_id)
            else:
                self.calls.submit(self._call, req, skill_id)
            return req.defer()

        return handle

    # -- one request -------------------------------------------------------------------

    def _call(self, req: Request, skill_id: str) -> None:
        # Every way out answers the request: a stateful call runs on `self.calls`, where an
        # exception would reach nobody and leave the request unanswered.
        try:
            finish, task = self._run(req, skill_id)
        except Exception as exc:
            req.fail(f"A2A agent {self.remote.name}: {type(exc).__name__}: {exc}")
            return
        finally:
            self.inflight.pop(req.task_id, None)
        if finish.state == "completed" and task is not None:
            try:
                outputs = [mapping.from_a2a(p, Part) for a in task.artifacts for p in a.parts]
            except msgspec.ValidationError as exc:
                # The remote did the work; only its output is unreadable: no retry.
                req.fail(
                    f"A2A agent {self.remote.name}: task {task.id} completed with an output "
                    f"that breaks A2A's rules: {exc}",
                    retryable=False,
                )
                return
            req.complete(outputs)
            return
        said = mapping.text_of(_parts(task.status.message)) if task else ""
        why = "; ".join(w for w in (finish.why, said) if w)
        req.fail(
            f"A2A agent {self.remote.name}: task {finish.task_id or '(not sent)'} ended "
            f"{finish.state}" + (f": {why}" if why else "")
        )

    def _journal_key(self, req: Request) -> str:
        return f"remote-task:{req.skill}:{req.idempotency_key or req.task_id}"

    def _run(self, req: Request, skill_id: str) -> tuple[Finish, pb.Task | None]:
        """Perform the core's commands (`_remote_task.RemoteCall`) until it finishes: send
        the request, or follow the task a restarted node journaled, to its end."""
        key = self._journal_key(req)
        known = self.ctx.state.get(key)
        core = RemoteCall(poll_s=self.poll_s)
        commands = core.start(known["taskId"] if known else None, req.cancelled.is_set())
        task: pb.Task | None = None
        bell = self.bells[req.task_id] = threading.Event()  # rung by updates and by a cancel
        streams, watch = self.streams, None  # watch: the stream ringing `bell`, if any
        sends = int(known.get("sends", 1)) if known else 0  # remote tasks made for this key
        try:
            while True:
                events: list[Command] = []
                for command in commands:
                    if isinstance(command, Finish):
                        return command, task
                    if isinstance(command, Journal):
                        sends += 1
                        self.ctx.state.put(key, {"taskId": command.task_id, "sends": sends})
                        self.inflight[req.task_id] = command.task_id
                        self.ctx.emit(A2ASent(remote_task_id=command.task_id, skill=skill_id))
                    elif isinstance(command, Send):
                        task = self._send(self._request(req, skill_id, sends))
                        events = core.sent(task.id, _state(task))
                    elif isinstance(command, Get):
                        if command.after_s:
                            if streams and watch is None:
                                watch = self._watch(command.task_id, bell)
                            # While a stream rings on updates, the timer is only a fallback;
                            # once it has ended (it may end early), the task is polled.
                            live = watch is not None and not watch.done()
                            bell.wait(_BELL_FALLBACK_S if live else command.after_s)
                            bell.clear()
                            if req.cancelled.is_set() and (cancelling := core.cancel()):
                                events = cancelling
                                continue
                        task = self._get(command.task_id)
                        if known is not None and core.resuming:
                            self.inflight[req.task_id] = task.id
                            state = _state(task)
                            self.ctx.emit(A2AResumed(remote_task_id=task.id, state=state))
                        events = core.seen(_state(task))
                    elif isinstance(command, Cancel):
                        task = self._cancel(command.task_id)
                        assert task is not None
                        events = core.seen(_state(task))
                    elif isinstance(command, Escalate):
                        assert task is not None
                        decision, feedback = self._escalate(req, task)
                        events = core.answered(decision, feedback)
                    elif isinstance(command, Reply):
                        assert task is not None
                        task = self._send(self._reply(task, command.text))
                        if watch is not None and watch.done():
                            watch = None  # its stream closed at INPUT_REQUIRED: a new one
                        events = core.seen(_state(task))
                commands = events
        finally:
            self.bells.pop(req.task_id, None)
            if watch is not None:
                watch.cancel()

    def _watch(self, task_id: str, bell: threading.Event) -> Future[None]:
        """Ring `bell` on each update of the remote task (SubscribeToTask), and once more
        when the stream ends (the task ended or asks for input; or the stream broke)."""

        async def watch() -> None:
            try:
                async for _ in self.watcher.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
                    bell.set()
            except Exception:  # ended, refused, or the remote is gone: polling goes on
                pass
            finally:
                bell.set()

        return asyncio.run_coroutine_threadsafe(watch(), self.loop)

    def _request(self, req: Request, skill_id: str, sent_before: int) -> pb.Message:
        """The request as an A2A message. Its `messageId` is its idempotency key, so sending
        it again (this node died before it journaled the task) makes no second task at a
        remote that knows the id; after a remote task of this key failed, the next is another
        message (`<key>:<n>`), or such a remote would answer with the failed one again."""
        key = f"{self.ctx.name}:{req.idempotency_key or req.task_id}"
        message = pb.Message(
            message_id=key if sent_before == 0 else f"{key}:{sent_before}",
            role=pb.ROLE_USER,
            parts=[mapping.to_a2a(p, pb.Part) for p in req.parts],
        )
        message.metadata.update({mapping.SKILL_METADATA_KEY: skill_id})
        return message

    def _reply(self, task: pb.Task, text: str) -> pb.Message:
        return pb.Message(
            message_id=f"{task.id}:answer:{time.monotonic_ns()}",
            role=pb.ROLE_USER,
            task_id=task.id,
            context_id=task.context_id,
            parts=[pb.Part(text=text)],
        )

    def _get(self, task_id: str) -> pb.Task:
        return self._sync(self.client.get_task(pb.GetTaskRequest(id=task_id)))

    def _send(self, message: pb.Message) -> pb.Task:
        """SendMessage, returning as soon as the remote has a task (returnImmediately)."""

        async def go() -> pb.Task:
            request = pb.SendMessageRequest(
                message=message, configuration=pb.SendMessageConfiguration(return_immediately=True)
            )
            last: Any = None
            async for event in self.client.send_message(request):
                last = event
            if last is None:
                raise RuntimeError("the agent answered nothing")
            if last.HasField("task"):
                return last.task  # type: ignore[no-any-return]
            if last.HasField("message"):  # a message-only agent: its reply is the result
                return pb.Task(
                    id=message.message_id,
                    status=pb.TaskStatus(state=pb.TASK_STATE_COMPLETED),
                    artifacts=[pb.Artifact(artifact_id="reply", parts=last.message.parts)],
                )
            raise RuntimeError(f"unexpected first answer: {last.WhichOneof('payload')}")

        return self._sync(go())

    def _cancel_remote(self, remote_task_id: str) -> None:
        """Cancel now, from `on_cancel` or `on_stop` (the run may stop right after)."""
        self._cancel(remote_task_id, read_back=False)

    def _cancel(self, task_id: str, read_back: bool = True) -> pb.Task | None:
        """Cancel the remote task once, whoever asks first (the actor's thread on a cancel,
        the request's loop, the node stopping); what it is now, read back when asked (a
        cancel it refuses, e.g. already ended, is read with GetTask)."""
        with self._cancel_lock:
            first = task_id not in self._cancel_sent
            self._cancel_sent.add(task_id)
        task = None
        if first:
            try:
                task = self._sync(
                    self.client.cancel_task(pb.CancelTaskRequest(id=task_id)), timeout_s=10
                )
            except Exception as exc:
                self.ctx.emit(A2ACancelFailed(remote_task_id=task_id, error=str(exc)))
        if task is None and read_back:
            task = self._get(task_id)
        if task is not None:
            state = _state(task)
            self.ctx.emit(A2ACancelled(remote_task_id=task.id, state=state))
        return task

    # -- INPUT_REQUIRED ----------------------------------------------------------------

    def _human(self) -> str | None:
        named = self.config.get("human")
        if named:
            return str(named)
        found = self.ctx.actors_with_skill("escalate")
        return found[0] if found else None

    def _escalate(self, req: Request, task: pb.Task) -> tuple[str | None, str | None]:
        """The remote asks for input: a ticket for the human. Its decision (None: the run
        has no human) and feedback."""
        asked = _parts(task.status.message)
        question = mapping.text_of(asked) or "the remote agent needs input"
        human = self._human()
        if human is None:
            return None, None
        ticket = Escalation(
            ticket_id=f"a2a-{task.id[:12]}",
            loop=f"a2a:{self.ctx.name}:{req.skill}",
            reason="other",
            summary=f"{self.remote.name} asks: {question}",
            iteration=1,
            options=["continue", "abort"],
            details={
                "remoteTaskId": task.id,
                "agent": self.remote.name,
                "input": mapping.first_data(asked) or {},
            },
        )
        answer = self.ctx.ask(human, "escalate", msgspec.to_builtins(ticket)).result()
        data = answer.data if answer.ok else {"decision": "abort"}
        return str(data.get("decision")), data.get("feedback")


def _state(task: pb.Task) -> str:
    """A remote task's state in the runtime's words (`TASK_STATE_INPUT_REQUIRED` ->
    `input-required`), as the core and the trace events say it."""
    return state_word(mapping.state_from_a2a(task.status.state))


def _parts(message: pb.Message) -> list[Part]:
    """A remote status message's parts, to read (a part that breaks A2A's Part rule is left
    out: the message only tells why, or what it asks)."""
    parts = []
    for part in message.parts:
        with contextlib.suppress(msgspec.ValidationError):
            parts.append(mapping.from_a2a(part, Part))
    return parts
