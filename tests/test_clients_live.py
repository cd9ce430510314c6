"""Client commands against a running daemon: record to MP4, run a timeline, the status table."""
import json
import subprocess
import sys

from clients.client import ControlClient
from clients.record import record
from clients.timeline import load_timeline, run_timeline
from conftest import ROOT


def test_record_writes_a_playable_mp4(daemon, tmp_path):
    out = tmp_path / "rec.mp4"
    n = record(str(out), daemon.publish, max_blocks=3, wait_timeout=30)
    assert n >= 8
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["streams"][0]
    assert s["codec_name"] == "h264" and int(s["nb_read_frames"]) == n


def test_timeline_schedules_changes_by_block(daemon, tmp_path):
    with ControlClient(daemon.control) as c:
        head = c.status()["next_block"]
        tl = tmp_path / "t.toml"
        tl.write_text(f'[[entry]]\nat_block = {head + 30}\nprompt = "a white star moving down"\nmode = "queue"\n'
                      f'[[entry]]\nat = 0\nprompt = "a yellow ball moving right"\nmode = "soft"\n')
        sent = run_timeline(load_timeline(tl), c, log=lambda *a: None)
        assert [reply["ok"] for _, reply in sent] == [True, True]
        assert sent[0][1]["first_block"] == head + 30


def test_status_command_prints_a_table_and_json(daemon):
    r = subprocess.run([sys.executable, "-m", "clients", "status", "--control", daemon.control], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "prompt" in r.stdout and "fps" in r.stdout
    r = subprocess.run([sys.executable, "-m", "clients", "status", "--json", "--control", daemon.control], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["ok"] is True
    # the daemon says where it listens, in one line a user can copy the addresses from
    assert (f"listening: control {daemon.control}, video (ZMQ PUB) {daemon.publish}, "
            f"HTTP http://127.0.0.1:{daemon.http_port}/ (the viewer") in daemon.log()


def test_prompt_command_reports_refusals(daemon):
    r = subprocess.run([sys.executable, "-m", "clients", "prompt", "x", "--at-block", "0", "--control",
                        daemon.control], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "past" in r.stderr


def test_cancel_withdraws_a_scheduled_change(daemon):
    with ControlClient(daemon.control) as c:
        head = c.status()["next_block"]
        ack = c.set_prompt("a green circle moving up", mode="queue", at_block=head + 500)
        assert ack["ok"], ack
    run = [sys.executable, "-m", "clients", "cancel", "--control", daemon.control]
    r = subprocess.run(run + [str(ack["epoch"])], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"cancelled the change of epoch {ack['epoch']}" in r.stdout, r.stderr
    r = subprocess.run(run + [str(ack["epoch"])], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no pending change" in r.stderr


def test_record_goes_on_across_a_daemon_restart(tmp_path):
    """`streamer record` keeps its file while the daemon is away; ZMQ reconnects, timestamps keep increasing."""
    import threading

    from conftest import DaemonProc, free_port

    out = tmp_path / "across.mp4"
    publish = f"tcp://127.0.0.1:{free_port()}"
    first = DaemonProc("--publish", publish, http=False)
    stop, result = threading.Event(), {}
    rec = threading.Thread(target=lambda: result.update(n=record(str(out), publish, stop_event=stop)))
    try:
        start = first.wait_streaming()["frames_published"]
        rec.start()
        before = first.wait_status(lambda s: s["blocks_published"] >= 5, "blocks before the restart")
        assert first.stop() == 0
        second = DaemonProc("--publish", publish, http=False)
        try:
            second.wait_status(lambda s: s["blocks_published"] >= 8, "blocks after the restart")
        finally:
            stop.set()
            rec.join(timeout=60)
            assert second.stop() == 0
    finally:
        stop.set()
        if first.proc.poll() is None:
            first.stop()
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "packet=pts", "-of", "json", str(out)],
                       capture_output=True, text=True, timeout=60)
    pts = [p["pts"] for p in json.loads(r.stdout)["packets"]]
    assert result["n"] == len(pts)
    # more than the first daemon can have given (its frames while recording, and two blocks of slack for the ones
    # published between the last status and its stop): the second daemon's frames are in the file too
    assert len(pts) > before["frames_published"] - start + 16, (len(pts), before["frames_published"], start)
    assert all(b > a for a, b in zip(pts, pts[1:]))  # one timeline across both daemons


def test_prompt_wait_without_a_daemon_says_so_at_once():
    """--wait without a daemon: the same "no reply" as without --wait, after the short timeout (it once waited
    130 s and then said the change was not confirmed, as if it had been sent)."""
    from conftest import free_port

    r = subprocess.run([sys.executable, "-m", "clients", "prompt", "x", "--wait", "--control",
                        f"tcp://127.0.0.1:{free_port()}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "within 5s (is the streamer daemon running?)" in r.stderr and "confirmed" not in r.stderr, r.stderr
