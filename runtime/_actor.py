"""The public actor API: subclass `Actor`, declare skills with `@skill`, use `self.ctx`.

Built-in roles use exactly this API. The node hosts each actor in a pykka ThreadingActor:
messages for one actor are handled one at a time on its own thread, except read-only
skills, which run concurrently (they do not touch the actor's state), up to the actor's
`concurrency`: on the I/O thread that received the request (see runtime/_transport.py), or
on the actor's pool past that.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pykka

from agentrt.protocols import (
    BUILT_IN_EVENTS,
    MAX_NAME,
    ActorDrained,
    ActorError,
    ActorStartError,
    AgentCard,
    AgentSkill,
    Artifact,
    Body,
    CancelTask,
    Drain,
    Drained,
    Envelope,
    ModelCall,
    ModelCallFailed,
    ModelClipped,
    ModelQuotaWait,
    ModelRefused,
    Notice,
    OverLimit,
    Part,
    SchemaError,
    SkillContract,
    Task,
    TaskCancelRequested,
    TaskDuplicate,
    TaskOverLimit,
    TaskRejected,
    TaskReply,
    TaskReplyFailed,
    TaskRequest,
    TaskStateChanged,
    TaskStatus,
    TraceEvent,
    UserEvent,
    agent_card,
    event_from_dict,
    new_id,
    task_state,
)

from ._idempotency import Cached, Conflict, Idempotency, Key, Run, payload_hash
from ._messenger import ActorGone, Messenger, TaskResult, failed_task, status_message
from ._models import (
    Model,
    ModelError,
    ModelResponse,
    RateLimited,
    TokenAllowanceExceeded,
    Usage,
    clip_to_allowance,
)
from ._store import Namespace, Store
from ._tracing import emit, get_logger
from ._validation import validate

_SKILL_ATTR = "__agentrt_skill__"


class _SkillDecl(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    method: str
    name: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    read_only: bool
    timeout_s: float | None
    tags: tuple[str, ...]
    handler: Any = None  # a skill declared at run time (`Actor.declare_skill`): its callable

    def to_card(self) -> AgentSkill:
        """The skill as A2A describes it (a description and tags are required there)."""
        return AgentSkill(
            id=self.id,
            name=self.name,
            description=self.description or self.name,
            tags=list(self.tags) or [self.id],
        )

    def contract(self) -> SkillContract:
        """What A2A has no field for: published in the card's skill-schemas extension."""
        return SkillContract(
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            read_only=self.read_only,
            timeout_s=self.timeout_s,
        )


def skill(
    fn: Callable[..., Any] | None = None,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    input: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
    tags: tuple[str, ...] = (),
) -> Any:
    """Declare a method `(self, req: Request) -> result` as a skill on the actor's card.

    `input`/`output` are JSON Schemas for the data part in and the data result out.
    `read_only=True` promises the skill touches no actor state, so calls may overlap.
    """

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        doc = (f.__doc__ or "").strip().split("\n")[0]
        setattr(
            f,
            _SKILL_ATTR,
            _SkillDecl(
                id=id or f.__name__,
                method=f.__name__,
                name=name or f.__name__.replace("_", " "),
                description=description if description is not None else doc,
                input_schema=input,
                output_schema=output,
                read_only=read_only,
                timeout_s=timeout_s,
                tags=tuple(tags),
            ),
        )
        return f

    return mark(fn) if fn is not None else mark


class _Deferred:
    """Returned by `Request.defer()`: the handler will complete the request later."""


DEFERRED = _Deferred()


class Request:
    """One call of a skill: its input, who asked, and how to answer."""

    def __init__(self, host: _Host, envelope: Envelope, decl: _SkillDecl) -> None:
        body = envelope.body
        assert isinstance(body, TaskRequest)
        self.envelope = envelope
        self.skill = decl.id
        self.task_id = envelope.task_id or envelope.message_id
        self.plan_task = envelope.plan_task  # the plan task it runs, if it runs one
        self.context_id = envelope.context_id or self.task_id
        self.attempt = envelope.attempt
        self.idempotency_key = envelope.idempotency_key
        self.sender = envelope.sender
        self.parts: list[Part] = list(body.message.parts)
        self.metadata: dict[str, Any] = body.metadata or {}
        # The first data part (a skill's input is an object: another value is checked against
        # the skill's schema as it is, and a skill without one gets it as `data`).
        self.data: Any = next((p.data for p in self.parts if p.data is not None), {})
        self.text = "\n".join(p.text for p in self.parts if p.text is not None)
        self.usage = Usage()
        self.cost_usd = 0.0
        # Tokens the caller reserved for this request: `ctx.model` calls made for it may
        # spend no more (None: no allowance; the caller keeps no budget).
        self.token_allowance: int | None = body.call.token_allowance
        self.started_at = time.time()
        self._decl = decl
        self._host = host
        self._done = threading.Lock()
        self._finished = False
        self._cancelled: threading.Event | None = None  # made when first asked for
        self.key: Key | None = None  # its idempotency key, in its scope

    @property
    def cancelled(self) -> threading.Event:
        """Set once the request is cancelled: a handler that runs long watches it."""
        event = self._cancelled
        if event is None:  # most requests are never asked (an Event costs 3 us to make)
            with self._done:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def defer(self) -> _Deferred:
        """Return this from a handler that will call `complete` or `fail` later."""
        return DEFERRED

    def complete(self, result: Any = None) -> None:
        """Finish the task with `result` (dict -> data part, str -> text part, None -> nothing)."""
        self._host.finish(self, result=result)

    def fail(self, error: str, *, retryable: bool = True) -> None:
        """Finish the task as failed, with `error` as its status message (`retryable=False`:
        trying again cannot help, or must not happen without a person's say)."""
        self._host.finish(self, error=error, retryable=retryable)

    def _claim(self) -> bool:
        with self._done:
            if self._finished:
                return False
            self._finished = True
            return True


_current = threading.local()


def current_request() -> Request | None:
    """The request whose handler or callback is running on this thread, if any."""
    return getattr(_current, "request", None)


class _MeteredModel:
    """The actor's model, with each call's usage added to the current request and traced."""

    def __init__(self, model: Model, ctx: Context, quota: str | None = None) -> None:
        self._model = model
        self._ctx = ctx
        self._quota = quota
        self.name = model.name
        self.kind = model.kind

    def _draw(self, messages: list[dict[str, Any]], system: str | None, max_tokens: int) -> float:
        """Count the call against the shared quota and wait our turn; the estimate drawn."""
        if self._quota is None:
            return 0.0
        chars = len(system or "") + sum(len(str(m.get("content", ""))) for m in messages)
        estimate = float(chars // 4 + max_tokens)
        wait = self._ctx.ask(self._quota, "acquire", {"tokens": estimate}).result(60).unwrap()["waitS"]
        if wait > 0:
            self._ctx.emit(ModelQuotaWait(quota=self._quota, wait_s=wait))
            time.sleep(wait)
        return estimate

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        system: str | None = None,
        max_tokens: int = 1024,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: dict[str, Any] | None = None,
    ) -> ModelResponse:
        req = current_request()
        if req is not None and req.token_allowance is not None:
            # The caller reserved this much for the request: clip the call to what is left,
            # or do not send it at all.
            used = req.usage.input_tokens + req.usage.output_tokens
            left = req.token_allowance - used
            try:
                clipped = clip_to_allowance(left, messages, system, max_tokens, tools, used=used)
            except TokenAllowanceExceeded as exc:
                self._ctx.emit(ModelRefused(reason=str(exc), need_tokens=exc.need_tokens, least_tokens=exc.least_tokens))
                raise
            if clipped < max_tokens:
                self._ctx.emit(ModelClipped(max_tokens=max_tokens, clipped_to=clipped, allowance=req.token_allowance))
            max_tokens = clipped
        estimate = self._draw(messages, system, max_tokens)
        t0 = time.time()
        try:
            response = self._model.complete(
                messages, system=system, max_tokens=max_tokens, tools=tools, tool_choice=tool_choice
            )
        except RateLimited as exc:
            if self._quota is not None:
                # Wait till the quota has it, so no call of any process slips in after the 429.
                self._ctx.ask(self._quota, "pause", {"retryAfterS": exc.retry_after_s}).result(30)
            self._ctx.emit(ModelCallFailed(error="rate-limited", retry_after_s=exc.retry_after_s))
            raise
        except ModelError as exc:
            self._ctx.emit(ModelCallFailed(error=type(exc).__name__, message=str(exc)))
            raise
        if self._quota is not None:
            used = response.usage.input_tokens + response.usage.output_tokens
            self._ctx.ask(self._quota, "settle", {"estimated": estimate, "actual": used})
            limits = response.rate_limits
            if limits.get("requestsRemaining") == 0 and limits.get("requestsResetS"):
                # The provider says the window is spent: hold every process's calls till reset.
                self._ctx.ask(self._quota, "pause", {"retryAfterS": limits["requestsResetS"]})
        if req is not None:
            req.usage = req.usage + response.usage
            req.cost_usd += response.cost_usd
        self._ctx.emit(
            ModelCall(
                model=response.model,
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
                cost_usd=response.cost_usd,
                stop_reason=response.stop_reason,
                tool_calls=len(response.tool_calls),
                duration_s=round(time.time() - t0, 6),
            )
        )
        return response


class Context:
    """What an actor can do: ask and send to other actors, use its model and its state."""

    def __init__(
        self,
        *,
        name: str,
        node: str,
        run_id: str,
        messenger: Messenger,
        model: Model,
        store: Store,
        config: dict[str, Any],
        quota: str | None = None,
        run_dir: str = "",
        terminal: str | None = None,
    ) -> None:
        self.name = name
        self.node = node
        self.run_id = run_id
        self.config = config
        # The run's folder (trace, state, logs); files an actor shares with people go here.
        self.run_dir = Path(run_dir) if run_dir else None
        # The user's terminal device when the run was started from one, else None: an actor
        # that must ask a person opens it (nodes have no terminal of their own).
        self.terminal = terminal
        self.model = _MeteredModel(model, self, quota)
        self.log = get_logger(actor=name)
        self._messenger = messenger
        self._store = store
        self._state: Namespace | None = None
        self._host: _Host | None = None

    @property
    def state(self) -> Namespace:
        """This actor's namespace in the run's state store."""
        if self._state is None:
            self._state = Namespace(self._store, self.name)
        return self._state

    def _span(self) -> tuple[str | None, str | None, str | None]:
        req = current_request()
        if req is None:
            return None, None, None
        env = req.envelope
        return env.trace_id, env.span_id, req.context_id

    def ask(
        self,
        recipient: str,
        skill: str,
        data: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        then: Callable[[TaskResult], None] | None = None,
        timeout_s: float | None = None,
        task_id: str | None = None,
        plan_task: str | None = None,
        attempt: int = 1,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        validate: bool = True,
        token_allowance: int | None = None,
    ) -> Future[TaskResult]:
        """Ask `recipient` to run `skill` with `data`. Input is checked against the skill's
        schema here (SchemaError) before anything is sent. With `then`, the result is handed
        to `then` on this actor's thread; otherwise wait on the returned future. `plan_task`
        names the plan task the request runs (the trace tools group its runs by it).
        `token_allowance`: the tokens the callee's model calls for this request may spend
        (the callee's `ctx.model` clips each call to it and refuses one that cannot fit)."""
        trace_id, parent, context_id = self._span()
        future = self._messenger.ask(
            sender=self.name,
            recipient=recipient,
            skill=skill,
            data=data,
            text=text,
            task_id=task_id,
            plan_task=plan_task,
            context_id=context_id,
            trace_id=trace_id,
            parent_span_id=parent,
            attempt=attempt,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
            metadata=metadata,
            validate_input=validate,
            token_allowance=int(token_allowance) if token_allowance is not None else None,
        )
        if then is not None:
            host = self._host
            assert host is not None, "ask(then=...) needs a started actor"
            # `then` runs in the trace context of the request that asked, not the I/O thread's.
            caller = current_request()
            future.add_done_callback(lambda f: host.post_as(caller, then, f.result()))
        return future

    def send(self, recipient: str, body: Body) -> None:
        """Send any body to `recipient`; it arrives at the recipient's `on_message`."""
        trace_id, parent, context_id = self._span()
        self._messenger.send(
            self._messenger.envelope(
                sender=self.name,
                recipient=recipient,
                body=body,
                trace_id=trace_id,
                parent_span_id=parent,
                context_id=context_id,
            )
        )

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on this actor's thread."""
        assert self._host is not None
        self._host.post(fn, *args)

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> int:
        """Run `fn(*args)` on this actor's thread after `delay_s`; returns a handle."""
        return self._messenger.timers.schedule(delay_s, lambda: self.call_soon(fn, *args))

    def cancel_timer(self, handle: int) -> None:
        self._messenger.timers.cancel(handle)

    def actors_with_skill(self, skill: str) -> list[str]:
        """Names of the actors (anywhere in the run) that offer `skill`, sorted."""
        return self._messenger.actors_with_skill(skill)

    def card(self, actor: str) -> AgentCard:
        """The agent card of `actor`, from the run's directory."""
        return self._messenger.card(actor)

    def cards(self) -> dict[str, AgentCard]:
        """Every actor of the run (name -> agent card), from the run's directory."""
        return dict(self._messenger.cards)

    def emit(self, event: TraceEvent) -> None:
        """Record a typed trace event (a Struct of `agentrt.protocols`); the span, task and
        plan task it leaves unset are those of the current request."""
        req = current_request()
        if req is not None:
            env = req.envelope
            event = msgspec.structs.replace(
                event,
                trace_id=event.trace_id or env.trace_id,
                span_id=event.span_id or env.span_id,
                task_id=event.task_id or req.task_id,
                plan_task=event.plan_task or req.plan_task,
            )
        emit(self.log, event)

    def event(self, name: str, **fields: Any) -> None:
        """Record an event of your own (a `UserEvent` named `name`, with `fields`) in the
        context of the current request. The name of a built-in event (`plan.accepted`,
        `schedule.dispatch`, ...) records that typed event instead: its fields must fit it."""
        if name not in BUILT_IN_EVENTS:
            self.emit(UserEvent(name=name, fields=fields))
            return
        try:
            event = event_from_dict({**fields, "event": name})
        except msgspec.ValidationError as exc:
            raise ValueError(
                f"trace event '{name}' is a built-in event and these fields do not fit it: {exc} "
                "(see schemas/trace-event.schema.json, or pick another name for an event of your own)"
            ) from None
        self.emit(event)

    def notice(self, text: str) -> None:
        """Tell the person at the terminal `text` (`agentrt run` prints it)."""
        self.emit(Notice(text=text))


class Actor:
    """Base class of every actor. Subclass it, add `@skill` methods, name it in a spec."""

    description: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    concurrency: ClassVar[int] = 16  # read-only skill calls that may run at once
    ctx: Context
    config: dict[str, Any]

    def on_start(self) -> None:
        """Called once on the actor's thread before any message."""

    def on_stop(self) -> None:
        """Called once on the actor's thread when the node stops."""

    def on_message(self, envelope: Envelope) -> None:
        """Bodies other than task requests (messages, critiques, verdicts, ...) arrive here."""

    def on_cancel(self, req: Request, reason: str) -> None:
        """A running request was cancelled (`req.cancelled` is set already). Override to stop
        deferred work; handlers running on the pool should watch `req.cancelled`."""

    def on_drain(self, drain: Draining) -> None:
        """The run is stopping (Ctrl-C, SIGTERM) and this actor is its entry: take on no more
        work, and call `drain.done()` once what is in flight has finished (and is recorded).
        By default, at once."""
        drain.done()

    def declare_skill(
        self,
        id: str,
        handler: Callable[[Request], Any],
        *,
        input: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        read_only: bool = False,
        timeout_s: float | None = None,
        description: str = "",
        name: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        """Add (or replace) a skill found at run time, e.g. a tool a server lists, handled by
        `handler(req)` exactly like an `@skill` method. Skills declared in `on_start` are on the
        card the node registers; one declared later is on this node's copy of the card only."""
        where = f"{type(self).__name__} skill '{id}'"
        if len(id) > MAX_NAME:  # else its card could never be registered or sent
            raise ValueError(
                f"{where} has a {len(id)}-character id; a skill id is at most {MAX_NAME} "
                "(MAX_NAME, as on the wire): declare it under a shorter id"
            )
        if input is not None:
            validate_schema(input, f"{where} input")
        if output is not None:
            validate_schema(output, f"{where} output")
        decl = _SkillDecl(
            id=id,
            method="",
            name=name or id.replace("_", " "),
            description=description,
            input_schema=input,
            output_schema=output,
            read_only=read_only,
            timeout_s=timeout_s,
            tags=tuple(tags),
            handler=handler,
        )
        self.__dict__.setdefault("_declared", {})[id] = decl
        self._publish_card()

    def withdraw_skill(self, id: str) -> None:
        """Remove a skill added with `declare_skill` (e.g. a tool the server no longer lists)."""
        if self.__dict__.get("_declared", {}).pop(id, None) is not None:
            self._publish_card()

    def declared_skills(self) -> list[_SkillDecl]:
        """This instance's skills: the class's `@skill` methods, then those declared at run time."""
        found = {d.id: d for d in type(self).skills()}
        found.update(self.__dict__.get("_declared", {}))
        return list(found.values())

    def _publish_card(self) -> None:
        ctx = self.__dict__.get("ctx")
        if ctx is not None:
            ctx._messenger.cards[ctx.name] = self.agent_card(ctx.name, ctx._messenger.endpoint)

    def agent_card(self, name: str, url: str | None = None) -> AgentCard:
        """The agent card of this instance: `card()` plus the skills declared at run time."""
        return type(self)._card(name, url, self.declared_skills())

    @classmethod
    def skills(cls) -> list[_SkillDecl]:
        found: dict[str, _SkillDecl] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                decl = getattr(value, _SKILL_ATTR, None)
                if isinstance(decl, _SkillDecl):
                    found[decl.id] = decl
        return list(found.values())

    @classmethod
    def card(cls, name: str, url: str | None = None) -> AgentCard:
        """The agent card of an instance called `name` reached at `url` (its node's endpoint,
        on agentrt's own binding)."""
        for d in cls.skills():
            if d.input_schema is not None:
                validate_schema(d.input_schema, f"{cls.__name__}.{d.method} input")
            if d.output_schema is not None:
                validate_schema(d.output_schema, f"{cls.__name__}.{d.method} output")
        return cls._card(name, url, cls.skills())

    @classmethod
    def _card(cls, name: str, url: str | None, decls: list[_SkillDecl]) -> AgentCard:
        return agent_card(
            name,
            cls.description or (cls.__doc__ or "").strip().split("\n")[0] or name,
            [(d.to_card(), d.contract()) for d in decls],
            version=cls.version,
            endpoint=url,
        )


def validate_schema(schema: dict[str, Any], what: str) -> None:
    from ._validation import validator_for

    try:
        validator_for(schema)
    except Exception as exc:
        raise SchemaError(f"{what} is not a valid JSON Schema: {exc}", rule="schema") from None


def _to_parts(result: Any) -> list[Part]:
    if result is None:
        return []
    if isinstance(result, msgspec.Struct):
        result = msgspec.to_builtins(result)
    if isinstance(result, dict):
        return [Part(data=result, media_type="application/json")]
    if isinstance(result, str):
        return [Part(text=result, media_type="text/plain")]
    if isinstance(result, list) and all(isinstance(p, Part) for p in result):
        return list(result)
    raise TypeError(
        f"a skill returns a dict, a str, a msgspec Struct, a list of parts or None; "
        f"got {type(result).__name__}"
    )


class Draining:
    """A drain request handed to `Actor.on_drain`: `done()` answers it (once) with `Drained`."""

    def __init__(self, host: _Host, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, Drain)
        self.reason = body.reason
        self._host = host
        self._envelope = envelope
        self._lock = threading.Lock()
        self.answered = False

    def done(self, detail: str = "") -> None:
        """Say that nothing is in flight any more; later calls do nothing."""
        with self._lock:
            if self.answered:
                return
            self.answered = True
        name = self._host.ctx.name
        emit(self._host.log, ActorDrained(detail=detail))
        self._host.messenger.send(
            self._host.messenger.envelope(
                sender=name,
                recipient=self._envelope.sender,
                body=Drained(actor=name, detail=detail),
                trace_id=self._envelope.trace_id,
                parent_span_id=self._envelope.span_id,
            )
        )


class _Post(msgspec.Struct, frozen=True):
    fn: Callable[..., None]
    args: tuple[Any, ...]
    request: Request | None


class _Pool:
    """Threads that run read-only skill calls, at most `size` at once: a queue and workers
    started as they are needed. Leaner than ThreadPoolExecutor (no Future per call, no
    per-call locks beyond the queue's): a call's outcome goes back as its reply."""

    def __init__(self, size: int, name: str) -> None:
        self.size = self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._stopped = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.put((fn, args))
        with self._lock:
            if self._idle > 0:  # a waiting worker takes it: count it busy from now
                self._idle -= 1
                return
            if self._threads >= self._size or self._stopped:
                return  # it waits for a worker to finish
            self._threads += 1
            n = self._threads
        threading.Thread(target=self._work, name=f"{self._name}_{n - 1}", daemon=True).start()

    def shutdown(self) -> None:
        """Let the workers go once they are done (calls still queued are not run)."""
        with self._lock:
            self._stopped = True
            threads = self._threads
        while True:  # drop what waits, then one stop per worker
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in range(threads):
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            with contextlib.suppress(BaseException):  # _run answers the request itself
                fn(*args)
            with self._lock:
                self._idle += 1


class _Host(pykka.ThreadingActor):
    """Hosts one Actor on a pykka thread; turns envelopes into skill calls and replies."""

    def __init__(
        self, actor: Actor, ctx: Context, messenger: Messenger, node: str, started: Future[None]
    ) -> None:
        super().__init__()
        self.started = started
        self.actor = actor
        self.ctx = ctx
        self.messenger = messenger
        self.node = node
        self.pool = _Pool(max(1, type(actor).concurrency), f"{ctx.name}-skill")
        # Requests being run, by (sender, task id): task ids are chosen by whoever asks.
        self.running: dict[tuple[str, str], Request] = {}
        self._running_lock = threading.Lock()
        # Idempotency (Stripe's semantics): a request whose (sender, skill, key) already
        # completed gets the first result again, one that arrives while the first still runs
        # waits for it, and one with the same key but another payload is refused.
        self.keys: Idempotency[Envelope, Task] = Idempotency()
        # Task requests handed to this actor and not yet answered: answered `failed` if the
        # actor dies before it gets to them (pykka drops what is left in a dead actor's inbox).
        self.accepted: dict[str, Envelope] = {}
        self.log = get_logger(actor=ctx.name)
        self._class_decls = {d.id: d for d in type(actor).skills()}
        ctx._host = self

    @property
    def decls(self) -> dict[str, _SkillDecl]:
        """The actor's skills: its class's, and any it declared at run time."""
        declared = self.actor.__dict__.get("_declared")
        return {**self._class_decls, **declared} if declared else self._class_decls

    # -- any thread ----------------------------------------------------------------------

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) on this actor's thread, in the current request's trace context."""
        self.post_as(current_request(), fn, *args)

    def post_as(self, request: Request | None, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) on this actor's thread, in `request`'s trace context."""
        self.actor_ref.tell(_Post(fn, args, request))

    # -- the actor thread ----------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.actor.on_start()
        except BaseException as exc:
            self.started.set_exception(exc)
            raise
        self.started.set_result(None)

    # -- any thread: the messenger's delivery callback, and the node's death watch ----------

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka's hook: a SimpleQueue (C, lock-free put) instead of queue.Queue's Python
        # Condition; the actor still takes one message at a time, in order.
        return queue.SimpleQueue()

    def accept(self, envelope: Envelope) -> None:
        """Hand `envelope` on; ActorGone if the actor is not running. A request for a read-only
        skill needs nothing of the actor's thread: it is checked, registered and handed to the
        skill pool right here, on the thread that received it (one hand-off, not two).
        Everything else goes to the actor's thread, one message at a time."""
        body = envelope.body
        if isinstance(body, TaskRequest):
            decl = self.decls.get(body.skill)
            if decl is not None and decl.read_only:
                if not self.actor_ref.is_alive():
                    raise ActorGone(f"actor '{self.ctx.name}' on node '{self.node}' is not running")
                try:
                    self._start(envelope, body)
                except Exception as exc:  # as on the actor's thread: reported, never raised on
                    emit(self.log, ActorError(error=f"{type(exc).__name__}: {exc}"))
                return
            with self._running_lock:
                self.accepted[envelope.message_id] = envelope
        try:
            self.actor_ref.tell(envelope)
        except pykka.ActorDeadError:
            with self._running_lock:
                self.accepted.pop(envelope.message_id, None)
            raise ActorGone(
                f"actor '{self.ctx.name}' on node '{self.node}' is not running"
            ) from None

    def reap(self) -> int:
        """If the actor has died, answer `failed` every request it took and never answered
        (each also dead-lettered `actor-dead`). Returns how many."""
        if self.actor_ref.is_alive():
            return 0
        with self._running_lock:
            orphans = [(e, False) for e in self.accepted.values()]  # never started
            orphans += [(r.envelope, True) for r in self.running.values() if r._claim()]  # cut off
            self.accepted.clear()
            self.running.clear()
        for envelope, started in orphans:
            why = f"actor '{self.ctx.name}' on node '{self.node}' died before answering"
            self.messenger.dead_letter("actor-dead", why, envelope=envelope)
            self.messenger.answer(envelope, "failed", why, {"maybeRan": True} if started else None)
        return len(orphans)

    def on_stop(self) -> None:
        try:
            self.actor.on_stop()
        finally:
            self.pool.shutdown()

    def on_receive(self, message: Any) -> Any:
        # Nothing a message does may stop the actor: pykka would stop it on an exception.
        try:
            if isinstance(message, Envelope):
                self._on_envelope(message)
            elif isinstance(message, _Post):
                _current.request = message.request
                try:
                    message.fn(*message.args)
                finally:
                    _current.request = None
        except Exception as exc:
            emit(self.log, ActorError(error=f"{type(exc).__name__}: {exc}"))
        return None

    def _on_envelope(self, envelope: Envelope) -> None:
        body = envelope.body
        if isinstance(body, TaskRequest):
            self._start(envelope, body)
        elif isinstance(body, CancelTask):
            # Only who asked for a task (or the run itself) may cancel it; task ids are the
            # askers' own, so another asker's task of the same id is not this cancel's.
            with self._running_lock:
                same_id = [r for (_, t), r in self.running.items() if t == body.task_id]
            mine = [r for r in same_id if envelope.sender in (r.sender, "supervisor")]
            if same_id and not mine:
                self.messenger.dead_letter(
                    "not-allowed",
                    f"'{envelope.sender}' may not cancel task '{body.task_id}': "
                    f"'{same_id[0].sender}' asked for it",
                    envelope=envelope,
                )
            for req in mine:
                req.cancelled.set()
                self.actor.on_cancel(req, body.reason or "cancelled")
                emit(
                    self.log,
                    TaskCancelRequested(
                        task_id=body.task_id,
                        plan_task=req.plan_task,
                        reason=body.reason,
                        trace_id=envelope.trace_id,
                        span_id=envelope.span_id,
                    ),
                )
        elif isinstance(body, Drain):
            self.actor.on_drain(Draining(self, envelope))
        else:
            self.actor.on_message(envelope)

    def _reject(self, envelope: Envelope, text: str) -> None:
        task_id = envelope.task_id or envelope.message_id
        self.messenger.stats["rejected.schema"] += 1
        emit(
            self.log,
            TaskRejected(
                trace_id=envelope.trace_id,
                span_id=envelope.span_id,
                task_id=task_id,
                plan_task=envelope.plan_task,
                sender=envelope.sender,
                error=text,
            ),
        )
        self._reply(
            envelope, failed_task(task_id, envelope.context_id or task_id, "rejected", text)
        )

    def _start(self, envelope: Envelope, body: TaskRequest) -> None:
        with self._running_lock:
            self.accepted.pop(envelope.message_id, None)
        decl = self.decls.get(body.skill)
        if decl is None:
            offered = ", ".join(sorted(self.decls)) or "none"
            self._reject(
                envelope,
                f"actor '{self.ctx.name}' has no skill '{body.skill}' (it offers: {offered})",
            )
            return
        req = Request(self, envelope, decl)
        try:
            validate(
                decl.input_schema, req.data, what=f"input of skill '{decl.id}' on '{self.ctx.name}'"
            )
        except SchemaError as exc:
            self._reject(envelope, str(exc))
            return
        key = None
        if envelope.idempotency_key:
            key = Key(envelope.sender, decl.id, envelope.idempotency_key, payload_hash(body.message.parts))
            if self._deduplicate(key, envelope):
                return
        req.key = key
        with self._running_lock:
            self.running[(req.sender, req.task_id)] = req
        emit(
            self.log,
            TaskStateChanged(
                state="working",
                trace_id=envelope.trace_id,
                span_id=envelope.span_id,
                task_id=req.task_id,
                plan_task=req.plan_task,
                skill=decl.id,
                attempt=req.attempt,
                sender=envelope.sender,
            ),
        )
        if not decl.read_only:
            self._run(req)
        elif not (len(self.running) <= self.pool.size and self.messenger.run_here(self._run, req)):
            self.pool.submit(self._run, req)

    def _deduplicate(self, key: Key, envelope: Envelope) -> bool:
        """True if this request was answered from, joined, or refused by an earlier one with
        its (sender, skill, key)."""
        with self._running_lock:
            verdict = self.keys.begin(key, envelope)
        match verdict:
            case Run():
                return False
            case Conflict(first=first):
                self._reject(
                    envelope,
                    f"idempotency key '{key.key}' was already used by '{first.sender}' for skill "
                    f"'{key.skill}' on '{self.ctx.name}' with another payload; a key names one "
                    "request (as Stripe's do): send this one with a new key",
                )
                return True
        emit(
            self.log,
            TaskDuplicate(
                trace_id=envelope.trace_id,
                span_id=envelope.span_id,
                task_id=envelope.task_id,
                plan_task=envelope.plan_task,
                skill=key.skill,
                attempt=envelope.attempt,
                idempotency_key=key.key,
                answer="first result returned" if isinstance(verdict, Cached) else "joined the running attempt",
            ),
        )
        if isinstance(verdict, Cached):
            self._reply(envelope, _as_answer_to(envelope, verdict.result))
        return True

    def _run(self, req: Request) -> None:
        _current.request = req
        try:
            handler = req._decl.handler or getattr(self.actor, req._decl.method)
            result = handler(req)
        except TokenAllowanceExceeded as exc:
            self.finish(req, error=str(exc), retryable=False, need_tokens=(exc.need_tokens, exc.least_tokens))
        except RateLimited as exc:
            self.finish(req, error=f"rate limited: {exc}", retry_after_s=exc.retry_after_s)
        except ModelError as exc:
            self.finish(
                req,
                error=f"{type(exc).__name__}: {exc}",
                retry_after_s=exc.retry_after_s,
                retryable=exc.retryable,
            )
        except Exception as exc:
            self.finish(req, error=f"{type(exc).__name__}: {exc}")
        except BaseException as exc:  # the actor's thread is going down: answer first
            self.finish(
                req,
                error=f"actor '{self.ctx.name}' died running this: {type(exc).__name__}: {exc}",
                maybe_ran=True,  # it died part way: whatever it did before is done
            )
            raise
        else:
            if not isinstance(result, _Deferred):
                self.finish(req, result=result)
        finally:
            _current.request = None

    def finish(
        self,
        req: Request,
        *,
        result: Any = None,
        error: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool = True,
        need_tokens: tuple[int, int] | None = None,
        maybe_ran: bool = False,
    ) -> None:
        """Reply to `req` exactly once: completed with `result`, or failed with `error`
        (`retryable=False`: trying again cannot help, e.g. the model refused the request;
        `maybe_ran`: its handler was cut off part way, so its effects may have happened)."""
        if not req._claim():
            return
        with self._running_lock:
            self.running.pop((req.sender, req.task_id), None)
        state = "failed" if error is not None else "completed"
        parts: list[Part] = []
        if error is None:
            try:
                parts = _to_parts(result)
                data = next((p.data for p in parts if p.data is not None), None)
                if req._decl.output_schema is not None:
                    validate(
                        req._decl.output_schema,
                        data if data is not None else {},
                        what=f"output of skill '{req.skill}' on '{self.ctx.name}'",
                    )
            except (SchemaError, TypeError) as exc:
                state, error, parts = "failed", str(exc), []
        if state == "completed" and req._cancelled is not None and req._cancelled.is_set():
            state = "canceled"
        finished = time.time()
        metadata = {
            "actor": self.ctx.name,
            "node": self.node,
            "skill": req.skill,
            "startedAt": req.started_at,
            "finishedAt": finished,
            "durationS": round(finished - req.started_at, 6),
            "usage": {
                "inputTokens": req.usage.input_tokens,
                "outputTokens": req.usage.output_tokens,
                "costUsd": round(req.cost_usd, 8),
            },
        }
        if not retryable:
            metadata["retryable"] = False
        if retry_after_s is not None:  # a 429 upstream: the caller should pause, then retry
            metadata["retryAfterS"] = retry_after_s
        if need_tokens is not None:  # a model call did not fit the request's token allowance
            metadata["needTokens"], metadata["leastTokens"] = need_tokens
        if maybe_ran:  # an asker must not run it again as if it never ran (stateful: in doubt)
            metadata["maybeRan"] = True
        status_msg = None
        if error is not None:
            status_msg = status_message(error)
        task = Task(
            id=req.task_id,
            context_id=req.context_id,
            status=TaskStatus(state=task_state(state), message=status_msg),
            artifacts=[Artifact(artifact_id=new_id(), name=req.skill, parts=parts)]
            if parts
            else [],
            metadata=metadata,
        )
        emit(
            self.log,
            TaskStateChanged(
                state=state,
                trace_id=req.envelope.trace_id,
                span_id=req.envelope.span_id,
                task_id=req.task_id,
                plan_task=req.plan_task,
                skill=req.skill,
                attempt=req.attempt,
                duration_s=metadata["durationS"],
                input_tokens=req.usage.input_tokens,
                output_tokens=req.usage.output_tokens,
                cost_usd=round(req.cost_usd, 8),
                error=error,
            ),
        )
        # How the attempt ended is recorded before its reply leaves: the caller may retry the
        # moment it reads a failure, and a retry that arrived before the record would join
        # this finished attempt and get its failure back instead of running again.
        waiters: list[Envelope] = []
        if req.key is not None:
            with self._running_lock:
                completed = task.status.state == "TASK_STATE_COMPLETED"
                size = len(_task_encoder.encode(task)) if completed else 0
                waiters = self.keys.end(req.key, task, completed=completed, size=size)
        task = self._reply(req.envelope, task)
        for envelope in waiters:
            self._reply(envelope, _as_answer_to(envelope, task))

    def _reply(self, request: Envelope, task: Task) -> Task:
        """Send `task` as the answer to `request`; returns what was sent. A result over the
        frame or depth limit fails here, at once, with the reason (the messenger refuses it
        and dead-letters it `over-limit`) instead of being sent, refused and resent until the
        asker times out."""
        try:
            self._send_reply(request, task)
        except OverLimit as exc:
            emit(self.log, TaskOverLimit(task_id=task.id, plan_task=request.plan_task, error=str(exc)))
            skill = (task.metadata or {}).get("skill", "?")
            task = msgspec.structs.replace(
                task,
                # The skill ran to its end and only its answer was too big: whatever it did is
                # done, and an asker must not run it again as if it never ran. Nor does trying
                # again help: its key's result is kept, so a retry gets this same answer.
                metadata={**(task.metadata or {}), "maybeRan": True, "retryable": False},
                status=TaskStatus(
                    state="TASK_STATE_FAILED",
                    message=status_message(
                        f"the result of skill '{skill}' on '{self.ctx.name}' was {exc}"
                    ),
                ),
                artifacts=[],
            )
            self._send_reply(request, task)
        return task

    def _send_reply(self, request: Envelope, task: Task) -> None:
        try:
            self.messenger.send(
                self.messenger.envelope(
                    sender=self.ctx.name,
                    recipient=request.sender,
                    body=TaskReply(task=task),
                    trace_id=request.trace_id,
                    parent_span_id=request.span_id,
                    context_id=task.context_id,
                    task_id=task.id,
                    plan_task=request.plan_task,
                    attempt=request.attempt,
                    idempotency_key=request.idempotency_key,
                )
            )
        except OverLimit:
            raise
        except Exception as exc:
            emit(self.log, TaskReplyFailed(task_id=task.id, error=f"{type(exc).__name__}: {exc}"))


_task_encoder = msgspec.msgpack.Encoder()


def _as_answer_to(envelope: Envelope, task: Task) -> Task:
    """`task` (another request's result) as the answer to `envelope`: same result, its ids."""
    task_id = envelope.task_id or envelope.message_id
    return msgspec.structs.replace(task, id=task_id, context_id=envelope.context_id or task_id)


def host(actor: Actor, ctx: Context, messenger: Messenger, node: str) -> pykka.ActorRef[Any]:
    """Start `actor` on its own pykka thread, wait for its `on_start` (ActorStartError if it
    raises), and route its envelopes to it."""
    started: Future[None] = Future()
    ref = _Host.start(actor, ctx, messenger, node, started)
    try:
        started.result()
    except Exception as exc:
        raise ActorStartError(
            f"actor '{ctx.name}' ({type(actor).__module__}:{type(actor).__name__}) failed to start: "
            f"on_start raised {type(exc).__name__}: {exc}",
            actor=ctx.name,
        ) from exc
    host_ = ctx._host
    assert host_ is not None
    messenger.local[ctx.name] = host_.accept
    actor._publish_card()  # with the skills on_start declared
    return ref
