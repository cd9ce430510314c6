"""WebRTC viewers, aiortc to aiortc, all on 127.0.0.1: H.264 passthrough (the bytes the daemon encoded, not a
re-encode), pacing, several viewers, a viewer leaving or stalling without touching the others, the VP8
fallback, the offer and control routes of a real daemon (same validation and replies as the ZMQ socket)."""
import asyncio
import hashlib
import json
import threading
import time

import aiohttp
import numpy as np
import pytest
import zmq
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from transports.encoder import H264Encoder
from transports.fanout import FanOut
from transports.http import bound_port, build_app, start_http
from transports.webrtc import (OfferError, PacketPacer, WebRTCConfig, WebRTCHub, parse_ice_servers,
                               restrict_host_addresses, strip_mdns_candidates)

from media import moving_gradient

W, H, FPS, BLOCK = 64, 48, 16, 8


@pytest.fixture(autouse=True, scope="module")
def loopback_only():
    restrict_host_addresses(["127.0.0.1"])  # aioice skips 127.0.0.1 by default
    yield
    restrict_host_addresses(None)


# --- pure pieces ------------------------------------------------------------------------------------------------

def test_pacer_bursts_late_arrivals_and_falling_behind():
    p = PacketPacer(max_lag=1.0, tolerance=0.03, window=4.0)
    # a block of 8 frames at 16 fps arrives at once at t=10: released 1/16 s apart from its arrival
    for i in range(8):
        p.arrived(i / 16, 10.0)
    assert [round(p.due(i / 16, 10.0), 4) for i in range(8)] == [round(10 + i / 16, 4) for i in range(8)]
    assert not p.behind(7 / 16, 10.4)
    # the next block arrives 0.2 s late (engine stall): the schedule moves, nothing is skipped
    p.arrived(0.5, 10.7)
    assert p.due(0.5, 10.7) == pytest.approx(10.7) and p.reanchors == 1
    # released more than max_lag after its due time (the peer stalled): behind
    assert p.behind(0.5, 11.8)
    # later blocks arrive early again: once the late one leaves the window the schedule is > 1 s later than needed
    q = PacketPacer(max_lag=1.0, window=2.0)
    q.arrived(0.0, 0.0)
    q.due(0.0, 0.0)
    q.arrived(1.0, 3.5)  # 2.5 s late: the offset moves from 0 to 2.5
    q.due(1.0, 3.5)
    q.arrived(2.0, 3.6)
    assert not q.behind(2.0, 3.6)  # the late block is still in the 2 s window
    for k in range(3, 8):
        q.arrived(float(k), 1.0 + k)  # 1.5 s earlier than the moved schedule needs
    assert q.behind(7.0, 8.0)
    q.restart(7.0, 8.0)
    assert q.due(7.0, 8.0) == pytest.approx(8.0)


def test_sdp_and_ice_helpers():
    sdp = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
           "a=candidate:1 1 udp 2113937151 0a1b2c3d-1111-2222-3333-444455556666.local 50000 typ host\r\n"
           "a=candidate:2 1 udp 2113937151 127.0.0.1 50001 typ host\r\n")
    out = strip_mdns_candidates(sdp)
    assert ".local" not in out and "127.0.0.1 50001" in out and out.startswith("v=0\r\nm=video")
    assert parse_ice_servers("") == []
    (s,) = parse_ice_servers("stun:stun.example.org:3478")
    assert s.urls == "stun:stun.example.org:3478" and not s.username
    (t,) = parse_ice_servers("turn:turn.example.org:3478?transport=udp", "u", "p")
    assert (t.username, t.credential) == ("u", "p")
    with pytest.raises(ValueError):
        parse_ice_servers("turn:turn.example.org")  # no credentials
    with pytest.raises(ValueError):
        parse_ice_servers("http://example.org")
    from streamer.web import WebSetupError, resolve_ice_hosts

    assert resolve_ice_hosts("auto", "127.0.0.1") == ["127.0.0.1"]
    assert resolve_ice_hosts("auto", "localhost") == ["127.0.0.1"]
    assert resolve_ice_hosts("auto", "0.0.0.0") is None and resolve_ice_hosts("all", "127.0.0.1") is None
    assert resolve_ice_hosts("192.0.2.7, ::1", "0.0.0.0") == ["192.0.2.7", "::1"]
    with pytest.raises(WebSetupError):
        resolve_ice_hosts("eth0", "0.0.0.0")


def test_track_paces_and_skips_to_a_keyframe_after_a_stall():
    from fractions import Fraction

    from transports.packet import EncodedPacket
    from transports.webrtc import PacedPacketTrack

    def pkt(i):  # the track never parses the payload
        return EncodedPacket(data=b"\0\0\0\1" + bytes([i % 256]), pts=i, fps=Fraction(FPS), keyframe=i % FPS == 0,
                             block=i // BLOCK, epoch=0, width=W, height=H)

    async def main():
        fanout, keyframes = FanOut(), []
        track = PacedPacketTrack(lambda: fanout.subscribe(maxsize=64), fanout.unsubscribe,
                                 lambda: keyframes.append(1), max_lag=0.5)
        first = asyncio.ensure_future(track.recv())
        while not fanout.subscribers:  # recv() subscribes on its first call
            await asyncio.sleep(0)
        t0 = time.monotonic()
        fanout.publish_many([pkt(i) for i in range(BLOCK)])  # a block arrives at once
        out = [await first] + [await track.recv() for _ in range(BLOCK - 1)]
        span = time.monotonic() - t0
        assert [p.pts for p in out] == [round(i * 90_000 / FPS) for i in range(BLOCK)]
        assert span > (BLOCK - 1) / FPS * 0.9, span  # released over time, not at once (load only adds to it)
        # the sender stops pulling for 2.5 s while the source goes on in real time (a keyframe every FPS frames)
        for i in range(BLOCK, 3 * FPS, BLOCK):
            await asyncio.sleep(BLOCK / FPS)
            fanout.publish_many([pkt(j) for j in range(i, i + BLOCK)])
        nxt = await track.recv()
        assert track.skipped > 0 and bytes(nxt)[-1] == 2 * FPS  # resumed at the newest keyframe, pts 2*FPS
        assert track.sent == BLOCK + 1
        track.stop()
        assert not fanout.subscribers

    asyncio.run(main())


# --- an in-process stand-in for the daemon: encoder thread → fan-out, a block at a time ----------------------

def _frames(start, n):
    return moving_gradient(n, W, H, start)

class Producer(threading.Thread):
    """Like the daemon: a block of frames every BLOCK/FPS seconds, encoded once, published to every consumer."""

    def __init__(self):
        super().__init__(daemon=True)
        self.enc = H264Encoder(W, H, FPS, keyframe_interval_s=1.0)
        self.keyframe_requests = 0
        self.fanout = FanOut(on_subscribe=lambda sub: self.request_keyframe())
        self.halt = threading.Event()

    def request_keyframe(self):
        self.keyframe_requests += 1
        self.enc.request_keyframe()

    def run(self):
        n = 0
        t0 = time.monotonic()
        while not self.halt.is_set():
            self.fanout.publish_many(self.enc.encode(_frames(n, BLOCK), block=n // BLOCK, epoch=0))
            n += BLOCK
            self.halt.wait(max(0.0, t0 + n / FPS - time.monotonic()))


class Viewer:
    """An aiortc receiving peer, reading frames in the background."""

    def __init__(self, codec=None):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tr = self.pc.addTransceiver("video", direction="recvonly")
        if codec:
            tr.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                    if c.mimeType == f"video/{codec}"])
        self.channel = self.pc.createDataChannel("meta")
        self.meta = []
        self.channel.on("message", lambda m: self.meta.append(json.loads(m)))
        self.frames = []  # (monotonic time, frame)
        self.answer = None
        self._track = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda t: self._track.done() or self._track.set_result(t))
        self._task = None

    async def connect(self, answer_fn):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.answer = await answer_fn(self.pc.localDescription.sdp, self.pc.localDescription.type)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer["sdp"], type=self.answer["type"]))
        self._task = asyncio.ensure_future(self._read())

    async def _read(self):
        track = await self._track
        while True:
            frame = await track.recv()
            self.frames.append((time.monotonic(), frame))

    async def wait_frames(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            assert time.monotonic() < deadline, f"only {len(self.frames)} frames in {timeout}s"
            if self._task is not None and self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)

    async def close(self):
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


def _digest(frame):
    return hashlib.md5(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()


def _reference_digests(packets):
    import av

    dec = av.CodecContext.create("h264", "r")
    out = set()
    for p in packets:
        for f in dec.decode(av.Packet(p.data)):
            out.add(_digest(f))
    return out


async def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_h264_passthrough_paced_many_viewers_one_leaves():
    async def main():
        prod = Producer()
        ref = prod.fanout.subscribe(maxsize=100_000, name="reference")
        hub = WebRTCHub(prod.fanout, prod.request_keyframe, WebRTCConfig(keyframe_min_interval=0.0))
        prod.start()
        viewers = [Viewer() for _ in range(3)]
        try:
            await asyncio.gather(*(v.connect(hub.answer) for v in viewers))
            assert all(v.answer["codec"] == "H264" for v in viewers)
            assert len(hub.peers) == 3
            await asyncio.gather(*(v.wait_frames(24) for v in viewers))
            # paced to real time: 90 kHz timestamps FPS apart, frames arriving at about FPS
            for v in viewers:
                pts = [f.pts for _, f in v.frames[:24]]
                steps = np.diff(pts)
                assert np.median(steps) == pytest.approx(90_000 / FPS, rel=0.05), steps
                span = v.frames[23][0] - v.frames[0][0]
                assert span > 23 / FPS * 0.7, span  # paced, not a burst (load only adds to it)
                assert (v.frames[0][1].width, v.frames[0][1].height) == (W, H)
            assert any(m.get("block") is not None and "lag_ms" in m for m in viewers[0].meta)
            # one viewer leaves mid-stream: dropped and unsubscribed; the others keep decoding
            subs_before = len(prod.fanout.subscribers)
            counts = [len(v.frames) for v in viewers]
            await viewers[0].close()
            await _wait(lambda: len(hub.peers) == 2, 10, "the closed peer to be dropped")
            await _wait(lambda: len(prod.fanout.subscribers) == subs_before - 1, 5, "its subscription to end")
            await asyncio.gather(*(v.wait_frames(counts[i] + 2 * FPS) for i, v in enumerate(viewers[1:], 1)))
            assert hub.stats()["dropped"] == {"closed": 1}
        finally:
            await asyncio.gather(*(v.close() for v in viewers[1:]), return_exceptions=True)
            await hub.close()
            prod.halt.set()
            prod.join()
        # the viewers decoded exactly the frames the one encoder produced (no re-encode anywhere)
        packets = []
        while (p := ref.get_nowait()) is not None:
            packets.append(p)
        reference = _reference_digests(packets)
        for v in viewers:
            got = [_digest(f) for _, f in v.frames]
            assert got and all(d in reference for d in got)
        assert prod.enc.frames_in == prod.enc.packets_out  # one encode per frame, whatever the viewer count
        assert not prod.fanout.subscribers or prod.fanout.subscribers == (ref,)

    asyncio.run(main())


def test_vp8_fallback_stalled_peer_pli_and_bad_offers():
    async def main():
        prod = Producer()
        cfg = WebRTCConfig(stall_timeout=1.0, keyframe_min_interval=0.0, max_peers=2)
        hub = WebRTCHub(prod.fanout, prod.request_keyframe, cfg)
        prod.start()
        vp8, h264 = Viewer(codec="VP8"), Viewer()
        try:
            await asyncio.gather(vp8.connect(hub.answer), h264.connect(hub.answer))
            assert vp8.answer["codec"] == "VP8" and h264.answer["codec"] == "H264"
            await asyncio.gather(vp8.wait_frames(FPS), h264.wait_frames(FPS))
            assert (vp8.frames[-1][1].width, vp8.frames[-1][1].height) == (W, H)
            assert hub.vp8.frames > 0
            # the limit holds
            with pytest.raises(OfferError) as e:
                await hub.answer(h264.pc.localDescription.sdp, "offer")
            assert e.value.status == 429
            # a PLI from the H.264 viewer reaches the shared encoder
            peer = hub.peers[h264.answer["peer"]]
            before = prod.keyframe_requests
            peer.pc.getTransceivers()[0].sender._send_keyframe()
            assert prod.keyframe_requests == before + 1
            # the VP8 peer's sender stops pulling packets: dropped as stalled, the transcoder stops
            stalled = hub.peers[vp8.answer["peer"]]

            async def never():
                await asyncio.sleep(3600)

            stalled.track.recv = never
            n = len(h264.frames)
            await _wait(lambda: vp8.answer["peer"] not in hub.peers, 8, "the stalled peer to be dropped")
            assert stalled.reason == "stalled"
            assert not hub.vp8.fanout.subscribers and hub.vp8._src is None
            await h264.wait_frames(n + FPS)
        finally:
            await asyncio.gather(vp8.close(), h264.close(), return_exceptions=True)
            await hub.close()
            prod.halt.set()
            prod.join()
        for sdp, typ in (("v=0\r\n", "offer"), ("garbage m=video", "offer"), ("x", "answer")):
            with pytest.raises(OfferError) as e:
                await WebRTCHub(FanOut(), lambda: None).answer(sdp, typ)
            assert e.value.status == 400

    asyncio.run(main())


# --- the routes with stand-ins for what the daemon gives them: token, origin, content type -------------------------

class _FakeDaemon:
    def __init__(self, **opts):
        from streamer.options import ServeOptions

        self.opts = ServeOptions(**opts)
        self.fanout = FanOut()
        self.encoder = None
        self.requests = []

    async def handle(self, req, client=""):
        self.requests.append(req)
        return {"ok": True, "epoch": 1, "first_block": 5}

    def status(self):
        return {"ok": True, "block": 1}

    def request_keyframe(self):
        pass

    def fail_threadsafe(self, component, cause):
        raise AssertionError(f"{component} failed: {cause}")


def test_token_origin_and_content_type_guards():
    from streamer.web import WebFrontend

    async def main():
        d = _FakeDaemon(token="s3cret", ice_servers="stun:stun.example.org:3478,turn:turn.example.org:3478",
                        ice_username="u", ice_credential="pw")
        front = WebFrontend(d.opts, "127.0.0.1", d.fanout, d.request_keyframe, d.handle, d.status,
                            d.fail_threadsafe)
        app = build_app(d.fanout, front.status, lambda: "", extra_routes=front.routes(), middlewares=[front.guard])
        runner = await start_http(app, "127.0.0.1", 0)
        port = bound_port(runner)
        base = f"http://127.0.0.1:{port}"
        body = json.dumps({"cmd": "set_prompt", "prompt": "a fox", "mode": "cut"})
        good = {"Content-Type": "application/json", "Authorization": "Bearer s3cret"}
        try:
            async with aiohttp.ClientSession() as s:
                for headers, status in (({"Content-Type": "application/json"}, 401),
                                        ({**good, "Authorization": "Bearer nope"}, 401),
                                        ({**good, "Origin": "http://evil.example"}, 403),
                                        ({**good, "Content-Type": "text/plain"}, 415)):
                    for path in ("/control", "/offer"):
                        async with s.post(base + path, data=body, headers=headers) as r:
                            assert r.status == status, (path, headers)
                            assert (await r.json())["ok"] is False
                assert d.requests == []
                async with s.post(base + "/control", data=body, headers={**good, "Origin": base}) as r:
                    assert r.status == 200 and await r.json() == {"ok": True, "epoch": 1, "first_block": 5}
                assert d.requests[0].prompt == "a fox" and d.requests[0].mode == "cut"
                async with s.post(base + "/offer", data="{}", headers={**good, "X-Streamer-Token": "s3cret"}) as r:
                    assert r.status == 400
                async with s.post(base + "/offer", data=json.dumps({"sdp": "v" * 200_000}), headers=good) as r:
                    assert r.status == 413
                async with s.post(base + "/control", data=b" " * (2 << 20), headers=good) as r:
                    assert r.status == 413
                async with s.get(base + "/webrtc") as r:  # no TURN credentials without the token
                    cfg = await r.json()
                    assert cfg["token_required"] and cfg["iceServers"] == [{"urls": "stun:stun.example.org:3478"}]
                async with s.get(base + "/webrtc", headers={"Authorization": "Bearer s3cret"}) as r:
                    assert len((await r.json())["iceServers"]) == 2
                async with s.get(base + "/viewer.js") as r:
                    assert r.status == 200 and "RTCPeerConnection" in await r.text()
                for path in ("/status", "/metrics", "/stream.ts"):  # data routes need the token too
                    async with s.get(base + path) as r:
                        assert r.status == 401, path
                async with s.get(base + "/status?token=s3cret") as r:  # players that cannot send headers
                    assert (await r.json())["block"] == 1  # the status source it was given
                # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host and Origin
                rebound = {**good, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
                async with s.post(base + "/control", data=body, headers=rebound) as r:
                    assert r.status == 421 and "evil.example" in (await r.json())["error"]
                async with s.get(base + "/status", headers={"Host": f"evil.example:{port}", **good}) as r:
                    assert r.status == 421
                async with s.get(base + "/status", headers={"Host": f"localhost:{port}", **good}) as r:
                    assert r.status == 200
                assert len(d.requests) == 1
        finally:
            await front.close()
            await runner.cleanup()

    asyncio.run(main())


# --- a real daemon (tiny model) -----------------------------------------------------------------------------------

def _zmq_raw(addr, raw: bytes) -> dict:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(addr)
    try:
        s.send(raw)
        assert s.poll(5000), "no reply from the control socket"
        return json.loads(s.recv())
    finally:
        s.close()


def test_daemon_offer_control_and_status(daemon):
    base = f"http://127.0.0.1:{daemon.http_port}"

    async def post(s, path, raw: bytes):
        async with s.post(base + path, data=raw, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()

    async def main():
        async with aiohttp.ClientSession() as s:
            async def answer(sdp, typ):
                status, ans = await post(s, "/offer", json.dumps({"sdp": sdp, "type": typ}).encode())
                assert status == 200, ans
                return ans

            v = Viewer()
            try:
                await v.connect(answer)
                assert v.answer["codec"] == "H264"
                # host candidates on loopback only: no STUN/TURN server was contacted
                cands = [ln for ln in v.answer["sdp"].splitlines() if ln.startswith("a=candidate:")]
                assert cands and all(" 127.0.0.1 " in c and " typ host" in c for c in cands), cands
                await v.wait_frames(30, timeout=30)
                async with s.get(base + "/status") as r:
                    st = await r.json()
                assert st["webrtc"]["viewers"] == 1 and st["webrtc"]["peers"][0]["sent"] >= 30
                # the control path: the same replies as the ZMQ socket, good and bad; HTTP statuses by kind
                for raw, want in ((b'{"cmd":"set_prompt","prompt":"   "}', 422), (b"not json", 400),
                                  (b'{"cmd":"nope","id":3}', 422),
                                  (b'{"cmd":"set_prompt","prompt":"x","mode":"soft","blocks":2}', 422),
                                  (b"[1]", 400), (b'{"cmd":"status","extra":1}', 422),
                                  (b'{"cmd":"status","id":"' + b"x" * 65_600 + b'"}', 413)):
                    status, reply = await post(s, "/control", raw)
                    assert status == want and reply["ok"] is False, (raw[:40], status, reply)
                    zmq_reply = _zmq_raw(daemon.control, raw)
                    assert reply == zmq_reply or (status == 413 and "limit 65536" in reply["error"]), raw[:40]
                status, ack = await post(s, "/control", json.dumps(
                    {"cmd": "set_prompt", "prompt": "a green square from the browser", "mode": "soft",
                     "id": "web-1"}).encode())
                assert ack["ok"] is True and ack["id"] == "web-1"
                assert isinstance(ack["epoch"], int) and isinstance(ack["first_block"], int)
                deadline = time.monotonic() + 20
                while True:
                    async with s.get(base + "/status") as r:
                        st = await r.json()
                    if st["prompt"] == "a green square from the browser":
                        break
                    assert time.monotonic() < deadline, st
                    await asyncio.sleep(0.3)
                n = len(v.frames)
                await v.wait_frames(n + 8)  # the stream goes on across the change
            finally:
                await v.close()

    asyncio.run(main())


def test_mangled_offers_are_refused_without_taking_a_slot_and_one_client_cannot_hoard_them():
    async def main():
        hub = WebRTCHub(FanOut(), lambda: None, WebRTCConfig(max_pending_per_client=2))
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        good = pc.localDescription.sdp
        mangled = {
            "no fingerprint": "\r\n".join(ln for ln in good.split("\r\n") if not ln.startswith("a=fingerprint")),
            "no ice-pwd": "\r\n".join(ln for ln in good.split("\r\n") if not ln.startswith("a=ice-pwd")),
            "sendonly": good.replace("a=recvonly", "a=sendonly"),
            "two videos": good + good[good.index("m=video"):],
            "no media": good[:good.index("m=video")],
        }
        try:
            for why, sdp in mangled.items():
                with pytest.raises(OfferError) as e:
                    await hub.answer(sdp, remote="10.0.0.9")
                assert e.value.status == 400, why
            assert hub.peers == {}  # none of them took a slot
            for _ in range(2):
                await hub.answer(good, remote="10.0.0.9")
            with pytest.raises(OfferError) as e:
                await hub.answer(good, remote="10.0.0.9")
            assert e.value.status == 429 and "not yet connected" in str(e.value)
            await hub.answer(good, remote="10.0.0.10")  # another client is still served
            assert len(hub.peers) == 3
        finally:
            await pc.close()
            await hub.close()

    asyncio.run(main())


def test_whep_client_plays_the_stream_and_ends_its_session(daemon):
    """A WHEP player (aiortc as the peer) does only WHEP's HTTP exchange, and decodes the daemon's video."""
    base = f"http://127.0.0.1:{daemon.http_port}"

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.options(base + "/whep", headers={"Origin": "http://localhost:9999"}) as r:
                assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"
                assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:9999"
                assert "Location" in r.headers["Access-Control-Expose-Headers"]
            async with s.post(base + "/whep", data="v=0", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with s.post(base + "/whep", data="v=0\r\nnot sdp", headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 400 and "video section" in await r.text()

            async def whep(sdp, typ):
                async with s.post(base + "/whep", data=sdp, headers={"Content-Type": "application/sdp"}) as r:
                    assert r.status == 201, await r.text()
                    assert r.headers["Content-Type"].startswith("application/sdp")
                    location = r.headers["Location"]
                    assert location.startswith("/whep/") and len(location) > 12
                    return {"sdp": await r.text(), "type": "answer", "location": location}
            v = Viewer()
            try:
                await v.connect(whep)
                cands = [ln for ln in v.answer["sdp"].splitlines() if ln.startswith("a=candidate:")]
                assert cands, "the answer carries its candidates (no trickle)"
                await v.wait_frames(30, timeout=60)
                session = base + v.answer["location"]
                async with s.patch(session, data="a=end-of-candidates") as r:
                    assert r.status == 405
                async with s.delete(session) as r:
                    assert r.status == 200
                async with s.delete(session) as r:
                    assert r.status == 404
                async with s.get(base + "/status") as r:
                    assert (await r.json())["webrtc"]["dropped"].get("whep delete") == 1
            finally:
                await v.close()

    asyncio.run(main())
