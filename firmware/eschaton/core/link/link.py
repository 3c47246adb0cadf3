"""The link state machine: Noise_XK handshake, version negotiation, encrypted message transport.

Rules / theory of operation:
- A ``Link`` is sans-IO. Feed it whole frames (``receive_frame``) and the time (``now``); collect
  frames to send (``data_to_send``) and events. Ask ``next_deadline()`` when to call
  ``handle_timer(now)``. Randomness (the ephemeral key) and keys are constructor inputs.
- Handshake: ``Noise_XK_25519_ChaChaPoly_BLAKE2s``. The initiator must know the responder's
  node id (its X25519 static key is derived from it), so the responder is authenticated by the
  first message it can decrypt; the initiator's static key travels encrypted in message 3 (its
  identity is hidden from passive observers), and every transport key is forward-secret.
    1. I -> R  ``e, es``      payload ``{v: [versions I supports]}``
    2. R -> I  ``e, ee``      payload ``{v: chosen}`` (highest common) or ``{err, v: [R's]}``
    3. I -> R  ``s, se``      payload ``{id: I's node id, v: chosen}``
  The responder checks that the claimed id is canonical and converts to the static key Noise
  authenticated, that it is the expected peer (if one is set) and that the ``authorize``
  policy accepts it, all before it sends anything under the new keys.
- After the handshake both sides send ``init`` (feature bits of the services they run, name);
  the link is OPEN once the peer's ``init`` arrives. Then any message from the table may flow,
  except that ``send`` refuses (``PeerLacksService``) a message of a service whose feature bit
  the peer did not set: it would ignore it or close the link.
- An unknown message id (a newer peer's) is ignored when odd (``MessageIgnored`` event) and
  closes the link when even ("it's OK to be odd", ``core/wire/messages.py``).
- Any decrypt failure (tampered, replayed, reordered or lost frame: Noise nonces are implicit
  counters, so a replayed frame can never authenticate) closes the link. Any malformed message
  closes it after an ``error`` message. Nothing a peer sends raises out of ``receive_frame``:
  failures become a ``LinkClosed`` event carrying a typed error.
- Keepalive: when nothing arrived for ``ping_interval`` we send ``ping``; no frame within
  ``pong_timeout`` after it closes the link with ``LinkTimeout``.
- Its config, states, transition table and events are in ``core/link/events.py`` (importable
  from here too).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoiseValueError,
)

from eschaton.core.link.errors import (
    DecryptError,
    HandshakeError,
    LinkError,
    LinkStateError,
    LinkTimeout,
    NotAuthorised,
    PeerLacksService,
    PeerMismatch,
    PeerSentError,
    ProtocolViolation,
    VersionMismatch,
)
from eschaton.core.link.events import (
    PROTOCOL_VERSIONS,
    TRANSITIONS,
    Event,
    HandshakeComplete,
    LinkClosed,
    LinkConfig,
    LinkOpen,
    LinkState,
    MessageIgnored,
    MessageReceived,
    PongReceived,
    Role,
    WarningReceived,
)
from eschaton.core.link.identity import BadNodeId, NodeId, NodeKeys
from eschaton.core.wire import bencode
from eschaton.core.wire.codec import Message, decode_message, encode_message, make
from eschaton.core.wire.errors import UnknownMessage, WireError
from eschaton.core.wire.features import decode_features, encode_features
from eschaton.core.wire.messages import SERVICE, SERVICE_OF, ignorable
from eschaton.errors import EschatonError

NOISE_PROTOCOL = b"Noise_XK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"eschaton-link/1"

# Everything noiseprotocol (and cryptography under it) raises for bad peer input.
_NOISE_ERRORS = (NoiseInvalidMessage, NoiseValueError, NoiseHandshakeError, NoiseMaxNonceError,
                 InvalidTag, ValueError)
_PAYLOAD_LIMITS = bencode.Limits(max_size=1024, max_depth=2, max_items=40)
_MAX_VERSIONS = 16
HANDSHAKE_MAX_FRAME = 2048
"""Largest handshake message: a payload of at most 1024 bytes plus Noise's keys and tags (at most
96 bytes). Transports refuse longer frames until the handshake is done, so a stranger cannot
make the node buffer a 64 KiB frame per connection."""
TRANSPORT_MAX_FRAME = 65535

DEFAULT_CONFIG = LinkConfig()


def choose_version(ours: Sequence[int], theirs: Sequence[int]) -> int | None:
    """Highest version both sides support, or None."""
    common = set(ours) & set(theirs)
    return max(common) if common else None


def _check_versions(versions: Sequence[int]) -> tuple[int, ...]:
    if not versions or len(versions) > _MAX_VERSIONS:
        raise LinkStateError(f"need 1..{_MAX_VERSIONS} protocol versions")
    for v in versions:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 0x10000:
            raise LinkStateError(f"bad protocol version {v!r}")
    return tuple(versions)


@dataclass(slots=True)
class _Ping:
    nonce: int
    sent_at: float


@dataclass(slots=True)
class _Out:
    frames: list[bytes] = field(default_factory=list)


class Link:
    """One end of an authenticated, encrypted link. See the module docstring."""

    def __init__(
        self,
        keys: NodeKeys,
        role: Role,
        *,
        now: float,
        ephemeral: bytes,
        remote: NodeId | None = None,
        config: LinkConfig = DEFAULT_CONFIG,
        authorize: Callable[[NodeId], bool] | None = None,
    ) -> None:
        if role is Role.INITIATOR and remote is None:
            raise LinkStateError("an initiator must know the responder's node id")
        if len(ephemeral) != 32:
            raise LinkStateError("ephemeral key must be 32 random bytes")
        self.keys = keys
        self.role = role
        self.config = config
        self.versions = _check_versions(config.versions)
        self.expected_remote = remote
        self._authorize = authorize
        self.remote: NodeId | None = None
        self.version: int | None = None
        self.peer_features: frozenset[int] = frozenset()
        self.peer_name = ""
        self.state = LinkState.IDLE
        self.close_event: LinkClosed | None = None
        self._out = _Out()
        self._started = now
        self._last_rx = now
        self._ping: _Ping | None = None
        self._ping_counter = 0
        self._noise: Any = NoiseConnection.from_name(NOISE_PROTOCOL)
        self._noise.set_prologue(PROLOGUE)
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, keys.x25519_private())
        if remote is not None:
            self._noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote.x25519())
        # Ephemeral randomness is an input (tests are deterministic); noiseprotocol warns that a
        # preset ephemeral is "for testing", which is about callers reusing it, not our case:
        # every Link gets fresh bytes from the adapter's CSPRNG.
        self._noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
        if role is Role.INITIATOR:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._noise.start_handshake()
        # noiseprotocol deletes its handshake state when the handshake completes; keep a reference
        # so the responder can read the initiator's authenticated static key after message 3.
        self._hs: Any = self._noise.noise_protocol.handshake_state

    # ---- public API --------------------------------------------------------------------------
    def start(self) -> None:
        """Begin the handshake (the initiator queues message 1)."""
        if self.state is not LinkState.IDLE:
            raise LinkStateError(f"start() in state {self.state.name}")
        self._set_state(LinkState.HANDSHAKE)
        if self.role is Role.INITIATOR:
            payload = bencode.encode({"v": list(self.versions)})
            self._out.frames.append(bytes(self._noise.write_message(payload)))

    def data_to_send(self) -> list[bytes]:
        """Frames to write to the transport, in order (drains the queue)."""
        frames, self._out.frames = self._out.frames, []
        return frames

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out.frames)

    @property
    def is_open(self) -> bool:
        return self.state is LinkState.OPEN

    @property
    def max_incoming_frame(self) -> int:
        """Largest frame worth reading now (small until the handshake is done)."""
        if self.state in (LinkState.IDLE, LinkState.HANDSHAKE):
            return HANDSHAKE_MAX_FRAME
        return TRANSPORT_MAX_FRAME

    @property
    def is_closed(self) -> bool:
        return self.state is LinkState.CLOSED

    def send(self, message: Message) -> None:
        """Encrypt and queue an application message (link must be OPEN, and the peer must run
        the message's service: ``PeerLacksService`` otherwise)."""
        if self.state is not LinkState.OPEN:
            raise LinkStateError(f"send({message.name}) while link is {self.state.name}")
        service = SERVICE_OF[message.name]
        if service.feature is not None and service.feature not in self.peer_features:
            who = self.remote.short() if self.remote is not None else "the peer"
            raise PeerLacksService(f"peer {who} does not run the {service.name} service "
                                   f"(no feature bit {service.feature} in its init): "
                                   f"{message.name} not sent")
        self._send(message)

    def peer_runs(self, service: str) -> bool:
        """Whether the peer's ``init`` announced ``service`` (link control: always)."""
        spec = SERVICE.get(service)
        if spec is None:
            raise LinkStateError(f"no service named {service!r} in the table")
        return spec.feature is None or spec.feature in self.peer_features

    def ping(self, now: float) -> int:
        """Send a ping now; returns its nonce. A ``PongReceived`` event follows."""
        if self.state is not LinkState.OPEN:
            raise LinkStateError(f"ping while link is {self.state.name}")
        return self._send_ping(now)

    def close(self, reason: str = "closed locally", *, error: EschatonError | None = None,
              send_error: bool = False) -> list[Event]:
        """Close the link. With ``send_error`` an ``error`` message is queued first (if keyed)."""
        if self.state is LinkState.CLOSED:
            return []
        if send_error and self._noise.handshake_finished:
            code = getattr(error, "code", 1) if error is not None else 1
            self._send(make("error", code=code, message=reason[:500]))
        return [self._close(reason, error, by_peer=False)]

    def connection_lost(self, now: float) -> list[Event]:
        """The transport went away (EOF, reset, serial unplugged)."""
        if self.state is LinkState.CLOSED:
            return []
        if self.state in (LinkState.IDLE, LinkState.HANDSHAKE):
            err: EschatonError = HandshakeError(
                "connection closed during the handshake (wrong node key, refused, or network)")
        else:
            err = LinkError("connection lost")
        return [self._close(str(err), err, by_peer=True)]

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or None if never."""
        if self.state is LinkState.CLOSED:
            return None
        if self.state is not LinkState.OPEN:
            return self._started + self.config.handshake_timeout
        if self._ping is not None and self._last_rx <= self._ping.sent_at:
            return self._ping.sent_at + self.config.pong_timeout
        return self._last_rx + self.config.ping_interval

    def handle_timer(self, now: float) -> list[Event]:
        """Enforce the handshake timeout and the keepalive."""
        if self.state is LinkState.CLOSED:
            return []
        if self.state is not LinkState.OPEN:
            if now >= self._started + self.config.handshake_timeout:
                return [self._close("handshake timed out", LinkTimeout("handshake timed out"),
                                    by_peer=False)]
            return []
        if self._ping is not None and self._last_rx <= self._ping.sent_at:
            # Silence since our ping: the peer is dead once pong_timeout passes.
            if now >= self._ping.sent_at + self.config.pong_timeout:
                return [self._close("peer stopped answering", LinkTimeout("no pong"), by_peer=False)]
        elif now >= self._last_rx + self.config.ping_interval:
            self._send_ping(now)
        return []

    def receive_frame(self, frame: bytes, now: float) -> list[Event]:
        """Process one frame from the peer; never raises for anything the peer sends."""
        if self.state is LinkState.CLOSED:
            return []
        if self.state is LinkState.IDLE:
            raise LinkStateError("receive_frame before start()")
        self._last_rx = now
        try:
            if self.state is LinkState.HANDSHAKE:
                return self._handshake_frame(frame)
            return self._transport_frame(frame, now)
        except LinkError as exc:
            # A violation after keys exist gets an error message so the peer can log why.
            keyed = self._noise.handshake_finished and not isinstance(exc, DecryptError | PeerSentError)
            return self.close(str(exc), error=exc, send_error=keyed)

    # ---- handshake ---------------------------------------------------------------------------
    def _read_handshake(self, frame: bytes) -> dict[bytes, bencode.BValue]:
        try:
            payload = bytes(self._noise.read_message(frame))
        except _NOISE_ERRORS as exc:
            raise HandshakeError(
                f"handshake message rejected ({type(exc).__name__}): wrong node key or corrupted"
            ) from None
        try:
            value = bencode.decode(payload, _PAYLOAD_LIMITS)
        except WireError as exc:
            raise HandshakeError(f"bad handshake payload: {exc}") from None
        if not isinstance(value, dict):
            raise HandshakeError("handshake payload is not a dict")
        return value

    def _parse_version_list(self, raw: bencode.BValue | None) -> tuple[int, ...]:
        if not isinstance(raw, list) or not 0 < len(raw) <= _MAX_VERSIONS:
            raise HandshakeError("handshake payload: bad version list")
        out = []
        for v in raw:
            if not isinstance(v, int) or not 0 < v < 0x10000:
                raise HandshakeError("handshake payload: bad version")
            out.append(v)
        return tuple(out)

    def _handshake_frame(self, frame: bytes) -> list[Event]:
        payload = self._read_handshake(frame)
        if self.role is Role.RESPONDER and self.version is None:
            # Message 1: the initiator's versions.
            theirs = self._parse_version_list(payload.get(b"v"))
            chosen = choose_version(self.versions, theirs)
            if chosen is None:
                refusal: dict[str, bencode.EValue] = {"err": "no common protocol version", "v": list(self.versions)}
                self._out.frames.append(bytes(self._noise.write_message(bencode.encode(refusal))))
                raise VersionMismatch(
                    f"no common protocol version: ours {list(self.versions)}, "
                    f"theirs {list(theirs)}")
            self.version = chosen
            self._out.frames.append(bytes(self._noise.write_message(bencode.encode({"v": chosen}))))
            return []
        if self.role is Role.INITIATOR:
            # Message 2: the responder's choice (or refusal).
            if b"err" in payload:
                theirs = self._parse_version_list(payload.get(b"v"))
                raise VersionMismatch(
                    f"peer refused: no common protocol version: ours {list(self.versions)}, "
                    f"theirs {list(theirs)}")
            chosen_raw = payload.get(b"v")
            if not isinstance(chosen_raw, int) or chosen_raw not in self.versions:
                raise VersionMismatch(f"peer chose version {chosen_raw!r}, not one of ours")
            self.version = chosen_raw
            assert self.expected_remote is not None
            msg3: dict[str, bencode.EValue] = {"id": self.keys.node_id.raw, "v": chosen_raw}
            self._out.frames.append(bytes(self._noise.write_message(bencode.encode(msg3))))
            self.remote = self.expected_remote
            return self._handshake_done()
        # Responder, message 3: who is the initiator?
        raw_id = payload.get(b"id")
        if not isinstance(raw_id, bytes) or payload.get(b"v") != self.version:
            raise HandshakeError("handshake message 3: bad id or version")
        try:
            claimed = NodeId(raw_id)
        except BadNodeId as exc:
            raise PeerMismatch(f"peer claims an invalid node id: {exc}") from None
        authenticated = bytes(self._hs.rs.public_bytes)
        if claimed.x25519() != authenticated:
            raise PeerMismatch(f"peer claims node id {claimed.short()} but holds another key")
        if self.expected_remote is not None and claimed != self.expected_remote:
            raise PeerMismatch(
                f"expected node {self.expected_remote.short()}, peer is {claimed.short()}")
        if self._authorize is not None and not self._authorize(claimed):
            # Checked before our init goes out, so a refused peer never sees an open link.
            raise NotAuthorised(f"node {claimed.short()} is not authorised to link")
        self.remote = claimed
        return self._handshake_done()

    def _handshake_done(self) -> list[Event]:
        if not self._noise.handshake_finished:
            raise HandshakeError("handshake did not complete after the final message")
        assert self.remote is not None and self.version is not None
        self._hs = None  # drop the ephemeral secrets
        self._set_state(LinkState.AWAIT_INIT)
        fields: dict[str, Any] = {"features": encode_features(self.config.features)}
        if self.config.name:
            fields["name"] = self.config.name
        self._send(make("init", **fields))
        return [HandshakeComplete(self.remote, self.version)]

    # ---- transport ---------------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        self._out.frames.append(bytes(self._noise.encrypt(encode_message(message))))

    def _send_ping(self, now: float) -> int:
        self._ping_counter += 1
        self._ping = _Ping(self._ping_counter, now)
        self._send(make("ping", nonce=self._ping_counter))
        return self._ping_counter

    def _transport_frame(self, frame: bytes, now: float) -> list[Event]:
        try:
            plaintext = bytes(self._noise.decrypt(frame))
        except _NOISE_ERRORS:
            raise DecryptError(
                "frame failed authentication (tampered, replayed, reordered or lost)") from None
        try:
            msg = decode_message(plaintext)
        except UnknownMessage as exc:
            if ignorable(exc.type_id):
                return [MessageIgnored(exc.type_id)]
            raise ProtocolViolation(f"peer sent message id {exc.type_id}, which this node does not "
                                    "know; it is even, so it may not be ignored") from None
        except WireError as exc:
            raise ProtocolViolation(f"malformed message: {exc}") from None
        if msg.name == "error":
            raise PeerSentError(f"peer error {msg.get_int('code')}: {msg.get_text('message')}")
        if self.state is LinkState.AWAIT_INIT:
            if msg.name != "init":
                raise ProtocolViolation(f"expected init, got {msg.name}")
            self.peer_features = decode_features(msg.get_bytes("features"))
            name = msg.get("name", "")
            self.peer_name = name if isinstance(name, str) else ""
            self._set_state(LinkState.OPEN)
            assert self.remote is not None and self.version is not None
            return [LinkOpen(self.remote, self.version, self.peer_features, self.peer_name)]
        if msg.name == "init":
            raise ProtocolViolation("init sent twice")
        if msg.name == "ping":
            self._send(make("pong", nonce=msg.get_int("nonce")))
            return []
        if msg.name == "pong":
            ping, self._ping = self._ping, None
            if ping is not None and ping.nonce == msg.get_int("nonce"):
                return [PongReceived(ping.nonce, now - ping.sent_at)]
            return []
        if msg.name == "warning":
            return [WarningReceived(msg.get_int("code"), msg.get_text("message"))]
        return [MessageReceived(msg)]

    # ---- state -------------------------------------------------------------------------------
    def _set_state(self, new: LinkState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LinkStateError(f"illegal link transition {self.state.name} -> {new.name}")
        self.state = new

    def _close(self, reason: str, error: EschatonError | None, *, by_peer: bool) -> LinkClosed:
        self._set_state(LinkState.CLOSED)
        self.close_event = LinkClosed(reason, error, by_peer)
        return self.close_event


# The config, states and events live in ``events``; users of the link import them from here too.
__all__ = ["DEFAULT_CONFIG", "PROTOCOL_VERSIONS", "TRANSITIONS", "Event", "HandshakeComplete", "Link",
           "LinkClosed", "LinkConfig", "LinkOpen", "LinkState", "MessageIgnored", "MessageReceived",
           "PongReceived", "Role", "WarningReceived", "choose_version"]
