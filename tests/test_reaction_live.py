"""Reaction time against a real daemon (the random tiny model, real sockets on 127.0.0.1): `streamer prompt --wait`,
the figures in status and /metrics, the prompt_on_stream event, waiting over HTTP, a cancelled change, shutdown;
and the pacer's lead in use."""
import json
import re
import subprocess
import sys
import time
import urllib.request

import zmq
from prometheus_client.parser import text_string_to_metric_families

from clients.client import ControlClient, VideoSubscriber
from conftest import ROOT, DaemonProc

HANG = 120.0  # seconds: only a guard against hangs


def _event(sub, pred, what: str) -> dict:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        msg = sub.recv(timeout=1.0)
        if msg is not None and pred(msg[1]):
            return msg[1]
    raise AssertionError(f"no {what} event within {HANG:g} s")


def _metrics(daemon) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=10) as r:
        fam = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam["streamer_prompt_reaction_seconds"].samples}


def test_prompt_wait_prints_the_reaction_and_status_and_metrics_show_it(daemon):
    r = subprocess.run([sys.executable, "-m", "clients", "prompt", "a blue square moving up on a gray background",
                        "--wait", "--control", daemon.control], cwd=ROOT, capture_output=True, text=True,
                       timeout=HANG + 30)
    assert r.returncode == 0, r.stderr
    m = re.search(r"epoch (\d+), first block (\d+)\n.*on the stream at block (\d+): reaction ([\d.]+) s \(daemon\), "
                  r"round trip ([\d.]+) s", r.stdout, re.S)
    assert m, r.stdout
    epoch, first, block, reaction, round_trip = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])
    assert block == first  # the acknowledged block is the first one on the stream with the change
    assert 0 < reaction <= round_trip  # the client's round trip holds the daemon's reaction

    with ControlClient(daemon.control) as c:
        st = c.status()["reaction"]
    assert st["count"] >= 1 and st["pending"] == 0 and st["waiting"] == 0
    assert st["by_mode"]["soft"]["count"] >= 1 and st["last_s"] == reaction
    assert st["median_s"] is not None and st["by_mode"]["cut"]["count"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/status", timeout=10) as resp:
        assert json.loads(resp.read())["reaction"]["last_s"] == reaction  # /status and the status command agree
    samples = _metrics(daemon)
    assert samples[("streamer_prompt_reaction_seconds_count", (("mode", "soft"),))] >= 1
    assert samples[("streamer_prompt_reaction_seconds_sum", (("mode", "soft"),))] >= reaction - 1e-3  # (rounded)
    assert samples[("streamer_prompt_reaction_seconds_bucket", (("le", "+Inf"), ("mode", "cut")))] == 0
    assert epoch >= 1


def test_a_waiting_cut_gets_on_stream_and_an_event_with_the_same_figures(daemon):
    with VideoSubscriber(daemon.publish, topics=(b"events",)) as sub, ControlClient(daemon.control) as c:
        _event(sub, lambda e: e.get("event") == "block", "block")  # subscribed and flowing
        reply = c.set_prompt("a white triangle moving down on a navy background", mode="cut", wait=True)
        assert reply["ok"] is True, reply
        on = reply["on_stream"]
        ev = _event(sub, lambda e: e.get("event") == "prompt_on_stream" and e["epoch"] == reply["epoch"],
                    "prompt_on_stream")
    assert on["block"] == reply["first_block"] and on["reaction_s"] > 0
    assert ev == {"event": "prompt_on_stream", "epoch": reply["epoch"], "block": on["block"], "mode": "cut",
                  "reaction_s": on["reaction_s"]}
    with ControlClient(daemon.control) as c:
        assert c.status()["reaction"]["by_mode"]["cut"]["last_s"] == on["reaction_s"]


def test_wait_over_http_control(daemon):
    body = json.dumps({"cmd": "set_prompt", "prompt": "a red circle moving right", "mode": "queue",
                       "wait": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{daemon.http_port}/control", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=HANG + 10) as r:
        reply = json.loads(r.read())
    assert reply["ok"] is True and reply["on_stream"]["block"] == reply["first_block"], reply
    bad = urllib.request.Request(f"http://127.0.0.1:{daemon.http_port}/control", headers={
        "Content-Type": "application/json"}, data=b'{"cmd":"set_prompt","prompt":"x","wait":"yes"}')
    try:
        urllib.request.urlopen(bad, timeout=30)
        raise AssertionError("a non-boolean wait was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 422 and "'wait' must be true or false" in json.loads(e.read())["error"]


def _send(sock, obj) -> None:
    sock.send_multipart([b"", json.dumps(obj).encode()])


def _reply(sock) -> dict:
    assert sock.poll(int(HANG * 1000)), "no reply"
    return json.loads(sock.recv_multipart()[-1])


def test_a_cancelled_change_answers_its_waiter_with_an_error(daemon):
    ctx = zmq.Context.instance()
    waiter = ctx.socket(zmq.DEALER)
    waiter.setsockopt(zmq.LINGER, 0)
    waiter.connect(daemon.control)
    prompt = "a magenta circle moving left on a black background"
    try:
        with ControlClient(daemon.control) as c, VideoSubscriber(daemon.publish, topics=(b"events",)) as sub:
            _event(sub, lambda e: e.get("event") == "block", "block")
            assert c.pause()["paused"] is True
            daemon.wait_status(lambda s: s["paused"] and s["paused_checks"] > 0, "the engine paused")
            _send(waiter, {"cmd": "set_prompt", "prompt": prompt, "wait": True, "id": "w"})
            # paused: no tick boundary, so the change is still pending and can be withdrawn
            epoch = _event(sub, lambda e: e.get("event") == "prompt_accepted" and e["prompt"] == prompt,
                           "prompt_accepted")["epoch"]
            assert c.cancel(epoch)["cancelled"] == [epoch]
            got = _reply(waiter)
            assert c.resume()["paused"] is False
            st = c.status()["reaction"]
    finally:
        waiter.close(linger=0)
    assert got["ok"] is False and got["id"] == "w" and got["epoch"] == epoch
    assert f"change {epoch} was cancelled before it reached the stream" in got["error"]
    assert st["pending"] == 0 and st["waiting"] == 0


def test_the_pacers_lead_fits_the_stream(daemon):
    """Auto (the default): a full tick of the tiny model on this CPU plus the decode spread and 0.1 s, well under
    the 2 s held until four full ticks were seen."""
    st = daemon.wait_status(lambda s: s["ticks"] > s["config"]["steps"] + 8, "full ticks")
    assert 1 / 8 <= st["pace_lead_s"] < 2.0, st["pace_lead_s"]
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=10) as r:
        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    assert 1 / 8 <= fams["streamer_pace_lead_seconds"].samples[0].value < 2.0


def test_a_waiter_is_answered_when_the_daemon_stops():
    d = DaemonProc("--lead", "0.5", http=False)  # (a fixed lead, checked below)
    ctx = zmq.Context.instance()
    waiter = ctx.socket(zmq.DEALER)
    waiter.setsockopt(zmq.LINGER, 0)
    try:
        assert d.wait_streaming()["pace_lead_s"] == 0.5
        with ControlClient(d.control) as c:
            assert c.pause()["paused"] is True  # the change cannot reach the stream
            waiter.connect(d.control)
            _send(waiter, {"cmd": "set_prompt", "prompt": "a green square moving up", "wait": True})
            # accepted by the engine (pending) and waiting for the stream
            d.wait_status(lambda s: s["reaction"]["waiting"] == 1 and s["reaction"]["pending"] == 1,
                          "the request waiting")
        d.proc.terminate()
        got = _reply(waiter)
        assert d.proc.wait(HANG) == 0, d.log()
    finally:
        waiter.close(linger=0)
        d.stop()
    assert got["ok"] is False and "the daemon is stopping before change" in got["error"], got
