"""streamer.protocol: every malformed request is a ProtocolError with a useful message; good ones parse."""
import json
import math

import pytest

from pipeline.config import MAX_PROMPT_CHARS
from streamer.protocol import (
    DEFAULT_BLEND_BLOCKS,
    MAX_AT_BLOCK,
    MAX_MESSAGE_BYTES,
    Pause,
    ProtocolError,
    Resume,
    SetPrompt,
    Status,
    encode_reply,
    error_reply,
    parse_request,
)


def j(obj) -> bytes:
    return json.dumps(obj).encode()


GOOD = [
    (j({"cmd": "status"}), Status()),
    (j({"cmd": "pause"}), Pause()),
    (j({"cmd": "resume", "id": 7}), Resume(id=7)),
    (j({"cmd": "status", "id": "abc"}), Status(id="abc")),
    (j({"cmd": "status", "id": "x" * 128}), Status(id="x" * 128)),
    (j({"cmd": "status", "id": -(2**63 - 1)}), Status(id=-(2**63 - 1))),
    (j({"cmd": "set_prompt", "prompt": "a cat"}), SetPrompt("a cat")),
    (j({"cmd": "set_prompt", "prompt": "  a cat \n"}), SetPrompt("a cat")),
    (j({"cmd": "set_prompt", "prompt": "a cat", "mode": "queue"}), SetPrompt("a cat", "queue")),
    (j({"cmd": "set_prompt", "prompt": "a cat", "mode": "cut"}), SetPrompt("a cat", "cut")),
    (j({"cmd": "set_prompt", "prompt": "a cat", "mode": "blend"}), SetPrompt("a cat", "blend", DEFAULT_BLEND_BLOCKS)),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": 1}), SetPrompt("a", "blend", 1)),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": 10000}), SetPrompt("a", "blend", 10000)),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": 0}), SetPrompt("a", at_block=0)),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": MAX_AT_BLOCK}), SetPrompt("a", at_block=MAX_AT_BLOCK)),
    (j({"cmd": "set_prompt", "prompt": "p" * MAX_PROMPT_CHARS, "id": 1}), SetPrompt("p" * MAX_PROMPT_CHARS, id=1)),
    (j({"cmd": "set_prompt", "prompt": "日本の海 🌊"}), SetPrompt("日本の海 🌊")),
    (b'  {"cmd":"status"}  \n', Status()),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "cut", "wait": True}), SetPrompt("a", "cut", wait=True)),
    (j({"cmd": "set_prompt", "prompt": "a", "wait": False}), SetPrompt("a")),
]


@pytest.mark.parametrize("raw,expected", GOOD)
def test_good_requests(raw, expected):
    req = parse_request(raw)
    assert req == expected
    assert type(req) is type(expected)


# (raw bytes, substring the error must contain)
BAD = [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"cmd":"status"', "invalid JSON"),
    (b"not json", "invalid JSON"),
    (b"{'cmd': 'status'}", "invalid JSON"),
    (b"[]", "JSON object"),
    (b'"status"', "JSON object"),
    (b"42", "JSON object"),
    (b"null", "JSON object"),
    (b"true", "JSON object"),
    (b"{}", "missing 'cmd'"),
    (j({"command": "status"}), "missing 'cmd'"),
    (j({"cmd": None}), "'cmd' must be a string"),
    (j({"cmd": 1}), "'cmd' must be a string"),
    (j({"cmd": ["status"]}), "'cmd' must be a string"),
    (j({"cmd": "STATUS"}), "unknown cmd"),
    (j({"cmd": "shutdown"}), "unknown cmd"),
    (j({"cmd": ""}), "unknown cmd"),
    (j({"cmd": "status", "verbose": True}), "unknown field"),
    (j({"cmd": "pause", "prompt": "x"}), "unknown field"),
    (j({"cmd": "set_prompt", "prompt": "x", "promt": "y"}), "'promt'"),
    (b'{"cmd":"status","cmd":"pause"}', "duplicate field 'cmd'"),
    (j({"cmd": "set_prompt"}), "needs 'prompt'"),
    (j({"cmd": "set_prompt", "prompt": ""}), "must not be empty"),
    (j({"cmd": "set_prompt", "prompt": " \t\n "}), "must not be empty"),
    (j({"cmd": "set_prompt", "prompt": None}), "'prompt' must be a string"),
    (j({"cmd": "set_prompt", "prompt": 5}), "'prompt' must be a string"),
    (j({"cmd": "set_prompt", "prompt": ["a"]}), "'prompt' must be a string"),
    (j({"cmd": "set_prompt", "prompt": {"text": "a"}}), "'prompt' must be a string"),
    (j({"cmd": "set_prompt", "prompt": "p" * (MAX_PROMPT_CHARS + 1)}), f"longer than {MAX_PROMPT_CHARS}"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "hard"}), "'mode' must be one of"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "SOFT"}), "'mode' must be one of"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": ""}), "'mode' must be one of"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": None}), "'mode' must be a string"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": 1}), "'mode' must be a string"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": 0}), "'blocks' must be in 1..10000"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": -3}), "'blocks' must be in 1..10000"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": 10001}), "'blocks' must be in 1..10000"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": 4.0}), "'blocks' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": "4"}), "'blocks' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": True}), "'blocks' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "blend", "blocks": None}), "'blocks' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "blocks": 4}), "only valid with mode 'blend'"),
    (j({"cmd": "set_prompt", "prompt": "a", "mode": "cut", "blocks": 4}), "only valid with mode 'blend'"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": -1}), "'at_block' must be in 0.."),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": MAX_AT_BLOCK + 1}), "'at_block' must be in 0.."),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": 10**300}), "'at_block' must be in 0.."),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": False}), "'at_block' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": True}), "'at_block' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": 12.0}), "'at_block' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": 1e20}), "'at_block' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": "12"}), "'at_block' must be an integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "at_block": [12]}), "'at_block' must be an integer"),
    (b'{"cmd":"set_prompt","prompt":"a","at_block":NaN}', "NaN is not allowed"),
    (b'{"cmd":"set_prompt","prompt":"a","at_block":Infinity}', "Infinity is not allowed"),
    (b'{"cmd":"set_prompt","prompt":"a","at_block":-Infinity}', "-Infinity is not allowed"),
    (b'{"cmd":"set_prompt","prompt":"a","at_block":1e999}', "out of range"),
    (b'{"cmd":"status","id":' + b"9" * 5000 + b"}", "invalid JSON"),
    (b"[" * 50000 + b"]" * 50000, "too large"),
    (b"[" * 30000 + b"]" * 30000, "invalid JSON"),
    (b'{"a":' * 10000 + b"1" + b"}" * 10000, "invalid JSON"),
    (j({"cmd": "status", "pad": "x" * MAX_MESSAGE_BYTES}), "too large"),
    (j({"cmd": "status", "id": True}), "'id' must be a string or an integer"),
    (j({"cmd": "status", "id": None}), "'id' must be a string or an integer"),
    (j({"cmd": "status", "id": 1.5}), "'id' must be a string or an integer"),
    (j({"cmd": "status", "id": {"a": 1}}), "'id' must be a string or an integer"),
    (j({"cmd": "status", "id": "x" * 129}), "at most 128 characters"),
    (j({"cmd": "status", "id": 2**63}), "'id' integer is out of range"),
    (j({"cmd": {"nested": [1, {"deep": [None, True, {"x": []}]}]}}), "'cmd' must be a string"),
    (j({"cmd": "set_prompt", "prompt": [[[[{"a": [1, 2, {"b": None}]}]]]]}), "'prompt' must be a string"),
    (j({"cmd": "set_prompt", "prompt": "a", "wait": 1}), "'wait' must be true or false, got integer"),
    (j({"cmd": "set_prompt", "prompt": "a", "wait": "yes"}), "'wait' must be true or false, got string"),
    (j({"cmd": "set_prompt", "prompt": "a", "wait": None}), "'wait' must be true or false, got null"),
    (j({"cmd": "set_prompt", "prompt": "a", "wait": True, "at_block": 9}), "'wait' is only for changes now"),
    (j({"cmd": "status", "wait": True}), "unknown field(s) for status: 'wait'"),
]


@pytest.mark.parametrize("raw,needle", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_requests(raw, needle):
    with pytest.raises(ProtocolError) as info:
        parse_request(raw)
    message = info.value.message
    assert needle in message
    assert "\n" not in message and len(message) < 300  # one line, never an echo of a huge input


def test_not_bytes_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="must be bytes"):
        parse_request('{"cmd":"status"}')  # type: ignore[arg-type]
    assert parse_request(bytearray(b'{"cmd":"status"}')) == Status()
    assert parse_request(memoryview(b'{"cmd":"pause"}')) == Pause()


def test_size_limit_is_exact():
    base = j({"cmd": "status", "id": ""})
    assert len(base) < MAX_MESSAGE_BYTES
    padded = base[:-1] + b" " * (MAX_MESSAGE_BYTES - len(base)) + b"}"
    assert len(padded) == MAX_MESSAGE_BYTES
    assert parse_request(padded) == Status(id="")
    with pytest.raises(ProtocolError, match="too large"):
        parse_request(padded[:-1] + b" }")


def test_error_keeps_request_id_when_readable():
    with pytest.raises(ProtocolError) as info:
        parse_request(j({"cmd": "set_prompt", "prompt": "", "id": "req-9"}))
    assert info.value.id == "req-9"
    with pytest.raises(ProtocolError) as info:
        parse_request(j({"cmd": "nope", "id": 12}))
    assert info.value.id == 12
    with pytest.raises(ProtocolError) as info:
        parse_request(j({"cmd": "status", "id": True}))
    assert info.value.id is None


def test_to_dict_round_trips():
    for req in (SetPrompt("a b", "blend", 7, 99, id="q"), SetPrompt("x", at_block=0), SetPrompt("x", wait=True),
                Status(id=3), Pause(), Resume()):
        assert parse_request(j(req.to_dict())) == req
    assert SetPrompt("x").to_dict() == {"cmd": "set_prompt", "prompt": "x", "mode": "soft"}


def test_command_types_are_distinct():
    assert not isinstance(Pause(), Status) and not isinstance(Resume(), Status)
    assert {Status.cmd, Pause.cmd, Resume.cmd, SetPrompt.cmd} == {"status", "pause", "resume", "set_prompt"}


def test_error_reply():
    assert error_reply("bad") == {"ok": False, "error": "bad"}
    assert error_reply("bad", id=5) == {"ok": False, "error": "bad", "id": 5}
    assert error_reply("bad", id="") == {"ok": False, "error": "bad", "id": ""}


def test_encode_reply_is_strict_json():
    raw = encode_reply({"ok": True, "fps": math.nan, "lag": math.inf, "ranks": ({"ms": -math.inf},), "p": "é"})
    assert b"NaN" not in raw and b"Infinity" not in raw
    assert json.loads(raw) == {"ok": True, "fps": None, "lag": None, "ranks": [{"ms": None}], "p": "é"}
    with pytest.raises(TypeError):
        encode_reply({"ok": True, "obj": object()})


def test_cancel_and_token_fields_and_http_statuses():
    from streamer.protocol import Cancel

    assert parse_request(b'{"cmd":"cancel","epoch":3,"id":1}') == Cancel(epoch=3, id=1)
    assert parse_request(b'{"cmd":"cancel","all":true,"token":"t"}') == Cancel(all=True, token="t")
    assert Cancel(all=True, token="t").to_dict() == {"cmd": "cancel", "all": True, "token": "t"}
    for raw, status, needle in ((b'{"cmd":"cancel"}', 422, "either 'epoch' or 'all'"),
                                (b'{"cmd":"cancel","epoch":1,"all":true}', 422, "either"),
                                (b'{"cmd":"cancel","all":false}', 422, "'all' must be true"),
                                (b'{"cmd":"status","token":7}', 422, "'token' must be a string"),
                                (b'{"cmd":"set_prompt","prompt":"a","wait":0}', 422, "'wait' must be true or false"),
                                (b"{nope", 400, "invalid JSON"), (b"[]", 400, "JSON object"),
                                (b"x" * 70_000, 413, "too large")):
        with pytest.raises(ProtocolError) as e:
            parse_request(raw)
        assert e.value.status == status and needle in e.value.message, raw[:30]


def test_a_client_cannot_set_the_fields_the_daemon_sets():
    with pytest.raises(ProtocolError, match="unknown field.*'client'"):
        parse_request(b'{"cmd": "set_prompt", "prompt": "x", "client": "someone else"}')
