"""Envelope <-> bytes (msgpack via msgspec), with limits a receiver enforces before trusting a frame.

`decode` raises only FrameError subclasses, whatever the bytes: `malformed` (not msgpack,
invalid UTF-8, the wrong shape, too many parts), `invalid` (the right shape, but a value breaks
its rule: an over-long id, attempt < 1, a time that is NaN or infinite), `too-large`,
`too-deep` (any free-form value, wherever it sits in the envelope). A sender checks the same
limits before a frame leaves (`check_limits`), so nothing is sent that would be refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from ._errors import FrameTooDeep, FrameTooLarge, InvalidFrame, MalformedFrame
from ._model import Envelope

# What a spec may set them to. A frame limit under 64 KiB would refuse the run's own messages
# (a directory of cards with their skills' schemas); over 256 MiB, one member could make every
# receiver hold that much per frame (ZeroMQ reads up to twice it). A depth under 16 would refuse
# the runtime's own values: a card's skill schemas sit 3 levels down in its extension's params,
# and the built-in roles' cards nest 8 to 11 levels (the coordinator's); over 256, the walk and
# the decoder would run into Python's recursion limit before the rule could say why.
MIN_FRAME_BYTES, MAX_FRAME_BYTES = 64 * 1024, 256 * 1024 * 1024
MIN_DEPTH, MAX_DEPTH = 16, 256


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Decode limits. Parts per message and id lengths are bounded by the schema itself.
    The bounds on each are checked where a spec is read (`msgspec.convert`), not on
    construction: tests build tighter ones."""

    max_frame_bytes: Annotated[int, msgspec.Meta(ge=MIN_FRAME_BYTES, le=MAX_FRAME_BYTES)] = 4 * 1024 * 1024
    max_depth: Annotated[int, msgspec.Meta(ge=MIN_DEPTH, le=MAX_DEPTH)] = 32


DEFAULT_LIMITS = Limits()

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)

# A value rule broken by a value of the right type: msgspec says "Expected `str` of length
# <= 256", "Expected `int` >= 1", "Expected `float` <= 1e11". Too many items in an array is
# a shape error (malformed), as the schema's part bound always was.
_VALUE_RULE = re.compile(r"^Expected `(str|int|float)`( of length)? [<>]=? ")


def encode(envelope: Envelope) -> bytes:
    """Encode an envelope for the wire."""
    return _encoder.encode(envelope)


def decode(frame: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode and check one frame; raises a FrameError subclass naming what was wrong."""
    if len(frame) > limits.max_frame_bytes:
        raise FrameTooLarge(
            f"frame is {len(frame)} bytes; the limit is {limits.max_frame_bytes} "
            "(max_frame_bytes): send large content as a file part by uri"
        )
    try:
        envelope = _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        if _VALUE_RULE.match(str(exc)):
            raise InvalidFrame(f"envelope field breaks its rule: {exc}") from None
        raise MalformedFrame(f"envelope does not match the schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"frame is not valid msgpack: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedFrame(
            f"frame holds a string that is not valid UTF-8: {exc.reason}"
        ) from None
    except RecursionError:
        raise FrameTooDeep("frame nests too deeply to decode") from None
    except Exception as exc:  # the contract: nothing but a FrameError leaves decode
        raise MalformedFrame(f"frame could not be decoded: {type(exc).__name__}: {exc}") from None
    if not shallow(frame, limits.max_depth):
        check_depth(envelope, limits.max_depth)
    return envelope


# Every byte that can open a msgpack map or array: fixmap, fixarray, array 16/32, map 16/32.
_NOT_A_CONTAINER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))
_SCAN_MAX = 16 * 1024  # past this, counting bytes costs more than walking the decoded values


def shallow(frame: bytes | memoryview, max_depth: int) -> bool:
    """True if no free-form value in the envelope `frame` holds can nest deeper than
    `max_depth`, told by counting bytes (about 0.5 us for a typical envelope, against 2-6 us
    for the walk over its values): each level of a value opens with a map or array header of
    its own, one byte each, and the envelope's own map is one more, so a frame with at most
    `max_depth + 1` bytes that could be such a header (strings and numbers may hold some too:
    it is a bound) has no value too deep. False: not known, the values must be walked."""
    if len(frame) > _SCAN_MAX:
        return False
    return len(bytes(frame).translate(None, _NOT_A_CONTAINER)) <= max_depth + 1


def check_limits(envelope: Envelope, frame: bytes, limits: Limits) -> None:
    """What a receiver would refuse, checked by the sender on the very bytes it would send:
    FrameTooLarge, then whatever `decode` raises there (InvalidFrame for a field over its
    bound, anywhere in the envelope; MalformedFrame; FrameTooDeep). Encoding checks no bounds,
    so only the receiver's own decode can say that nothing sent will be refused."""
    if len(frame) > limits.max_frame_bytes:
        raise FrameTooLarge(
            f"{envelope.kind} to '{envelope.recipient}' is {len(frame)} bytes encoded; the limit "
            f"is {limits.max_frame_bytes} (max_frame_bytes): send large content as a file part by uri"
        )
    decode(frame, limits)


def check_depth(envelope: Envelope, max_depth: int) -> None:
    """Every free-form value (dicts and lists that are not Structs), wherever it sits in the
    envelope, nests at most `max_depth` levels; FrameTooDeep names the first that does not.
    Structs are walked without counting: their nesting is fixed by the schema."""
    where = _too_deep(envelope, max_depth)
    if where is not None:
        raise FrameTooDeep(f"${where} nests deeper than {max_depth} levels (max_depth)")


def _too_deep(obj: msgspec.Struct, max_depth: int) -> str | None:
    """The path (`.body.message.parts[0].data`) of the first free-form value under `obj` that
    nests deeper than `max_depth`, or None. The path is built only for that one."""
    for name in _nesting_fields(type(obj)):
        value = getattr(obj, name)
        if not value:  # None, or an empty list or dict: nothing to walk (a Struct is truthy)
            continue
        if isinstance(value, msgspec.Struct):
            where = _too_deep(value, max_depth)
            if where is not None:
                return f".{_camel(name)}{where}"
        elif isinstance(value, list) and isinstance(value[0], msgspec.Struct):
            for i, item in enumerate(value):
                where = _too_deep(item, max_depth)
                if where is not None:
                    return f".{_camel(name)}[{i}]{where}"
        elif isinstance(value, dict | list | tuple) and _deeper_than(value, max_depth):
            return f".{_camel(name)}"
    return None


def _deeper_than(value: Any, levels: int) -> bool:
    """True if `value` (a dict, list or tuple: one level) nests more than `levels` levels.
    A dict's keys count as its values do: msgpack lets a key be an array (msgspec reads it as
    a tuple), nested as deep as any value. Recursion stops at `levels`, so no input can
    exhaust the stack."""
    if levels <= 0:
        return True
    if isinstance(value, dict):
        for k in value:  # loops: no generator per level
            if type(k) is tuple and _deeper_than(k, levels - 1):
                return True
    for v in value.values() if isinstance(value, dict) else value:
        if isinstance(v, dict | list | tuple) and _deeper_than(v, levels - 1):
            return True
    return False


_NESTING: dict[type, tuple[str, ...]] = {}
_FLAT = (
    msgspec.inspect.StrType,
    msgspec.inspect.IntType,
    msgspec.inspect.FloatType,
    msgspec.inspect.BoolType,
    msgspec.inspect.BytesType,
    msgspec.inspect.NoneType,
    msgspec.inspect.LiteralType,
)


def _nesting_fields(cls: type) -> tuple[str, ...]:
    """The fields of Struct type `cls` that can hold a Struct, a dict or a list (the rest are
    scalars: nothing to walk), worked out once per type."""
    found = _NESTING.get(cls)
    if found is None:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)

        def nests(t: msgspec.inspect.Type) -> bool:
            if isinstance(t, msgspec.inspect.UnionType):
                return any(nests(x) for x in t.types)
            return not isinstance(t, _FLAT)

        found = _NESTING[cls] = tuple(f.name for f in info.fields if nests(f.type))
    return found


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def to_json_dict(envelope: Envelope) -> dict[str, Any]:
    """The envelope as JSON-compatible builtins (camelCase), as traces store it."""
    return msgspec.to_builtins(envelope)  # type: ignore[no-any-return]
