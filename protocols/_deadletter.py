"""A message that was not delivered, and why: one record per refusal, with a closed set of reasons."""

from __future__ import annotations

from typing import Literal

import msgspec

# Why a message was not delivered. A closed set: tools and tests match on these codes.
DeadLetterReason = Literal[
    "malformed",  # not a decodable envelope (bad msgpack, invalid UTF-8, wrong shape, many parts)
    "too-large",  # over the frame size limit
    "too-deep",  # over the nesting depth limit
    "invalid",  # decodes, but a field breaks its rule (negative attempt, NaN time, over-long id)
    "unauthenticated",  # from a peer that did not authenticate as one of the run's nodes
    "forged-sender",  # the authenticated peer does not host the envelope's sender
    "not-allowed",  # the sender may not ask this skill of this actor (the spec's allow rules)
    "unroutable",  # no route to the recipient
    "queue-full",  # a send queue at its high-water mark (the peer does not read): dropped, not blocked on
    "actor-dead",  # the recipient actor is not running
    "expired",  # past its deadline on arrival
    "undelivered",  # resent the maximum number of times, never acknowledged
    "over-limit",  # refused at the sender: it would break a frame or depth limit
    "unencodable",  # could not be encoded (a trace event with a value msgpack/JSON cannot hold)
    "stale",  # from an incarnation of a node that was declared down or replaced (fencing)
]

DEAD_LETTER_REASONS: frozenset[str] = frozenset(DeadLetterReason.__args__)  # type: ignore[attr-defined]


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One message that was not delivered: where, why, and what is known of it."""

    reason: DeadLetterReason
    detail: str
    node: str  # the process that refused it
    at: float  # unix seconds
    peer: str | None = None  # the member it came from ("supervisor" or a node name), if it authenticated
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    kind: str | None = None
    bytes: int = 0
