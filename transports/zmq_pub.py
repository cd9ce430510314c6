"""VideoPublisher: ZMQ PUB of H.264 packets and JSON events.

Multipart messages ``[topic, header_json, payload]``:
  ``video.h264``: header = EncodedPacket.header(), payload = Annex-B access unit;
  ``events``:     header = the JSON event, payload = b"".
Never blocks: NOBLOCK sends, SNDHWM bounds memory, dropped on EAGAIN.
Not thread-safe (a ZMQ socket): drive it from one thread only.
"""
from __future__ import annotations

import json

import zmq

from .packet import EncodedPacket

TOPIC_VIDEO = b"video.h264"
TOPIC_EVENTS = b"events"


class VideoPublisher:
    def __init__(self, ctx: zmq.Context, addr: str = "tcp://127.0.0.1:5556", sndhwm: int = 1000):
        self.addr = addr
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.bind(addr)
        except zmq.ZMQError as e:
            self.sock.close(linger=0)  # an open socket would block the context's termination
            raise OSError(f"cannot bind publish socket {addr}: {e}") from e
        self.sent = 0
        self.dropped = 0

    @property
    def endpoint(self) -> str:
        """The bound endpoint (resolves a ``tcp://127.0.0.1:*`` wildcard port)."""
        return self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _send(self, parts) -> bool:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def send_packet(self, pkt: EncodedPacket) -> bool:
        header = json.dumps(pkt.header(), separators=(",", ":")).encode()
        return self._send([TOPIC_VIDEO, header, pkt.data])

    def send_event(self, event: dict) -> bool:
        header = json.dumps(event, separators=(",", ":")).encode()
        return self._send([TOPIC_EVENTS, header, b""])

    def close(self) -> None:
        self.sock.close(linger=0)
