"""Authentication: which connections a process admits (ZAP) and which envelopes it accepts from them.

Two checks, one after the other. At the socket, CurveZMQ with pyzmq's ZAP authenticator: a
client whose public key is not one of the run's never completes the handshake, and every frame
from an admitted one carries its member's name as the `User-Id` property. At the envelope,
`authenticate`: the member a frame came from must be the one that hosts the envelope's sender,
control operations come only from the supervisor, a heartbeat only from the node it names.
"""

from __future__ import annotations

from typing import Any

import zmq
from zmq.auth import Authenticator
from zmq.utils import z85

from agentrt.protocols import CONTROL_BODIES, DeadLetterReason, Envelope, Heartbeat

from ._keys import NODE_PREFIX, SUPERVISOR, Trust

MESSAGES_DOMAIN = "agentrt"  # ZAP domain of the sockets envelopes arrive on
TRACE_DOMAIN = "agentrt-trace"  # ZAP domain of the trace collector: the run's nodes only

Refusal = tuple[DeadLetterReason, str]


class Gate(Authenticator):
    """pyzmq's ZAP authenticator, admitting only the run's members' keys and naming each
    connection after its member. It runs on the I/O thread that owns the process's sockets
    (`handle` when its socket is readable), not on a thread of its own."""

    def __init__(self, context: zmq.Context[Any], trust: Trust) -> None:
        super().__init__(context)
        self._members = {public.encode("ascii"): name for name, public in trust.members.items()}
        self.configure_curve_callback(MESSAGES_DOMAIN, self)
        self.configure_curve_callback(TRACE_DOMAIN, self)

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """pyzmq's credentials-provider hook: is this client key one of the run's members?"""
        member = self._members.get(z85_key)
        return member is not None and (domain != TRACE_DOMAIN or member != SUPERVISOR)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._members[z85.encode(client_public_key)]

    def handle(self) -> None:
        """Answer one ZAP request. pyzmq's handler is a coroutine so that a credentials
        provider may await; ours does not, so it runs to its end in one step."""
        request = self.zap_socket.recv_multipart(zmq.NOBLOCK)
        step = self.handle_zap_message(request)
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError("the ZAP handler waited on something; it must answer at once")


def _named_node(body: Any) -> str | None:
    """The node a heartbeat or a node's report to the supervisor (register, ready, stats,
    stopped, start-failed) speaks for."""
    if isinstance(body, (Heartbeat, *CONTROL_BODIES)):
        node = getattr(body, "node", None)
        return node if isinstance(node, str) else None
    return None


def authenticate(peer: str | None, envelope: Envelope, trust: Trust) -> Refusal | None:
    """Why `envelope`, which arrived from the member `peer` (its frame's User-Id), must be
    refused by the member `trust.me`; None if it may go on."""
    sender = envelope.sender
    if peer is None or peer not in trust.members:
        return (
            "unauthenticated",
            f"an envelope from '{sender}' arrived on a connection that did not authenticate as a "
            "member of the run (no CurveZMQ User-Id); only the run's nodes and supervisor hold keys",
        )
    host = trust.host_of(sender)
    if host is None:
        return (
            "forged-sender",
            f"member '{peer}' sent an envelope as '{sender}', which is neither a member nor an "
            "actor of the run",
        )
    if host != peer:
        return (
            "forged-sender",
            f"member '{peer}' sent an envelope as '{sender}', which only '{host}' may send as",
        )
    body = envelope.body
    kind = envelope.kind
    named = _named_node(body)
    if isinstance(body, Heartbeat) and named != peer:
        return "forged-sender", f"member '{peer}' sent a heartbeat for node '{named}'; a node beats only for itself"
    if not isinstance(body, CONTROL_BODIES):
        return None
    if trust.me != SUPERVISOR:
        if peer != SUPERVISOR:
            return (
                "not-allowed",
                f"member '{peer}' sent control '{kind}' as '{sender}'; control operations reach a "
                "node only from the supervisor",
            )
    elif named is not None and (sender != f"{NODE_PREFIX}{peer}" or named != peer):
        return (
            "forged-sender",
            f"member '{peer}' sent '{kind}' as '{sender}' for node '{named}'; a node reports only "
            "for itself, from its own address",
        )
    return None
