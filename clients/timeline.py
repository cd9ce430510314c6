"""Scripted prompt changes: a timeline file of timed `set_prompt` requests.

TOML (JSON also accepted: a list of entries, or {"entry": [...]}):

    [[entry]]
    at = 0                 # seconds since the timeline started ...
    prompt = "a quiet harbour at dawn"

    [[entry]]
    at_block = 40          # ... or a block index: sent at once, the daemon applies it at that block
    prompt = "the harbour in a storm"
    mode = "blend"         # soft | queue | blend | cut (default soft)
    blocks = 8             # blend length, blend only

Entries with `at` must be in time order. Field values are checked with the daemon's own protocol rules.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from streamer.protocol import DEFAULT_MODE, ProtocolError, SetPrompt, parse_request

ENTRY_KEYS = {"at", "at_block", "prompt", "mode", "blocks"}
_TOML_ENTRY_LINE = re.compile(r"^\s*\[\[\s*entry\s*\]\]")


class TimelineError(ValueError):
    """A timeline file that cannot be run. The message is one line: file, line/entry, problem."""


@dataclass(frozen=True)
class Entry:
    prompt: str
    mode: str = DEFAULT_MODE
    blocks: int | None = None
    at: float | None = None  # seconds since start
    at_block: int | None = None  # block index, scheduled by the daemon
    number: int = 0  # 1-based position in the file

    def describe(self) -> str:
        when = f"at {self.at:g}s" if self.at is not None else f"at block {self.at_block}"
        short = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        return f"entry {self.number} ({when}, {self.mode}): {short!r}"


def _read(path: Path) -> tuple[list, list[int] | None]:
    """Raw entry dicts and, for TOML [[entry]] tables, the line each starts on."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TimelineError(f"{path}: cannot read: {e}") from None
    suffix = path.suffix.lower()
    lines = None
    if suffix != ".json":
        try:
            data = tomllib.loads(text)
            lines = [i for i, line in enumerate(text.splitlines(), 1) if _TOML_ENTRY_LINE.match(line)]
        except tomllib.TOMLDecodeError as e:
            toml_error = TimelineError(f"{path}: invalid TOML: {e}")
            if suffix == ".toml":
                raise toml_error from None
    if suffix == ".json" or lines is None:  # .json, or an unknown suffix that is not TOML
        try:
            data = json.loads(text, parse_constant=lambda c: float("nan"))
        except json.JSONDecodeError as e:
            if suffix != ".json":
                raise toml_error from None
            raise TimelineError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"entry"})
        if extra:
            raise TimelineError(f"{path}: unknown top-level key(s) {', '.join(map(repr, extra))}; "
                                "entries go in [[entry]] tables")
        data = data.get("entry", [])
    if not isinstance(data, list):
        raise TimelineError(f"{path}: 'entry' must be a list of tables")
    if not data:
        raise TimelineError(f"{path}: no entries (add [[entry]] tables with 'at' or 'at_block' and 'prompt')")
    return data, lines if lines is not None and len(lines) == len(data) else None


def _entry(raw, number: int) -> Entry:
    if not isinstance(raw, dict):
        raise TimelineError(f"must be a table/object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise TimelineError(f"unknown key(s) {', '.join(map(repr, unknown))} "
                            f"(allowed: {', '.join(sorted(ENTRY_KEYS))})")
    if ("at" in raw) == ("at_block" in raw):
        raise TimelineError("needs exactly one of 'at' (seconds) or 'at_block' (block index)")
    at = raw.get("at")
    if "at" in raw and (isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at)
                        or at < 0):
        raise TimelineError(f"'at' must be a non-negative number of seconds, got {at!r}")
    wire = {k: v for k, v in raw.items() if k != "at"}
    wire["cmd"] = "set_prompt"
    try:
        req = parse_request(json.dumps(wire).encode())
    except (TypeError, ValueError) as e:  # ProtocolError is a ValueError; TypeError: dates and such
        raise TimelineError(e.message if isinstance(e, ProtocolError) else f"unsupported value: {e}") from None
    assert isinstance(req, SetPrompt)
    return Entry(prompt=req.prompt, mode=req.mode, blocks=req.blocks, at=None if at is None else float(at),
                 at_block=req.at_block, number=number)


def load_timeline(path) -> list[Entry]:
    """Read and check a timeline file. Raises TimelineError naming the file, line/entry and problem."""
    path = Path(path)
    raws, lines = _read(path)
    entries: list[Entry] = []
    last_at: Entry | None = None
    for number, raw in enumerate(raws, 1):
        where = f"{path}:{lines[number - 1]}: entry {number}" if lines else f"{path}: entry {number}"
        try:
            entry = _entry(raw, number)
        except TimelineError as e:
            raise TimelineError(f"{where}: {e}") from None
        if entry.at is not None:
            if last_at is not None and entry.at < last_at.at:
                raise TimelineError(f"{where}: at={entry.at:g} comes before entry {last_at.number}'s "
                                    f"at={last_at.at:g} (entries must be in time order)")
            last_at = entry
        entries.append(entry)
    return entries


def run_timeline(entries: list[Entry], client, clock=time.monotonic, sleep=time.sleep, log=print):
    """Send every entry through client.set_prompt(prompt, mode=, blocks=, at_block=): at_block entries at once
    (the daemon schedules them), then each `at` entry when its time since the start has come.
    Returns [(entry, reply)] in sending order. Error replies are logged and the run goes on; transport
    errors (clients.client.ClientError) propagate."""
    start = clock()
    ordered = [e for e in entries if e.at is None] + sorted((e for e in entries if e.at is not None),
                                                            key=lambda e: e.at)
    results = []
    for entry in ordered:
        if entry.at is not None:
            while (left := start + entry.at - clock()) > 0:
                sleep(left)
        reply = client.set_prompt(entry.prompt, mode=entry.mode, blocks=entry.blocks, at_block=entry.at_block)
        if reply.get("ok"):
            outcome = f"epoch {reply.get('epoch')}, first block {reply.get('first_block')}"
        else:
            outcome = f"ERROR: {reply.get('error', reply)}"
        log(f"[{clock() - start:8.2f}s] {entry.describe()} -> {outcome}")
        results.append((entry, reply))
    return results
