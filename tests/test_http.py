import asyncio
import json
import subprocess
import threading

import aiohttp
import prometheus_client

from transports.encoder import H264Encoder
from transports.fanout import FanOut
from transports.http import bound_port, build_app, start_http
from media import moving_gradient

W, H, FPS = 160, 96, 8


def frames(n, start):
    return moving_gradient(n, W, H, start)

class Producer(threading.Thread):
    """Encoder thread: blocks of frames -> encoder -> fanout, until stopped."""

    def __init__(self, fanout, enc):
        super().__init__(daemon=True)
        self.fanout, self.enc, self.stop = fanout, enc, threading.Event()

    def run(self):
        block = 0
        while not self.stop.wait(0.02):
            for p in self.enc.encode(frames(8, 8 * block), block=block, epoch=1):
                self.fanout.publish(p)
            block += 1


def test_stream_status_metrics_index(tmp_path):
    enc = H264Encoder(W, H, FPS, keyframe_interval_s=2.0)
    joins = []

    def on_subscribe(sub):
        joins.append(sub.name)
        enc.request_keyframe()

    fanout = FanOut(on_subscribe=on_subscribe)
    index = tmp_path / "index.html"
    index.write_text("<html>viewer</html>")

    async def main():
        results = {}
        app = build_app(fanout, lambda: {"ok": True, "block": 42},
                        lambda: "# TYPE streamer_blocks_total counter\nstreamer_blocks_total 42\n",
                        index_html_path=str(index))
        runner = await start_http(app, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{bound_port(runner)}"
        prod = Producer(fanout, enc)
        prod.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/stream.ts") as r:
                    results["ct"] = r.headers["Content-Type"]
                    data = bytearray()
                    async def read():
                        async for chunk in r.content.iter_chunked(4096):
                            data.extend(chunk)
                            if len(data) >= 120_000:
                                break
                    await asyncio.wait_for(read(), 60)
                    results["ts"] = bytes(data)
                # client gone: the server must unsubscribe (bounded wait)
                for _ in range(500):
                    if not fanout.subscribers:
                        break
                    await asyncio.sleep(0.01)
                results["subs_after"] = len(fanout.subscribers)
                async with s.get(base + "/status") as r:
                    results["status"] = (r.status, r.headers["Content-Type"], await r.json())
                async with s.get(base + "/metrics") as r:
                    results["metrics"] = (r.status, r.headers["Content-Type"], await r.text())
                async with s.get(base + "/") as r:
                    results["index"] = (r.status, await r.text())
                # a client still connected at shutdown does not hang cleanup
                r = await s.get(base + "/stream.ts")
                await r.content.readexactly(188)
                await asyncio.wait_for(runner.cleanup(), 30)
                r.close()
            app2 = build_app(fanout, dict, str)
            runner2 = await start_http(app2, "127.0.0.1", 0)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{bound_port(runner2)}/") as r:
                    results["no_index"] = r.status
            await runner2.cleanup()
        finally:
            prod.stop.set()
            prod.join(10)
        return results

    res = asyncio.run(main())
    assert res["ct"] == "video/mp2t"
    assert joins and joins[0].startswith("http:")
    ts = res["ts"]
    assert ts[0] == 0x47  # TS sync byte: the stream starts at a packet boundary
    path = tmp_path / "live.ts"
    path.write_bytes(ts)
    r = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-count_frames", "-of", "json",
                        str(path)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    st = json.loads(r.stdout)["streams"]
    assert len(st) == 1 and st[0]["codec_name"] == "h264"
    assert (st[0]["width"], st[0]["height"]) == (W, H)
    assert int(st[0]["nb_read_frames"]) >= 8
    assert res["subs_after"] == 0
    assert res["status"] == (200, "application/json; charset=utf-8", {"ok": True, "block": 42})
    code, ctype, text = res["metrics"]
    assert code == 200 and ctype == prometheus_client.CONTENT_TYPE_LATEST
    assert "\nstreamer_blocks_total 42\n" in text
    assert res["index"] == (200, "<html>viewer</html>")
    assert res["no_index"] == 404


def test_a_client_leaving_mid_request_costs_one_log_line_not_a_traceback(daemon):
    import socket as _socket
    import time as _time

    with _socket.create_connection(("127.0.0.1", daemon.http_port)) as s:
        s.sendall(b"POST /control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"cmd\"")
    deadline = _time.monotonic() + 60
    while "went away" not in daemon.log():  # the daemon notices the closed connection
        assert _time.monotonic() < deadline, daemon.log()
        _time.sleep(0.1)
    assert "Traceback" not in daemon.log()
    assert daemon.proc.poll() is None
