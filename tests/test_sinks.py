"""The daemon's outputs behind one interface (streamer.sinks): built from the options, reported alike over ZMQ
`status` and HTTP `/status`, stopped within their deadlines."""
import asyncio
import json
import urllib.request

from conftest import DaemonProc
from streamer.options import ServeOptions
from streamer.sinks import PushSink, StdoutSink, WebRTCSink, ZmqSink, build_sinks
from transports.fanout import FanOut
from transports.video_format import VideoFormat


def test_build_sinks_makes_what_the_options_ask_for():
    async def main():
        fanout, spawned = FanOut(), []

        def spawn(name, coro):
            spawned.append(name)
            return asyncio.ensure_future(coro)

        class Publisher:
            def send_packet(self, pkt):
                pass

        class Hub:
            def stats(self):
                return {"viewers": 0}

            async def close(self):
                pass

        opts = ServeOptions(push=["rtmp://127.0.0.1:1/live/key"], push_audio=False)
        sinks = build_sinks(opts, VideoFormat(32, 32, 8.0), fanout, Publisher(), spawn, lambda *a: None, hub=Hub())
        try:
            assert [type(s) for s in sinks] == [ZmqSink, PushSink, WebRTCSink] and spawned == ["zmq publisher"]
            assert sinks[1].name == "push rtmp://127.0.0.1:1" and "key" not in json.dumps(sinks[1].status())
            assert all(s.status()["kind"] == s.kind for s in sinks)
        finally:
            for s in sinks:
                await s.stop(5.0)
        assert sinks[0]._task.cancelled() and not sinks[1].pusher._thread.is_alive()

    asyncio.run(main())
    assert StdoutSink.kind == "stdout"


def test_zmq_status_and_http_status_report_the_same_outputs():
    d = DaemonProc()
    try:
        d.wait_streaming()
        zmq_st = d.wait_status(lambda s: any(o["kind"] == "zmq" and o["packets"] > 0 for o in s["outputs"]),
                               "packets on the ZMQ publisher")
        with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/status", timeout=30) as r:
            http_st = json.loads(r.read())
    finally:
        assert d.stop() == 0, d.log()
    for st in (zmq_st, http_st):
        assert [o["kind"] for o in st["outputs"]] == ["zmq", "webrtc"]
        assert st["webrtc"]["viewers"] == 0  # the WebRTC figures are in both now
