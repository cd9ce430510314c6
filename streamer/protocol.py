"""Control protocol: one JSON object per request, one JSON object per reply (DESIGN.md section 4).

Pure code, no sockets. `parse_request` turns raw bytes into a typed request or raises `ProtocolError` with a
one-line message meant for the client; `encode_reply` turns a reply dict into strict JSON bytes.

Requests:
    {"cmd": "set_prompt", "prompt": str, "mode": "soft|queue|blend|cut", "blocks": int, "at_block": int,
     "wait": bool}       (wait: reply once the change is on the stream; changes "now" only, not with at_block)
    {"cmd": "cancel", "epoch": int}  {"cmd": "cancel", "all": true}   (scheduled changes not yet applied)
    {"cmd": "status"}  {"cmd": "pause"}  {"cmd": "resume"}
Every request may carry "id" (a string of at most 128 characters, or an integer), which the server echoes back,
and "token" (required by a daemon that has one). A ProtocolError's `status` is what HTTP answers with: 400 for
bytes that are no JSON object, 413 for too many of them, 422 for a JSON object that is no valid request.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Union

from pipeline.commands import CLIENT, INTERNAL, Cancel, Pause, Resume, SetPrompt, Status
from pipeline.config import MAX_PROMPT_CHARS
from pipeline.prompts import DEFAULT_BLEND_BLOCKS, DEFAULT_MODE, MODES  # defined once, with the prompt logic

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_ID_INT = 2**63 - 1
MAX_BLEND_BLOCKS = 10_000
MAX_AT_BLOCK = 2**53


class ProtocolError(ValueError):
    """A request that cannot be accepted. `message` is one line for the client; `id` is the request's id if it
    could be read (so the error reply can still echo it)."""

    def __init__(self, message: str, id: str | int | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.id = id
        self.status = status


Request = Union[SetPrompt, Cancel, Status, Pause, Resume]
COMMANDS = CLIENT  # every command a client may send, defined once (pipeline.commands)
_BARE = {c.cmd: c for c in (Status, Pause, Resume)}
_FIELDS = {name: {"cmd"} | ({f.name for f in dataclasses.fields(c)} - INTERNAL) for name, c in COMMANDS.items()}


def _reject_constant(name: str):
    raise ProtocolError(f"invalid JSON: {name} is not allowed", status=400)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"invalid JSON: number {text[:20]} is out of range", status=400)
    return value


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"duplicate field {key!r}", status=400)
        out[key] = value
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _int_field(data: dict, key: str, lo: int, hi: int, rid) -> int | None:
    if key not in data:
        return None
    value = data[key]
    if not _is_int(value):
        raise ProtocolError(f"{key!r} must be an integer, got {_type_name(value)}", rid)
    if not lo <= value <= hi:
        shown = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
        raise ProtocolError(f"{key!r} must be in {lo}..{hi}, got {shown}", rid)
    return value


def _parse_id(data: dict):
    if "id" not in data:
        return None
    rid = data["id"]
    if isinstance(rid, str):
        if len(rid) > MAX_ID_CHARS:
            raise ProtocolError(f"'id' must be at most {MAX_ID_CHARS} characters")
        return rid
    if _is_int(rid):
        if abs(rid) > MAX_ID_INT:
            raise ProtocolError("'id' integer is out of range")
        return rid
    raise ProtocolError(f"'id' must be a string or an integer, got {_type_name(rid)}")


def _decode(raw) -> dict:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"request must be bytes, got {type(raw).__name__}", status=400)
    raw = bytes(raw)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"request too large: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})", status=413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"request is not valid UTF-8 (byte {e.start})", status=400) from None
    if not text.strip():
        raise ProtocolError("empty request: expected a JSON object", status=400)
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_no_duplicates
        )
    except ProtocolError:
        raise
    except json.JSONDecodeError as e:
        raise ProtocolError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}", status=400) from None
    except (ValueError, RecursionError) as e:  # e.g. integers with too many digits, absurd nesting
        raise ProtocolError(f"invalid JSON: {str(e).splitlines()[0][:120] or type(e).__name__}",
                            status=400) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"request must be a JSON object, got {_type_name(data)}", status=400)
    return data


def parse_request(raw: bytes) -> Request:
    """Parse and validate one request. Raises ProtocolError (with .id when readable) on any bad input."""
    data = _decode(raw)
    rid = _parse_id(data)
    if "cmd" not in data:
        raise ProtocolError("missing 'cmd' (one of: " + ", ".join(_FIELDS) + ")", rid)
    cmd = data["cmd"]
    if not isinstance(cmd, str):
        raise ProtocolError(f"'cmd' must be a string, got {_type_name(cmd)}", rid)
    if cmd not in _FIELDS:
        raise ProtocolError(f"unknown cmd {cmd[:40]!r} (expected one of: " + ", ".join(_FIELDS) + ")", rid)
    unknown = sorted(set(data) - _FIELDS[cmd])
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ProtocolError(f"unknown field(s) for {cmd}: {names}", rid)
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError(f"'token' must be a string, got {_type_name(token)}", rid)
    if cmd == "set_prompt":
        return _parse_set_prompt(data, rid, token)
    if cmd == "cancel":
        return _parse_cancel(data, rid, token)
    return _BARE[cmd](id=rid, token=token)


def _parse_cancel(data: dict, rid, token) -> Cancel:
    epoch = _int_field(data, "epoch", 1, MAX_ID_INT, rid)
    everything = data.get("all")
    if everything is not None and everything is not True:
        raise ProtocolError("'all' must be true (or left out)", rid)
    if (epoch is None) == (everything is None):
        raise ProtocolError("cancel needs either 'epoch' or 'all': true", rid)
    return Cancel(epoch=epoch, all=everything, id=rid, token=token)


def _parse_set_prompt(data: dict, rid, token) -> SetPrompt:
    if "prompt" not in data:
        raise ProtocolError("set_prompt needs 'prompt'", rid)
    prompt = data["prompt"]
    if not isinstance(prompt, str):
        raise ProtocolError(f"'prompt' must be a string, got {_type_name(prompt)}", rid)
    prompt = prompt.strip()
    if not prompt:
        raise ProtocolError("'prompt' must not be empty", rid)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters ({len(prompt)})", rid)
    mode = data.get("mode", DEFAULT_MODE)
    if not isinstance(mode, str):
        raise ProtocolError(f"'mode' must be a string, got {_type_name(mode)}", rid)
    if mode not in MODES:
        raise ProtocolError(f"'mode' must be one of {', '.join(MODES)}, got {mode[:40]!r}", rid)
    blocks = _int_field(data, "blocks", 1, MAX_BLEND_BLOCKS, rid)
    if blocks is not None and mode != "blend":
        raise ProtocolError(f"'blocks' is only valid with mode 'blend' (mode is {mode!r})", rid)
    if mode == "blend" and blocks is None:
        blocks = DEFAULT_BLEND_BLOCKS
    at_block = _int_field(data, "at_block", 0, MAX_AT_BLOCK, rid)
    wait = data.get("wait", False)
    if not isinstance(wait, bool):
        raise ProtocolError(f"'wait' must be true or false, got {_type_name(wait)}", rid)
    if wait and at_block is not None:
        raise ProtocolError("'wait' is only for changes now: leave out 'at_block' (a scheduled change waits for "
                            "its block on purpose)", rid)
    return SetPrompt(prompt=prompt, mode=mode, blocks=blocks, at_block=at_block, id=rid, token=token,
                     wait=True if wait else None)


def error_reply(msg: str, id: str | int | None = None) -> dict:
    """{"ok": false, "error": msg}, plus "id" when the request had one."""
    reply = {"ok": False, "error": str(msg)}
    if id is not None:
        reply["id"] = id
    return reply


def _json_safe(value):
    """Non-finite floats become null (strict JSON); tuples become lists; other types pass through."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def encode_reply(reply: dict) -> bytes:
    """Strict JSON (no NaN/Infinity) UTF-8 bytes. Raises TypeError for values JSON cannot carry."""
    return json.dumps(_json_safe(reply), allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()
