"""The messages between engine rank 0 and the daemon, each defined once.

On the ZMQ PAIR socket a message is [kind, JSON header, payload?]: the kind names the class, the header holds its
fields, and only `Frames` has a payload (the raw RGB bytes). Never pickle. `decode` checks the kind, the field
names and the frame payload's size: a malformed message raises WireError, which the receiver treats as fatal.

    rank 0 → daemon: Hello, Progress, Ready, Frames, Heartbeat, Pacing, Stats, PromptApplied, PromptSuperseded,
                     QueueFlushed, Reply, Fatal, Alive, Bye
    daemon → rank 0: Command (a pipeline.commands command)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

from . import commands


class WireError(ValueError):
    """A message that does not follow this module's shapes."""


@dataclass
class Hello:
    """First message of rank 0: the configuration it runs (the daemon refuses a different one), and, from ranks
    started by torchrun (--attach), the daemon's token."""
    kind: ClassVar[bytes] = b"hello"
    config: dict
    token: str = ""


@dataclass
class Progress:
    """Start-up progress; `done` once the model is loaded."""
    kind: ClassVar[bytes] = b"progress"
    msg: str
    done: bool = False


@dataclass
class Ready:
    """The first block left the queue (it is being decoded)."""
    kind: ClassVar[bytes] = b"ready"
    first_block: int
    ticks: int


@dataclass
class Frames:
    """One decoded block: `payload` is uint8 RGB [frames, height, width, 3] (bytes when received; the sender may
    give any C-contiguous buffer, which is sent without a copy and must not change afterwards)."""
    kind: ClassVar[bytes] = b"frames"
    block: int
    epoch: int
    prompt: str
    frames: int
    height: int
    width: int
    tick: int
    decode_ms: float
    payload: bytes = field(default=b"", repr=False)


@dataclass
class Heartbeat:
    """A window was submitted (at most one a second): the engine is making progress inside a long tick."""
    kind: ClassVar[bytes] = b"heartbeat"
    block: int
    step: int


@dataclass
class Pacing:
    """The engine is ahead of real time and waiting."""
    kind: ClassVar[bytes] = b"pacing"


@dataclass
class Stats:
    """After every tick (and while paused): the engine's snapshot (pipeline.dualparal.engine.Engine.snapshot keys, plus
    paused, decode_ms and tick_s)."""
    kind: ClassVar[bytes] = b"stats"
    snapshot: dict


@dataclass
class PromptApplied:
    """A prompt change took effect at a tick boundary."""
    kind: ClassVar[bytes] = b"prompt_applied"
    epoch: int
    mode: str
    prompt: str
    first_block: int


@dataclass
class PromptSuperseded:
    """Changes "now" that had not taken effect were dropped: a newer change (epoch `by`) took effect first."""
    kind: ClassVar[bytes] = b"prompt_superseded"
    epochs: list
    by: int


@dataclass
class QueueFlushed:
    """A cut flushed these blocks from the queue (they re-enter with the new prompt)."""
    kind: ClassVar[bytes] = b"queue_flushed"
    blocks: list


@dataclass
class Command:
    """A command for rank 0 (pipeline.commands.ENGINE, typed there): `cmd` names it, `args` are its fields; `id`
    comes back in the Reply. `Command.of(command, id)` builds it, `.command()` gives the typed command back (decode
    checks that it does)."""
    kind: ClassVar[bytes] = b"cmd"
    cmd: str
    args: dict = field(default_factory=dict)
    id: int = 0

    @classmethod
    def of(cls, command: commands.Command, id: int = 0) -> "Command":
        return cls(cmd=command.cmd, args=command.fields(), id=id)

    def command(self) -> commands.Command:
        cls = commands.ENGINE.get(self.cmd)
        if cls is None:
            raise WireError(f"cmd: unknown command {str(self.cmd)[:40]!r}")
        if not isinstance(self.args, dict):
            raise WireError(f"cmd: {self.cmd}: args must be an object")
        try:
            return cls(**self.args)
        except TypeError as e:
            raise WireError(f"cmd: {self.cmd}: {e}") from None


@dataclass
class Reply:
    kind: ClassVar[bytes] = b"reply"
    id: int | None
    body: dict


@dataclass
class Fatal:
    """Rank 0 is ending on a failure of `component`; `config`: a configuration it refused (exit code 2)."""
    kind: ClassVar[bytes] = b"fatal"
    component: str
    error: str
    config: bool = False


@dataclass
class Alive:
    """From rank 0's IO thread every few seconds: the process lives."""
    kind: ClassVar[bytes] = b"alive"


@dataclass
class Bye:
    """Rank 0 stopped as asked."""
    kind: ClassVar[bytes] = b"bye"


PING_EVERY = 2.0  # seconds between the daemon's pings to an attached rank 0 (which exits when they stop)
MIN_DAEMON_TIMEOUT = 2.5 * PING_EVERY  # the shortest silence rank 0 may take for the daemon's death

MESSAGES = {c.kind: c for c in (Hello, Progress, Ready, Frames, Heartbeat, Pacing, Stats, PromptApplied,
                                PromptSuperseded, QueueFlushed, Command, Reply, Fatal, Alive, Bye)}


def encode(msg) -> list[bytes]:
    header = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg) if f.name != "payload"}
    parts = [msg.kind, json.dumps(header).encode()]
    if isinstance(msg, Frames):
        parts.append(msg.payload)
    return parts


def decode(parts: list) -> object:
    """The message of `parts`, or WireError saying what is wrong with it."""
    if len(parts) not in (2, 3):
        raise WireError(f"a message has 2 or 3 parts, got {len(parts)}")
    kind = bytes(parts[0])
    cls = MESSAGES.get(kind)
    if cls is None:
        raise WireError(f"unknown message kind {kind[:40]!r}")
    try:
        header = json.loads(bytes(parts[1]))
    except ValueError as e:
        raise WireError(f"{kind.decode()}: the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise WireError(f"{kind.decode()}: the header is not a JSON object")
    names = {f.name for f in dataclasses.fields(cls)} - {"payload"}
    if set(header) - names:
        raise WireError(f"{kind.decode()}: unknown field(s) {sorted(set(header) - names)[:5]}")
    try:
        msg = cls(**header)
    except TypeError as e:
        raise WireError(f"{kind.decode()}: {e}") from None
    if isinstance(msg, Frames):
        if len(parts) != 3:
            raise WireError("frames: no payload")
        try:
            want = int(msg.frames) * int(msg.height) * int(msg.width) * 3
        except (TypeError, ValueError):
            raise WireError("frames: frames, height and width must be integers") from None
        if want <= 0 or len(parts[2]) != want:
            raise WireError(f"frames: payload of {len(parts[2])} bytes for {msg.frames}x{msg.height}x{msg.width}x3")
        msg.payload = bytes(parts[2])
    elif len(parts) == 3:
        raise WireError(f"{kind.decode()}: unexpected payload")
    if isinstance(msg, Command):
        msg.command()  # a command rank 0 cannot answer is malformed, as any other message
    return msg
