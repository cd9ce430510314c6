"""streamer.control: a real ROUTER server (own thread and event loop) against real REQ/DEALER sockets."""
import asyncio
import json
import math
import socket
import threading

import pytest
import zmq
import zmq.asyncio

from streamer.control import MAX_PENDING_PER_PEER, ControlServer
from streamer.protocol import SetPrompt, Status

POLL_MS = 10_000  # only a guard against hangs: a missing reply fails the test instead of blocking it


class ServerThread:
    """ControlServer on an ephemeral port, served by an asyncio loop in a background thread."""

    def __init__(self):
        self.seen = []
        self.address = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.serve_returned = False

    async def handler(self, req, client=""):
        self.seen.append(req)
        if isinstance(req, Status):
            return {"ok": True, "block": len(self.seen), "fps": 8.0}
        if isinstance(req, SetPrompt):
            if req.prompt == "boom":
                raise RuntimeError("engine exploded")
            if req.prompt == "not a dict":
                return ["not", "a", "dict"]
            if req.prompt == "nan":
                return {"fps": math.nan}
            if req.prompt == "wait":
                await self.gate.wait()
            if req.prompt == "release":
                self.gate.set()
            return {"ok": True, "epoch": len(self.seen), "first_block": 3, "prompt": req.prompt}
        return {"ok": True, "cmd": req.cmd}

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self.gate = asyncio.Event()
        self.ctx = zmq.asyncio.Context()
        self.server = ControlServer("tcp://127.0.0.1:*", self.handler, ctx=self.ctx)
        self.address = self.server.address
        self._ready.set()
        await self.server.serve()
        self.serve_returned = True
        self.ctx.term()

    def start(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def server():
    s = ServerThread().start()
    yield s
    s.stop()


@pytest.fixture
def sock():
    """sock(kind, addr): a connected client socket, closed after the test."""
    ctx = zmq.Context()
    opened = []

    def open_socket(kind, addr):
        s = ctx.socket(kind)
        opened.append(s)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(addr)
        return s

    yield open_socket
    for s in opened:
        s.close(linger=0)
    ctx.term()


def recv(s):
    assert s.poll(POLL_MS), "no reply from the control server"
    return s.recv_multipart()


def req_roundtrip(s, obj) -> dict:
    s.send(json.dumps(obj).encode() if isinstance(obj, dict) else obj)
    frames = recv(s)
    assert len(frames) == 1
    return json.loads(frames[0])


def test_req_client_status_and_id_echo(server, sock):
    s = sock(zmq.REQ, server.address)
    assert req_roundtrip(s, {"cmd": "status"}) == {"ok": True, "block": 1, "fps": 8.0}
    reply = req_roundtrip(s, {"cmd": "status", "id": "abc"})
    assert reply["ok"] is True and reply["id"] == "abc"
    reply = req_roundtrip(s, {"cmd": "set_prompt", "prompt": "a cat", "mode": "blend", "id": 9})
    assert reply == {"ok": True, "epoch": 3, "first_block": 3, "prompt": "a cat", "id": 9}
    assert server.seen[2] == SetPrompt("a cat", "blend", 4, id=9)
    assert req_roundtrip(s, {"cmd": "pause"}) == {"ok": True, "cmd": "pause"}


def test_dealer_without_delimiter_gets_bare_reply(server, sock):
    s = sock(zmq.DEALER, server.address)
    s.send(b'{"cmd":"resume"}')
    frames = recv(s)
    assert len(frames) == 1
    assert json.loads(frames[0]) == {"ok": True, "cmd": "resume"}


def test_dealer_with_delimiter_gets_req_shaped_reply(server, sock):
    s = sock(zmq.DEALER, server.address)
    s.send_multipart([b"", b'{"cmd":"status","id":1}'])
    frames = recv(s)
    assert len(frames) == 2 and frames[0] == b""
    assert json.loads(frames[1])["id"] == 1


def test_bad_requests_get_error_replies(server, sock):
    s = sock(zmq.REQ, server.address)
    cases = [
        (b"{not json", "invalid JSON"),
        (b"\x00\xff\xfe", "UTF-8"),
        (b"", "empty"),
        (b'{"cmd":"set_prompt","prompt":"x","mode":"hard","id":"r1"}', "'mode' must be one of"),
        (b'{"cmd":"set_prompt","prompt":"x","at_block":true}', "'at_block' must be an integer"),
        (b'{"cmd":"status","extra":1}', "unknown field"),
        (json.dumps({"cmd": "status", "pad": "x" * 66_000}).encode(), "too large"),  # over 64 KiB, under the frame cap
    ]
    for raw, needle in cases:
        reply = req_roundtrip(s, raw)
        assert reply["ok"] is False and needle in reply["error"], (raw[:40], reply)
    assert server.seen == []  # the handler never saw a bad request
    assert req_roundtrip(s, b'{"cmd":"set_prompt","prompt":"x","mode":"hard","id":"r1"}')["id"] == "r1"


def test_handler_failures_become_internal_errors(server, sock):
    s = sock(zmq.REQ, server.address)
    reply = req_roundtrip(s, {"cmd": "set_prompt", "prompt": "boom", "id": 4})
    assert reply == {"ok": False, "error": "internal error: RuntimeError: engine exploded", "id": 4}
    reply = req_roundtrip(s, {"cmd": "set_prompt", "prompt": "not a dict"})
    assert reply["ok"] is False and reply["error"].startswith("internal error:")
    reply = req_roundtrip(s, {"cmd": "set_prompt", "prompt": "nan"})
    assert reply == {"ok": True, "fps": None}  # strict JSON, "ok" filled in
    assert req_roundtrip(s, {"cmd": "status"})["ok"] is True  # still serving


def test_req_multipart_body_is_answered_not_hung(server, sock):
    s = sock(zmq.REQ, server.address)
    s.send_multipart([b'{"cmd":"status"}', b"extra"])
    frames = recv(s)
    reply = json.loads(frames[0])
    assert reply["ok"] is False and "exactly one JSON frame" in reply["error"]
    assert req_roundtrip(s, {"cmd": "status"})["ok"] is True


def test_survives_50_malformed_messages(server, sock):
    d = sock(zmq.DEALER, server.address)
    junk = [
        [b""], [b"", b""], [b"", b"", b""], [b"a", b"b", b"c"], [b"\x00" * 100], [b"", b"\xff" * 7],
        [b"[1,2,3]"], [b'{"cmd":"status"}', b'{"cmd":"status"}'], [b"", b'{"cmd":"status"}', b"x"],
        [b"null"], [b'{"cmd":"set_prompt","prompt":"' + b"p" * 5000 + b'"}'], [b'{"cmd":"status","id":[]}'],
        [b"NaN"], [b'{"cmd":"set_prompt","prompt":"a","at_block":1e999}'], [b"[" * 40000],
    ]
    sent = [junk[i % len(junk)] for i in range(50)]
    for frames in sent:
        d.send_multipart(frames)
    for _ in sent:
        frames = recv(d)
        assert json.loads(frames[-1])["ok"] is False
    d.send(b'{"cmd":"status","id":"after"}')
    reply = json.loads(recv(d)[-1])
    assert reply["ok"] is True and reply["id"] == "after"
    assert server.server.errors == 50
    assert req_roundtrip(sock(zmq.REQ, server.address), {"cmd": "status"})["ok"] is True


def test_survives_oversized_frame_and_raw_tcp_garbage(server, sock):
    big = sock(zmq.DEALER, server.address)
    big.send(b"x" * (2 << 20))  # over the socket limit: libzmq drops this peer, the server carries on
    port = int(server.address.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 40)
    s = sock(zmq.REQ, server.address)
    assert req_roundtrip(s, {"cmd": "status", "id": "alive"})["id"] == "alive"


def test_many_requests_in_a_row(server, sock):
    s = sock(zmq.REQ, server.address)
    for i in range(200):
        reply = req_roundtrip(s, {"cmd": "status", "id": i})
        assert reply["id"] == i and reply["block"] == i + 1


def test_pipelined_dealer_requests_keep_their_order(server, sock):
    n = MAX_PENDING_PER_PEER  # as many as one peer may have waiting
    d = sock(zmq.DEALER, server.address)
    for i in range(n):
        d.send_multipart([b"", json.dumps({"cmd": "set_prompt", "prompt": f"p{i}", "id": i}).encode()])
    ids = [json.loads(recv(d)[1])["id"] for _ in range(n)]
    assert ids == list(range(n))
    assert [r.prompt for r in server.seen] == [f"p{i}" for i in range(n)]


def test_slow_peer_does_not_block_others_and_is_bounded(server, sock):
    slow = sock(zmq.DEALER, server.address)
    slow.send(json.dumps({"cmd": "set_prompt", "prompt": "wait", "id": "w"}).encode())
    extra = MAX_PENDING_PER_PEER + 6
    for i in range(extra):
        slow.send(json.dumps({"cmd": "status", "id": i}).encode())
    # The slow peer's queue is full: the overflow is refused at once, before the gate opens.
    busy = [json.loads(recv(slow)[0]) for _ in range(7)]
    assert all(r["ok"] is False and r["error"].startswith("busy") for r in busy)
    assert [r["id"] for r in busy] == list(range(MAX_PENDING_PER_PEER - 1, extra))
    # Another peer is served while the first one's handler is still waiting; it opens the gate.
    other = sock(zmq.REQ, server.address)
    assert req_roundtrip(other, {"cmd": "set_prompt", "prompt": "release"})["ok"] is True
    rest = [json.loads(recv(slow)[0]) for _ in range(extra + 1 - 7)]
    assert rest[0]["id"] == "w" and rest[0]["ok"] is True
    assert [r["id"] for r in rest[1:]] == list(range(MAX_PENDING_PER_PEER - 1))


def test_close_ends_serve(sock):
    s = ServerThread().start()
    assert req_roundtrip(sock(zmq.REQ, s.address), {"cmd": "status"})["ok"] is True
    s.stop()
    assert s.serve_returned


def test_bind_error_is_clear():
    async def main():
        c = zmq.asyncio.Context()
        a = ControlServer("tcp://127.0.0.1:*", lambda r: None, ctx=c)
        try:
            with pytest.raises(OSError, match="cannot bind control socket"):
                ControlServer(a.address, lambda r: None, ctx=c)
        finally:
            a.close()
            c.term()

    asyncio.run(main())


def test_a_100k_character_prompt_is_answered_too_large_and_the_client_says_so_without_asking(server, sock):
    """Over the protocol's 64 KiB but under the frame cap: an error reply, not a dropped connection (a REQ client
    would otherwise wait out its own timeout, stuck); our client refuses to send it at all."""
    from clients.client import ClientError, ControlClient

    s = sock(zmq.REQ, server.address)
    reply = req_roundtrip(s, {"cmd": "set_prompt", "prompt": "x" * 100_000, "id": 5})
    assert reply["ok"] is False and "too large" in reply["error"] and reply.get("id") in (5, None)
    assert req_roundtrip(s, {"cmd": "status"})["ok"] is True  # the REQ socket is usable again
    c = ControlClient(server.address, timeout=60.0)
    try:
        with pytest.raises(ClientError, match="request too large"):
            c.set_prompt("x" * 100_000)
        assert c.status()["ok"] is True
    finally:
        c.close()
    assert not any(getattr(r, "prompt", "").startswith("xxx") for r in server.seen)  # no handler saw them


def test_oversized_frames_cost_the_sender_its_connection_not_the_server(server, sock):
    """libzmq drops a peer whose frame is over MAX_FRAME_BYTES before buffering it; the others are served."""
    from zmq.utils.monitor import recv_monitor_message

    from streamer.control import MAX_FRAME_BYTES

    big = sock(zmq.DEALER, server.address)
    mon = big.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    big.send_multipart([b"", b'{"cmd":"status","pad":"' + b"x" * (MAX_FRAME_BYTES + 10) + b'"}'])
    events = []
    while zmq.EVENT_DISCONNECTED not in events:
        assert mon.poll(30_000), f"no disconnect after an oversized frame: {events}"
        events.append(recv_monitor_message(mon)["event"])
    big.disable_monitor()
    mon.close(linger=0)
    assert req_roundtrip(sock(zmq.REQ, server.address), {"cmd": "status"})["ok"] is True
    assert len(server.seen) == 1  # the handler saw the good request only
