"""The daemon as a subprocess, with real sockets on 127.0.0.1: ZMQ video, HTTP MPEG-TS, control, events."""
import json
import subprocess
import time
import urllib.request

import av
import zmq

from clients.client import ControlClient, VideoSubscriber


def _collect(sub, want_video=24, want_blocks=0, timeout=60.0):
    video, events = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(video) < want_video or
                                           len([e for e in events if e.get("event") == "block"]) < want_blocks):
        msg = sub.recv(timeout=1.0)
        if msg is None:
            continue
        topic, header, payload = msg
        (video if topic == b"video.h264" else events).append((header, payload) if topic == b"video.h264" else header)
    return video, events


def _events_until(sub, block, timeout):
    """Events from `sub` until block `block` is emitted (or `timeout` s): ({block: its event}, the other events)."""
    blocks, others = {}, []
    deadline = time.monotonic() + timeout
    while block not in blocks and time.monotonic() < deadline:
        msg = sub.recv(timeout=1.0)
        if msg is None:
            continue
        ev = msg[1]
        if ev.get("event") == "block":
            blocks[ev["block"]] = ev
        else:
            others.append(ev)
    return blocks, others


def _decode_annexb(packets):
    codec = av.CodecContext.create("h264", "r")
    frames = []
    for header, payload in packets:
        for pkt in codec.parse(payload):
            frames += codec.decode(pkt)
    for pkt in codec.parse(None) if False else []:
        frames += codec.decode(pkt)
    return frames


def test_zmq_video_decodes_to_frames_of_the_configured_size(daemon):
    with VideoSubscriber(daemon.publish, topics=(b"video.h264",)) as sub:
        video, _ = _collect(sub, want_video=40)
    assert len(video) >= 40
    first_key = next(i for i, (h, _) in enumerate(video) if h["keyframe"])
    frames = _decode_annexb(video[first_key:])
    assert len(frames) >= 20
    assert {(f.width, f.height) for f in frames} == {(64, 64)}
    h = video[first_key][0]
    assert {"pts", "keyframe", "block", "epoch", "width", "height", "fps"} <= set(h)
    pts = [h["pts"] for h, _ in video]
    assert pts == sorted(pts)


def test_http_stream_ts_is_accepted_by_ffprobe(daemon, tmp_path):
    out = tmp_path / "live.ts"
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/stream.ts", timeout=30) as r, \
            open(out, "wb") as f:
        assert r.headers["Content-Type"].startswith("video/mp2t")
        got = 0
        while got < 60_000:
            chunk = r.read(4096)
            if not chunk:
                break
            f.write(chunk)
            got += len(chunk)
            if got > 8000 and time.monotonic() and out.stat().st_size > 20_000:
                break
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    streams = json.loads(probe.stdout)["streams"]
    assert streams[0]["codec_name"] == "h264"
    assert (streams[0]["width"], streams[0]["height"]) == (64, 64)


def test_status_and_metrics_over_http(daemon):
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/status", timeout=10) as r:
        st = json.loads(r.read())
    assert st["blocks_emitted"] > 0 and st["config"]["height"] == 64
    assert "zmq-pub" in st["subscribers"] and "viewers" not in st  # the consumers by name; viewers under webrtc
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/stream.ts", timeout=30) as stream:
        stream.read(188)  # a /stream.ts client is a subscriber while it reads
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/status", timeout=10) as r:
            names = json.loads(r.read())["subscribers"]
    assert "zmq-pub" in names and any(n.startswith("http:127.0.0.1") for n in names)
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "streamer_blocks_emitted_total" in text
    assert "streamer_subscribers " in text


def test_prompt_change_is_acknowledged_and_lands_at_the_acknowledged_block(daemon):
    with VideoSubscriber(daemon.publish, topics=(b"events",)) as sub, ControlClient(daemon.control) as c:
        _collect(sub, want_video=0, want_blocks=1)  # subscribed and flowing
        for mode in ("soft", "queue", "blend", "cut"):
            prompt = f"a green triangle moving {mode}"
            ack = c.set_prompt(prompt, mode=mode)
            assert ack["ok"] is True, ack
            n, epoch = ack["first_block"], ack["epoch"]
            blocks, others = _events_until(sub, n, timeout=60)
            applied = [e for e in others if e.get("event") == "prompt_applied"]
            assert n in blocks, f"block {n} never emitted ({mode})"
            assert blocks[n]["epoch"] == epoch, (mode, blocks[n])
            assert any(a["epoch"] == epoch and a["first_block"] == n for a in applied), (mode, applied)
            if n - 1 in blocks:
                assert blocks[n - 1]["epoch"] < epoch
            if mode != "blend":
                assert blocks[n]["prompt"] == prompt
        assert c.status()["epoch"] >= 4


def test_a_cut_supersedes_a_blend_that_had_not_begun(daemon):
    """Both wait for the same tick boundary (the engine paused): the cut takes effect and the blend, older and due at a
    later block, is dropped with a prompt_superseded event, never applied after the cut."""
    with VideoSubscriber(daemon.publish, topics=(b"events",)) as sub, ControlClient(daemon.control) as c:
        _collect(sub, want_video=0, want_blocks=1)
        assert c.pause()["ok"] is True
        try:
            blend = c.set_prompt("a yellow square moving left on a black background", mode="blend", blocks=2)
            cut = c.set_prompt("a green circle moving down on a black background", mode="cut")
        finally:
            assert c.resume()["ok"] is True
        assert blend["ok"] and cut["ok"] and cut["first_block"] < blend["first_block"]
        last = blend["first_block"] + 6  # past where the blend would have ramped to its prompt
        blocks, others = _events_until(sub, last, timeout=90)
    applied = [e["epoch"] for e in others if e.get("event") == "prompt_applied"]
    superseded = [e for e in others if e.get("event") == "prompt_superseded"]
    assert last in blocks, f"block {last} never emitted"
    assert superseded == [{"event": "prompt_superseded", "epochs": [blend["epoch"]], "by": cut["epoch"]}]
    assert cut["epoch"] in applied and blend["epoch"] not in applied
    for n in range(cut["first_block"], last + 1):
        assert (blocks[n]["epoch"], blocks[n]["prompt"]) == (cut["epoch"], "a green circle moving down on a black "
                                                                          "background"), blocks[n]


def test_malformed_control_messages_get_errors_while_frames_keep_flowing(daemon):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(daemon.control)
    bad = [b"not json", b"[1,2]", b'{"cmd":"nope"}', b'{"cmd":"set_prompt","prompt":""}',
           b'{"cmd":"set_prompt","prompt":"x","mode":"sideways"}', b'{"cmd":"set_prompt","prompt":"x","at_block":-1}',
           b'{"cmd":"set_prompt","prompt":"x","at_block":1e400}', b'{"cmd":"set_prompt","prompt":true}',
           b'{"cmd":"set_prompt","prompt":"' + b"y" * 5000 + b'"}', b'{"cmd":"set_prompt","prompt":"x","at_block":0}',
           b"\xff\xfe", b'{"cmd":"pause","extra":1}']
    with VideoSubscriber(daemon.publish, topics=(b"events",)) as sub:
        _collect(sub, want_video=0, want_blocks=1)
        for body in bad:
            s.send_multipart([b"", body])
            assert s.poll(10_000), f"no reply to {body[:40]!r}"
            reply = json.loads(s.recv_multipart()[-1])
            assert reply["ok"] is False and reply["error"], (body[:40], reply)
        _, events = _collect(sub, want_video=0, want_blocks=2, timeout=30)
    s.close()
    assert len([e for e in events if e.get("event") == "block"]) >= 2


def test_pause_and_resume(daemon):
    with ControlClient(daemon.control) as c:
        assert c.pause()["paused"] is True
    # the engine confirms it is paused, then loops paused three more times: no tick may happen meanwhile
    st = daemon.wait_status(lambda s: s["paused"] and s["paused_checks"] > 0, "the engine paused")
    paused = daemon.wait_status(lambda s: s["paused_checks"] >= st["paused_checks"] + 3, "three paused loops")
    assert paused["ticks"] == st["ticks"] and paused["state"] == "paused"
    assert paused["blocks_emitted"] - st["blocks_emitted"] <= 1  # at most the block already being decoded
    with ControlClient(daemon.control) as c:
        assert c.resume()["paused"] is False
    daemon.wait_status(lambda s: s["blocks_emitted"] > paused["blocks_emitted"] and s["ticks"] > paused["ticks"],
                       "blocks after the resume")
