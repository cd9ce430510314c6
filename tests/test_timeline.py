"""clients.timeline: file loading (pure) and running it through ControlClient against a real ROUTER socket."""
import json
import threading
import time
from pathlib import Path

import pytest
import zmq

from clients.client import ClientTimeout, ControlClient
from clients.timeline import Entry, TimelineError, load_timeline, run_timeline

EXAMPLE = Path(__file__).resolve().parents[1] / "clients" / "examples" / "timeline.toml"


def write(tmp_path, text, name="t.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["timeline.toml", "timeline_toyworld.toml"])
def test_example_file_loads(name):
    entries = load_timeline(EXAMPLE.with_name(name))
    assert len(entries) >= 3
    assert [e.number for e in entries] == list(range(1, len(entries) + 1))
    assert all(e.prompt and (e.at is None) != (e.at_block is None) for e in entries)
    ats = [e.at for e in entries if e.at is not None]
    assert ats == sorted(ats)
    assert {e.mode for e in entries} <= {"soft", "queue", "blend", "cut"}
    if "toyworld" in name:  # the default model's example speaks its grammar
        from pipeline.toyworld.world import parse_prompt

        for e in entries:
            parse_prompt(e.prompt)


def test_toml_entries(tmp_path):
    p = write(tmp_path, """
[[entry]]
at = 0
prompt = "  first  "

[[entry]]
at_block = 40
prompt = "second"
mode = "blend"

[[entry]]
at = 2.5
prompt = "third"
mode = "blend"
blocks = 9
""")
    assert load_timeline(p) == [
        Entry("first", at=0.0, number=1),
        Entry("second", "blend", 4, at_block=40, number=2),
        Entry("third", "blend", 9, at=2.5, number=3),
    ]


def test_json_entries(tmp_path):
    data = [{"at": 1, "prompt": "a"}, {"at_block": 3, "prompt": "b", "mode": "cut"}]
    expected = [Entry("a", at=1.0, number=1), Entry("b", "cut", at_block=3, number=2)]
    assert load_timeline(write(tmp_path, json.dumps(data), "t.json")) == expected
    assert load_timeline(write(tmp_path, json.dumps({"entry": data}), "u.json")) == expected
    assert load_timeline(write(tmp_path, json.dumps(data), "t.timeline")) == expected  # sniffed


ENTRY1 = '[[entry]]\nat = 0\nprompt = "ok"\n\n'

# (file name, content, substrings the one-line error must contain)
BAD = [
    ("t.toml", ENTRY1 + '[[entry]]\nat = 1\nprompt = "x\n', ["t.toml", "invalid TOML", "line 7"]),
    ("t.toml", ENTRY1 + '[[entry]]\nprompt = "x"\n', ["t.toml:5: entry 2", "exactly one of 'at'"]),
    ("t.toml", ENTRY1 + '[[entry]]\nat = 1\nat_block = 2\nprompt = "x"\n', ["t.toml:5: entry 2", "exactly one"]),
    ("t.toml", '[[entry]]\nat = -1\nprompt = "x"\n', ["t.toml:1: entry 1", "'at' must be a non-negative"]),
    ("t.toml", '[[entry]]\nat = true\nprompt = "x"\n', ["entry 1", "'at' must be a non-negative"]),
    ("t.toml", '[[entry]]\nat = "5s"\nprompt = "x"\n', ["entry 1", "'at' must be a non-negative"]),
    ("t.toml", '[[entry]]\nat = inf\nprompt = "x"\n', ["entry 1", "'at' must be a non-negative"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "   "\n', ["entry 1", "'prompt' must not be empty"]),
    ("t.toml", '[[entry]]\nat = 0\n', ["entry 1", "needs 'prompt'"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = 3\n', ["entry 1", "'prompt' must be a string"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "' + "p" * 2001 + '"\n', ["entry 1", "longer than 2000"]),
    ("t.toml", ENTRY1 + '[[entry]]\nat = 1\npromt = "x"\n', ["t.toml:5: entry 2", "unknown key(s) 'promt'"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "x"\nmode = "fade"\n', ["entry 1", "'mode' must be one of"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "x"\nblocks = 3\n', ["entry 1", "only valid with mode 'blend'"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "x"\nmode = "blend"\nblocks = 0\n', ["entry 1", "'blocks' must be in"]),
    ("t.toml", '[[entry]]\nat_block = -4\nprompt = "x"\n', ["entry 1", "'at_block' must be in"]),
    ("t.toml", '[[entry]]\nat_block = 4.0\nprompt = "x"\n', ["entry 1", "'at_block' must be an integer"]),
    ("t.toml", '[[entry]]\nat = 0\nprompt = "x"\nmode = 1979-05-27\n', ["entry 1", "unsupported value"]),
    ("t.toml", ENTRY1 + '[[entry]]\nat = 10\nprompt = "b"\n\n[[entry]]\nat = 5\nprompt = "c"\n',
     ["t.toml:9: entry 3", "at=5 comes before entry 2's at=10"]),
    ("t.toml", "", ["t.toml", "no entries"]),
    ("t.toml", 'title = "x"\n' + ENTRY1, ["unknown top-level key(s) 'title'"]),
    ("t.toml", '[entry]\nat = 0\nprompt = "x"\n', ["'entry' must be a list"]),
    ("t.json", '[\n{"at": 0, "prompt": "a"},\n{"at": 1 "prompt": "b"}\n]', ["t.json:3: invalid JSON"]),
    ("t.json", '[{"at": NaN, "prompt": "a"}]', ["t.json: entry 1", "'at' must be a non-negative"]),
    ("t.json", '["a prompt"]', ["t.json: entry 1", "must be a table/object"]),
    ("t.json", '{"entries": []}', ["unknown top-level key(s) 'entries'"]),
    ("t.txt", "neither toml = nor json {", ["t.txt", "invalid TOML"]),
]


@pytest.mark.parametrize("name,text,needles", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_files(tmp_path, name, text, needles):
    with pytest.raises(TimelineError) as info:
        load_timeline(write(tmp_path, text, name))
    message = str(info.value)
    for needle in needles:
        assert needle in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(TimelineError, match="cannot read"):
        load_timeline(tmp_path / "nope.toml")


class Daemon:
    """A real ROUTER socket in a thread answering set_prompt like the daemon; records (request, clock())."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.got = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            *envelope, body = self.sock.recv_multipart()
            req = json.loads(body)
            self.got.append((req, self.clock()))
            if req["prompt"] == "reject":
                reply = {"ok": False, "error": "at_block 2 is in the past", "id": req["id"]}
            else:
                reply = {"ok": True, "epoch": len(self.got), "first_block": 10 + len(self.got), "id": req["id"]}
            self.sock.send_multipart(envelope + [json.dumps(reply).encode()])

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.sock.close()
        self.ctx.term()


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_run_timeline_order_and_timing_with_injected_clock():
    clock = FakeClock()
    daemon = Daemon(clock)
    entries = [
        Entry("a", at=0.0, number=1),
        Entry("b", "blend", 4, at_block=50, number=2),
        Entry("c", at=7.5, number=3),
        Entry("reject", at_block=2, number=4),
        Entry("d", "cut", at=7.5, number=5),
        Entry("e", at=20.0, number=6),
    ]
    lines = []
    try:
        with ControlClient(daemon.address, timeout=10) as client:
            results = run_timeline(entries, client, clock=clock, sleep=clock.sleep, log=lines.append)
    finally:
        daemon.close()
    sent = [(req["prompt"], req.get("mode"), req.get("blocks"), req.get("at_block"), t - 100.0)
            for req, t in daemon.got]
    assert sent == [
        ("b", "blend", 4, 50, 0.0),  # at_block entries go first, at once
        ("reject", "soft", None, 2, 0.0),
        ("a", "soft", None, None, 0.0),
        ("c", "soft", None, None, 7.5),
        ("d", "cut", None, None, 7.5),
        ("e", "soft", None, None, 20.0),
    ]
    assert clock.sleeps == [7.5, 12.5]
    assert [e.prompt for e, _ in results] == ["b", "reject", "a", "c", "d", "e"]
    assert [r["ok"] for _, r in results] == [True, False, True, True, True, True]
    assert "id" not in results[0][1]  # the client's own request ids are not leaked
    assert len(lines) == 6
    assert "ERROR: at_block 2 is in the past" in lines[1]
    assert "first block 11" in lines[0] and "entry 2" in lines[0]


def test_run_timeline_real_clock_against_router():
    daemon = Daemon()
    entries = [Entry("one", at=0.0, number=1), Entry("two", at=0.05, number=2), Entry("three", at_block=9, number=3)]
    try:
        with ControlClient(daemon.address, timeout=10) as client:
            results = run_timeline(entries, client, log=lambda line: None)
    finally:
        daemon.close()
    assert [req["prompt"] for req, _ in daemon.got] == ["three", "one", "two"]
    assert daemon.got[2][1] >= daemon.got[1][1]
    assert all(r["ok"] for _, r in results)


def test_run_timeline_without_daemon_raises_timeout():
    ctx = zmq.Context()
    port_holder = ctx.socket(zmq.ROUTER)
    addr = port_holder.bind_to_random_port("tcp://127.0.0.1")
    port_holder.close(linger=0)  # nobody listens on this port any more
    try:
        with ControlClient(f"tcp://127.0.0.1:{addr}", timeout=0.2, ctx=ctx) as client:
            with pytest.raises(ClientTimeout, match="no reply from tcp://127.0.0.1:.* within 0.2s"):
                run_timeline([Entry("x", at=0.0, number=1)], client, log=lambda line: None)
    finally:
        ctx.term()
