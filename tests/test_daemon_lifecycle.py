"""Daemon lifecycle: stdout streaming, SIGTERM, bad CLI values, systemd notify, a dying engine rank."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from conftest import ROOT, DaemonProc


def _probe(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["streams"][0]


def test_stdout_mpegts_into_ffmpeg_and_sigterm_finalises(tmp_path):
    out = tmp_path / "out.mp4"
    ff = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "mpegts", "-i", "-", "-c", "copy", str(out)],
                          stdin=subprocess.PIPE)
    d = DaemonProc("--stdout", "mpegts", http=False, stdout=ff.stdin)
    ff.stdin.close()  # the daemon holds the pipe's write end now
    try:
        d.wait_streaming()
        d.wait_status(lambda s: s["blocks_published"] >= 4, "a few published blocks")
        rc = d.stop(timeout=60)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    assert rc == 0, d.log()
    assert ff.wait(timeout=30) == 0
    s = _probe(out)
    assert s["codec_name"] == "h264" and (s["width"], s["height"]) == (64, 64)
    assert int(s["nb_read_frames"]) >= 16


def test_stdout_y4m(tmp_path):
    out = tmp_path / "out.y4m"
    with open(out, "wb") as f:
        d = DaemonProc("--stdout", "y4m", http=False, stdout=f)
        d.wait_streaming()
        d.wait_status(lambda s: s["blocks_published"] >= 2, "two published blocks")
        assert d.stop() == 0, d.log()
    assert out.read_bytes().startswith(b"YUV4MPEG2 W64 H64")
    s = _probe(out)
    assert int(s["nb_read_frames"]) >= 5


@pytest.mark.parametrize("args, needle", [
    (["--height", "100"], "--height must be a positive multiple of 16"),
    (["--block-frames", "2", "--context-frames", "17"], "--context-frames (17) may reach back at most 8 blocks"),
    (["--model", "/nonexistent/wan"], "no such directory"),
    (["--steps", "0"], "--steps"),
    (["--http", "nonsense"], "--http must be HOST:PORT"),
])
def test_bad_cli_values_fail_fast_with_one_line(args, needle):
    r = subprocess.run([sys.executable, "-m", "streamer", "serve", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_bad_config_file_fails_fast(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('height = "tall"\n')
    r = subprocess.run([sys.executable, "-m", "streamer", "serve", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "height must be int" in r.stderr


def test_systemd_notify_ready_after_first_block_and_watchdog(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    d = DaemonProc(http=False, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    got = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (any("READY=1" in m for m in got) and
                                                   sum("WATCHDOG=1" in m for m in got) >= 2):
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                assert d.proc.poll() is None, d.log()
        status = d.wait_streaming()
        assert d.stop() == 0
    finally:
        sock.close()
    ready = next(i for i, m in enumerate(got) if "READY=1" in m)
    assert status["blocks_emitted"] >= 1
    assert "first block" in got[ready]
    assert sum("WATCHDOG=1" in m for m in got) >= 2


@pytest.mark.parametrize("world, victim", [(1, 0), (2, 1), (3, 1)])
def test_killed_engine_rank_takes_the_daemon_down_without_orphans(world, victim):
    d = DaemonProc("--ranks", str(world), http=False)
    st = d.wait_streaming()
    assert [r["rank"] for r in st["ranks"]] == list(range(world))
    parent = psutil.Process(d.proc.pid)
    ranks = sorted((p for p in parent.children(recursive=True) if "pipeline.process.worker" in " ".join(p.cmdline())),
                   key=lambda p: int(p.environ().get("RANK", "0")))
    assert len(ranks) == world
    os.kill(ranks[victim].pid, signal.SIGKILL)
    rc = d.proc.wait(timeout=60)  # within seconds; the timeout only catches a hang
    assert rc != 0
    assert f"engine rank {victim}" in d.log() and "exited" in d.log()
    d.stop()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)


def test_two_ranks_prompt_change_pause_resume_and_clean_stop():
    from clients.client import ControlClient, VideoSubscriber

    d = DaemonProc("--ranks", "2", http=False)
    try:
        d.wait_streaming()
        with ControlClient(d.control) as c, VideoSubscriber(d.publish, topics=(b"events",)) as sub:
            ack = c.set_prompt("a magenta circle moving right", mode="soft")
            assert ack["ok"], ack
            seen = {}
            deadline = time.monotonic() + 60
            while ack["first_block"] not in seen and time.monotonic() < deadline:
                msg = sub.recv(timeout=1.0)
                if msg and msg[1].get("event") == "block":
                    seen[msg[1]["block"]] = msg[1]["epoch"]
            assert seen.get(ack["first_block"]) == ack["epoch"]
            assert c.pause()["paused"] is True
            assert c.resume()["paused"] is False
    finally:
        rc = d.stop()
    assert rc == 0, d.log()


def test_a_second_daemon_on_the_same_ports_exits_at_once(daemon):
    for args in (["--control", daemon.control], ["--publish", daemon.publish],
                 ["--http", f"127.0.0.1:{daemon.http_port}"], ["--publish", "garbage"]):
        d2 = DaemonProc(*args, http=False)
        try:
            rc = d2.proc.wait(timeout=60)  # within seconds; the timeout only catches a hang
        finally:
            d2.stop()
        assert rc == 2, (args, d2.log())
        lines = [ln for ln in d2.log().splitlines() if "ERROR" in ln]
        assert len(lines) == 1 and "cannot start" in lines[0], (args, d2.log())


@pytest.mark.parametrize("args, needle", [
    (["--http", "0.0.0.0:0"], "--http 0.0.0.0:0 is reachable from other machines"),
    (["--control", "tcp://0.0.0.0:5599"], "--control tcp://0.0.0.0:5599 is reachable"),
    (["--control", "tcp://*:5599"], "set a token"),
    (["--token-file", "/nonexistent/token"], "--token-file '/nonexistent/token'"),
])
def test_exposure_without_a_token_is_refused(args, needle):
    r = subprocess.run([sys.executable, "-m", "streamer", "serve", "--model", "tiny", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={**os.environ, "STREAMER_TOKEN": ""})
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_token_from_a_file_guards_control_and_http(tmp_path):
    from clients.client import ControlClient

    (tmp_path / "t").write_text("file-secret\n")
    d = DaemonProc("--token-file", str(tmp_path / "t"), token="file-secret")
    try:
        d.wait_streaming()
        with ControlClient(d.control, token="") as c:
            assert c.status() == {"ok": False, "error": "missing or wrong token"}
        with ControlClient(d.control, token="file-secret") as c:
            assert c.status()["ok"] is True
        import urllib.error
        import urllib.request
        base = f"http://127.0.0.1:{d.http_port}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/status", timeout=30)
        assert e.value.code == 401
        with urllib.request.urlopen(base + "/status?token=file-secret", timeout=30) as r:
            assert json.loads(r.read())["blocks_emitted"] >= 1
        assert "file-secret" not in " ".join(psutil.Process(d.proc.pid).cmdline())  # not in `ps`
    finally:
        assert d.stop() == 0, d.log()


def test_stdout_reader_going_away_ends_the_daemon_with_one_line():
    head = subprocess.Popen(["head", "-c", "20000"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    d = DaemonProc("--stdout", "mpegts", http=False, stdout=head.stdin)
    head.stdin.close()  # the daemon holds the pipe's write end now
    try:
        rc = d.proc.wait(timeout=120)  # head exits after 20 kB; the next write fails
    finally:
        d.stop()
        head.wait(timeout=30)
    assert rc == 1, d.log()
    errors = [ln for ln in d.log().splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and "stdout failed" in errors[0] and "went away" in errors[0], d.log()
    assert "Traceback" not in d.log(), d.log()  # the muxer's trailer, written after the reader left, failed too
