"""Nothing dies silently: each component of a real daemon is made to fail (common.faults) mid-stream, and the
daemon must exit non-zero with one log line naming the component and the cause. A component that hangs instead
makes the output stall: /status says so and the systemd watchdog stops being pinged."""
import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from clients.client import VideoSubscriber
from conftest import DaemonProc


def _first_block_event(d: DaemonProc, timeout=120.0) -> None:
    """Wait for the daemon's first `block` event on its PUB socket (the control socket may be the victim)."""
    with VideoSubscriber(d.publish, topics=(b"events",)) as sub:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert d.proc.poll() is None, f"daemon exited before streaming:\n{d.log()}"
            msg = sub.recv(timeout=1.0)
            if msg and msg[1].get("event") == "block":
                return
    raise AssertionError(f"no block within {timeout}s:\n{d.log()}")


def _get(d: DaemonProc, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}{path}", timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _send_control(d: DaemonProc):
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(d.control)
    s.send_multipart([b"", b'{"cmd":"status"}'])
    s.poll(5000)
    s.close()


def _post_offer(d: DaemonProc):
    from aiortc import RTCPeerConnection

    async def main():
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/offer", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        # the peer never connects: the hub's monitor loop runs (and fails) meanwhile
        await asyncio.get_running_loop().run_in_executor(None, d.proc.wait, 120)
        await pc.close()
    asyncio.run(main())


CASES = [  # fault spec, extra options, what makes the component run, the component named in the log
    ("decoder:3", [], None, "decoder"),
    ("engine:12", [], None, "engine rank 0"),
    ("rank1:60", ["--ranks", "2"], None, "engine rank 1"),
    ("encoder:3", [], None, "encoder"),
    ("fan-out:3", [], None, "fan-out"),
    ("stdout:4", ["--stdout", "mpegts"], None, "stdout"),
    ("zmq publisher:4", [], None, "zmq publisher"),
    ("engine link:60", [], None, "engine link"),
    ("control", [], _send_control, "control"),
    ("http", [], lambda d: _get(d, "/status"), "http"),
    ("webrtc", [], _post_offer, "webrtc"),
]


@pytest.mark.parametrize("fault, extra, trigger, component", CASES, ids=[c[3] for c in CASES])
def test_a_failing_component_ends_the_daemon_and_is_named(fault, extra, trigger, component):
    d = DaemonProc(*extra, env={"STREAMER_FAULTS": fault})
    try:
        _first_block_event(d)
        if trigger is not None:
            trigger(d)
        rc = d.proc.wait(timeout=60)
    finally:
        d.stop()
    log = d.log()
    assert rc == 1, log
    errors = [ln for ln in log.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, log
    assert f"{component} failed: InjectedFault: injected fault" in errors[0], log


def test_a_hung_component_stalls_the_output_and_starves_the_watchdog(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    d = DaemonProc(env={"STREAMER_FAULTS": "encoder:3:hang", "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    got = []

    def until(pred, what, timeout=120.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert d.proc.poll() is None, d.log()
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                continue
            if pred(got[-1]):
                return
        raise AssertionError(f"no {what} within {timeout}s: {got}\n{d.log()}")

    try:
        until(lambda m: "READY=1" in m, "READY")
        until(lambda m: m.startswith("WATCHDOG=1"), "watchdog ping")
        until(lambda m: "STATUS=stalled" in m, "stalled status")
        status = json.loads(_get(d, "/status")[1])
        metrics = _get(d, "/metrics")[1].decode()
        # three more health checks (each at least one watchdog interval's worth of chances to ping): none pinged
        later = d.wait_status(lambda s: s["watchdog"]["health_checks"] >= status["watchdog"]["health_checks"] + 3,
                              "three more health checks")
        sock.setblocking(False)
        after = []
        while True:
            try:
                after.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
        assert d.proc.poll() is None  # alive, but not pinging: systemd restarts it
        assert d.stop() == 0
    finally:
        sock.close()
        if d.proc.poll() is None:
            d.proc.kill()
    assert status["state"] == "stalled" and status["fps"] == 0.0, status
    assert status["last_block_age_s"] > status["stall_after_s"] > 0, status
    assert status["blocks_emitted"] > status["blocks_published"] == 2, status
    assert "\nstreamer_stalled 1.0\n" in metrics
    assert later["watchdog"]["pings"] == status["watchdog"]["pings"] > 0, (status["watchdog"], later["watchdog"])
    assert not any("WATCHDOG=1" in m for m in after), after
    assert "output stalled: no block published" in d.log()
