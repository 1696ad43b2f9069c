"""Envelope <-> bytes (msgpack via msgspec), with limits a receiver enforces before trusting a frame."""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import FrameTooDeep, FrameTooLarge, MalformedFrame
from ._model import DataPart, Envelope, Message, Task, TaskRequest


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Decode limits. Parts per message are bounded by the schema itself (MAX_PARTS)."""

    max_frame_bytes: int = 4 * 1024 * 1024
    max_depth: int = 32


DEFAULT_LIMITS = Limits()

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    """Encode an envelope for the wire."""
    return _encoder.encode(envelope)


def decode(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode and check one frame; raises a FrameError subclass naming what was wrong."""
    if len(frame) > limits.max_frame_bytes:
        raise FrameTooLarge(
            f"frame is {len(frame)} bytes; the limit is {limits.max_frame_bytes} "
            "(max_frame_bytes): send large content as a file part by uri"
        )
    try:
        envelope = _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise MalformedFrame(f"envelope does not match the schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"frame is not valid msgpack: {exc}") from None
    except RecursionError:
        raise FrameTooDeep("frame nests too deeply to decode") from None
    _check_depth(envelope, limits.max_depth)
    return envelope


def _payloads(envelope: Envelope) -> list[tuple[str, Any]]:
    """The free-form (dict-typed) values in an envelope, with their paths."""
    body = envelope.body
    message: Message | None = None
    found: list[tuple[str, Any]] = []
    if isinstance(body, TaskRequest):
        message = body.message
        found.append(("$.body.metadata", body.metadata))
        base = "$.body.message"
    elif isinstance(body, Message):
        message = body
        base = "$.body"
    elif isinstance(body, Task):
        found.append(("$.body.metadata", body.metadata))
        for i, artifact in enumerate(body.artifacts):
            for j, part in enumerate(artifact.parts):
                if isinstance(part, DataPart):
                    found.append((f"$.body.artifacts[{i}].parts[{j}].data", part.data))
        base = ""
    else:
        for field in body.__struct_fields__:
            value = getattr(body, field)
            if isinstance(value, dict):
                found.append((f"$.body.{field}", value))
        base = ""
    if message is not None:
        found.append((f"{base}.metadata", message.metadata))
        for j, part in enumerate(message.parts):
            if isinstance(part, DataPart):
                found.append((f"{base}.parts[{j}].data", part.data))
    return [(p, v) for p, v in found if v]


def _check_depth(envelope: Envelope, max_depth: int) -> None:
    for path, value in _payloads(envelope):
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > max_depth:
                raise FrameTooDeep(f"{path} nests deeper than {max_depth} levels (max_depth)")
            if isinstance(item, dict):
                stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


def to_json_dict(envelope: Envelope) -> dict[str, Any]:
    """The envelope as JSON-compatible builtins (camelCase), as traces store it."""
    return msgspec.to_builtins(envelope)  # type: ignore[no-any-return]
