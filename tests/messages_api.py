"""A local HTTP server that speaks the Anthropic Messages API, for tests and benchmarks.

The real `anthropic` client talks to it over a real socket (`base_url`). It answers
`POST /v1/messages` in the API's shape: text and `tool_use` content blocks, `usage`,
`stop_reason`, the `anthropic-ratelimit-*` headers, and errors as the API sends them
(`{"type": "error", "error": {"type", "message"}}`): 401 for a wrong key, 400 for a bad
request, 429 with `retry-after` past its requests-per-minute bucket, and any scripted fault
(529 overloaded, 500, a slow reply). Every request is logged with its arrival time.

    with MessagesAPI(rpm=60) as api:
        os.environ["ANTHROPIC_BASE_URL"] = api.url
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str]]


@dataclass
class Logged:
    at: float  # time.monotonic() on arrival
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Fault:
    """What the next request gets instead of an answer: an error status, or a delay."""

    status: int = 0  # 529, 500, 400, 429 ...
    retry_after_s: float | None = None
    delay_s: float = 0.0
    message: str = "scripted fault"


def sample(schema: dict[str, Any]) -> Any:
    """A plausible instance of a JSON schema (what a tool call's input looks like)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample(v) for k, v in props.items() if k in schema.get("required", props)}
    if kind == "number":
        return min(max(0.85, schema.get("minimum", 0.85)), schema.get("maximum", 0.85))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return "looks good"


def default_responder(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A forced tool gets a call with a plausible input; anything else, a short text."""
    choice = body.get("tool_choice") or {}
    tools = {t["name"]: t for t in body.get("tools", [])}
    if choice.get("type") == "tool" and choice.get("name") in tools:
        tool = tools[choice["name"]]
        return [
            {"type": "tool_use", "id": f"toolu_{time.monotonic_ns()}", "name": tool["name"], "input": sample(tool["input_schema"])}
        ], "tool_use"
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
    return [{"type": "text", "text": f"(local model) A considered answer about: {text[-200:]}"}], "end_turn"


@dataclass
class MessagesAPI:
    api_key: str = "sk-ant-test-0000"
    rpm: float | None = None  # requests per minute, as a token bucket
    minute_s: float = 60.0  # how long "a minute" is (scale time down for fast tests)
    capacity: float | None = None  # the bucket's size in requests (default: rpm, as the API)
    responder: Responder = default_responder
    log: list[Logged] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.capacity = float(self.capacity or self.rpm or 0)
        self._tokens = self.capacity
        self._refilled = time.monotonic()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, payload, headers = api.handle(self.path, dict(self.headers), raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{time.monotonic_ns()}")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> MessagesAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- one request -----------------------------------------------------------------

    def _error(self, status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
        return status, {"type": "error", "error": {"type": kind, "message": message}}

    def _take(self) -> tuple[bool, float, float]:
        """Draw one request from the bucket: (allowed, remaining, seconds to the next)."""
        assert self.rpm
        rate = self.rpm / self.minute_s
        now = time.monotonic()
        self._tokens = min(float(self.capacity or 0), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True, self._tokens, max(0.0, (1 - self._tokens) / rate)
        return False, 0.0, (1 - self._tokens) / rate

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        at = time.monotonic()
        lower = {k.lower(): v for k, v in headers.items()}
        out_headers: dict[str, str] = {}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        status, payload = self._answer(path, lower, body, out_headers)
        with self._lock:
            self.log.append(Logged(at, status, body, lower, payload.get("usage", {})))
        return status, payload, out_headers

    def _answer(
        self, path: str, headers: dict[str, str], body: dict[str, Any], out: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if path.split("?")[0] != "/v1/messages":
            return self._error(404, "not_found_error", f"no route {path}")
        # The SDK sends the key as x-api-key or as a bearer token, by version.
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (headers.get("x-api-key"), bearer):
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(name), kind):
                return self._error(400, "invalid_request_error", f"{name}: field required ({kind.__name__})")
        if not body["messages"]:
            return self._error(400, "invalid_request_error", "messages: at least one message is required")
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            if self.rpm:
                allowed, remaining, next_s = self._take()
                reset = datetime.now(UTC) + timedelta(seconds=next_s)
                out["anthropic-ratelimit-requests-limit"] = str(int(self.rpm))
                out["anthropic-ratelimit-requests-remaining"] = str(int(remaining))
                out["anthropic-ratelimit-requests-reset"] = reset.isoformat().replace("+00:00", "Z")
                if not allowed:
                    out["retry-after"] = f"{next_s:.3f}"
                    return self._error(429, "rate_limit_error", f"over {self.rpm:g} requests per minute")
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.status:
                if fault.retry_after_s is not None:
                    out["retry-after"] = f"{fault.retry_after_s:g}"
                kind = {529: "overloaded_error", 429: "rate_limit_error", 400: "invalid_request_error"}.get(
                    fault.status, "api_error"
                )
                return self._error(fault.status, kind, fault.message)
        content, stop = self.responder(body)
        text = "".join(b.get("text", "") for b in content) + json.dumps([b.get("input") for b in content])
        prompt = json.dumps(body["messages"]) + str(body.get("system", ""))
        return 200, {
            "id": f"msg_{time.monotonic_ns()}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            # Like the API, never more output than max_tokens allows.
            "usage": {
                "input_tokens": max(1, len(prompt) // 4),
                "output_tokens": max(1, min(len(text) // 4, int(body.get("max_tokens") or 1 << 30))),
            },
        }
