"""pipeline.wire: every engine ↔ daemon message round-trips, and malformed ones are refused with a reason."""
import dataclasses

import pytest

from pipeline import commands, wire

SAMPLES = [
    wire.Hello(config={"steps": 4}), wire.Progress(msg="loading", done=True), wire.Ready(first_block=0, ticks=8),
    wire.Frames(block=3, epoch=1, prompt="p", frames=2, height=2, width=2, tick=9, decode_ms=1.5, payload=bytes(24)),
    wire.Heartbeat(block=1, step=2), wire.Pacing(), wire.Stats(snapshot={"depth": 8, "ranks": []}),
    wire.PromptApplied(epoch=2, mode="cut", prompt="q", first_block=7), wire.PromptSuperseded(epochs=[1], by=2),
    wire.QueueFlushed(blocks=[7, 8]),
    wire.Command.of(commands.SetPrompt(prompt="x", mode="blend", blocks=4, client="zmq:1"), id=5),
    wire.Reply(id=5, body={"ok": True}), wire.Fatal(component="decoder", error="E: x"), wire.Alive(), wire.Bye(),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg):
    parts = wire.encode(msg)
    assert parts[0] == msg.kind and len(parts) == (3 if isinstance(msg, wire.Frames) else 2)
    assert wire.decode(parts) == msg


def test_each_kind_is_one_class():
    assert set(wire.MESSAGES.values()) == {type(m) for m in SAMPLES}
    assert len({c.kind for c in wire.MESSAGES.values()}) == len(wire.MESSAGES)


@pytest.mark.parametrize("parts, why", [
    ([b"frames"], "2 or 3 parts"),
    ([b"nope", b"{}"], "unknown message kind"),
    ([b"progress", b"{not json"], "not JSON"),
    ([b"progress", b"[1]"], "not a JSON object"),
    ([b"progress", b'{"msg": "x", "evil": 1}'], "unknown field"),
    ([b"ready", b'{"first_block": 1}'], "ticks"),
    ([b"frames", b'{"block":0,"epoch":0,"prompt":"","frames":1,"height":2,"width":2,"tick":0,"decode_ms":0}',
      bytes(11)], "payload of 11 bytes"),
    ([b"frames", b'{"block":0,"epoch":0,"prompt":"","frames":"a","height":2,"width":2,"tick":0,"decode_ms":0}',
      bytes(12)], "must be integers"),
    ([b"bye", b"{}", b"x"], "unexpected payload"),
    ([b"cmd", b'{"cmd": "reboot", "args": {}}'], "unknown command 'reboot'"),
    ([b"cmd", b'{"cmd": "set_prompt", "args": {"prompt": "x", "evil": 1}}'], "set_prompt: .*evil"),
    ([b"cmd", b'{"cmd": "set_prompt", "args": {}}'], "set_prompt: .*prompt"),
    ([b"cmd", b'{"cmd": "pause", "args": [1]}'], "args must be an object"),
])
def test_malformed_messages_are_refused(parts, why):
    with pytest.raises(wire.WireError, match=why):
        wire.decode(parts)


def test_frames_payload_is_not_in_the_header():
    parts = wire.encode(SAMPLES[3])
    assert b"payload" not in parts[1] and len(parts[2]) == 24
    assert {f.name for f in dataclasses.fields(wire.Frames)} - {"payload"} <= set(__import__("json").loads(parts[1]))


def test_every_engine_command_travels_typed():
    """A command the daemon forwards arrives as the same typed command (pipeline.commands), and the daemon's own
    fields (id, token, wait) stay behind."""
    req = commands.SetPrompt(prompt="x", mode="cut", id="c1", token="secret", wait=True)
    sent = req.for_engine("http:127.0.0.1")
    assert sent == commands.SetPrompt(prompt="x", mode="cut", client="http:127.0.0.1")
    got = wire.decode(wire.encode(wire.Command.of(sent, id=9)))
    assert got.id == 9 and got.command() == sent
    for cls in commands.ENGINE.values():
        cmd = cls(prompt="p") if cls is commands.SetPrompt else cls()
        assert wire.decode(wire.encode(wire.Command.of(cmd))).command() == cmd
    assert "client" not in commands.SetPrompt(prompt="p", client="x").to_dict()  # never in a client's request
