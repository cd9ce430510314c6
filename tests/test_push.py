"""--push: the daemon feeds a real RTMP server (ffmpeg listening), survives the server's death, reconnects to its
successor, and what the server receives is the stream's H.264 (with the silent AAC track asked for)."""
import json
import signal
import subprocess

import pytest

from conftest import DaemonProc, free_port


def _server(port, out):
    return subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-listen", "1", "-i", f"rtmp://127.0.0.1:{port}/live/s",
                             "-c", "copy", "-f", "flv", str(out)], stdin=subprocess.DEVNULL)


def _probe(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {s["codec_type"]: s for s in json.loads(r.stdout)["streams"]}


def test_push_reaches_a_server_and_comes_back_after_it_restarts(tmp_path):
    port = free_port()
    first = _server(port, tmp_path / "a.flv")
    d = DaemonProc("--push", f"rtmp://127.0.0.1:{port}/live/s", "--push-audio", http=False)
    second = None
    try:
        st = d.wait_status(lambda s: s["push"] and s["push"][0]["packets"] >= 24, "packets pushed")
        assert st["push"][0]["state"] == "streaming" and st["push"][0]["target"] == f"rtmp://127.0.0.1:{port}"
        first.send_signal(signal.SIGKILL)  # the server dies mid-stream
        first.wait(timeout=30)
        st = d.wait_status(lambda s: s["push"][0]["reconnects"] >= 1, "the push noticing")
        sent_before = st["push"][0]["packets"]
        second = _server(port, tmp_path / "b.flv")
        d.wait_status(lambda s: s["push"][0]["state"] == "streaming" and s["push"][0]["packets"] >= sent_before + 24,
                      "the push resuming")
        assert d.proc.poll() is None  # the daemon never stopped
    finally:
        rc = d.stop()
        if second is not None:
            second.wait(timeout=60)  # the daemon's stop closes the connection: the server finishes its file
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert rc == 0, d.log()
    streams = _probe(tmp_path / "b.flv")
    v = streams["video"]
    assert v["codec_name"] == "h264" and (v["width"], v["height"]) == (64, 64) and int(v["nb_read_frames"]) >= 24
    assert streams["audio"]["codec_name"] == "aac"


def test_a_failing_pusher_ends_the_daemon_and_is_named(tmp_path):
    """A push failure that is not the network's (here an injected fault while streaming) ends the daemon with one
    line naming it, as every other component's (tests/test_failures.py)."""
    port = free_port()
    server = _server(port, tmp_path / "a.flv")
    d = DaemonProc("--push", f"rtmp://127.0.0.1:{port}/live/s", http=False, env={"STREAMER_FAULTS": "push:12"})
    try:
        rc = d.proc.wait(timeout=180)  # connects (with back-off until ffmpeg listens), streams, fails
    finally:
        d.stop()
        server.kill()
        server.wait(timeout=30)
    log = d.log()
    errors = [ln for ln in log.splitlines() if " ERROR " in ln]
    assert rc == 1 and len(errors) == 1, log
    assert "push failed: InjectedFault: injected fault" in errors[0], log


@pytest.mark.parametrize("url", ["http://example.org/x", "rtmp://", "file:///tmp/x"])
def test_a_push_url_we_cannot_use_is_a_start_up_error(url):  # (srt:// too where FFmpeg lacks libsrt: see below)
    d = DaemonProc("--push", url, http=False)
    try:
        rc = d.proc.wait(timeout=60)
    finally:
        d.stop()
    assert rc == 2 and "cannot start: --push" in d.log(), d.log()


def test_srt_is_refused_at_start_when_ffmpeg_has_no_libsrt_and_pushed_otherwise():
    from transports.push import _has_protocol

    d = DaemonProc("--push", "srt://127.0.0.1:9000", http=False)
    try:
        if not _has_protocol("srt"):  # PyPI's PyAV wheels: the daemon says so and does not start
            assert d.proc.wait(timeout=60) == 2
            assert "has no srt protocol" in d.log()
        else:
            d.wait_streaming()
    finally:
        d.stop()
