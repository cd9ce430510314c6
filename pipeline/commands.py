"""Control commands, each defined once, as typed messages: streamer.protocol parses a client's JSON into them, the
Python client builds its requests from them, the daemon answers or forwards them, pipeline.wire carries them to
engine rank 0, and its Runner answers each with one method. Pure: no torch, no sockets.

A client sends SetPrompt, Cancel, Status, Pause and Resume (`CLIENT`); the daemon also sends Ping and Stop to the
engine (`ENGINE` holds every command the engine answers). `token` and `wait` concern the daemon only and are not
forwarded; `client` (who asked: per-client limits on scheduled changes) is set by the daemon, never by a client.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from .prompts import DEFAULT_MODE

INTERNAL = frozenset({"client"})  # fields the daemon sets: a client's request may not carry them


class Command:
    """What every command has: `cmd` (its name), and the optional "id" (echoed in the reply) and "token"."""

    cmd: ClassVar[str] = ""

    def to_dict(self) -> dict:
        """The command as its JSON request: `cmd` and every field that is set (internal ones left out)."""
        d = {"cmd": self.cmd}
        for f in dataclasses.fields(self):
            if f.name not in INTERNAL and getattr(self, f.name) is not None:
                d[f.name] = getattr(self, f.name)
        return d

    def for_engine(self, client: str = "") -> "Command":
        """This command as the daemon forwards it: no id, token or wait (the daemon's), `client` set where the
        command has one."""
        clear = {name: None for name in ("id", "token", "wait") if name in _names(type(self))}
        if "client" in _names(type(self)):
            clear["client"] = client
        return dataclasses.replace(self, **clear)

    def fields(self) -> dict:
        """Every field by name (the wire's header)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class SetPrompt(Command):
    cmd: ClassVar[str] = "set_prompt"
    prompt: str
    mode: str = DEFAULT_MODE
    blocks: int | None = None  # blend length; always set (DEFAULT_BLEND_BLOCKS) for mode "blend", None otherwise
    at_block: int | None = None  # schedule for this block index; None = now
    id: str | int | None = None
    token: str | None = None
    wait: bool | None = None  # True: reply once the change is on the stream (never with at_block); None otherwise
    client: str = ""  # who asked (set by the daemon)


@dataclass(frozen=True)
class Cancel(Command):
    """Withdraw scheduled prompt changes that have not taken effect: one by its epoch, or all of them."""
    cmd: ClassVar[str] = "cancel"
    epoch: int | None = None
    all: bool | None = None
    id: str | int | None = None
    token: str | None = None


@dataclass(frozen=True)
class _Bare(Command):
    """A command without arguments."""

    id: str | int | None = None
    token: str | None = None


@dataclass(frozen=True)
class Status(_Bare):
    cmd: ClassVar[str] = "status"


@dataclass(frozen=True)
class Pause(_Bare):
    cmd: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(_Bare):
    cmd: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Ping(_Bare):
    """The daemon's liveness probe of the engine."""
    cmd: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Stop(_Bare):
    """The daemon asks the engine to stop."""
    cmd: ClassVar[str] = "stop"


CLIENT = {c.cmd: c for c in (SetPrompt, Cancel, Status, Pause, Resume)}  # what a client may send
ENGINE = {c.cmd: c for c in (Ping, Stop, SetPrompt, Cancel, Pause, Resume, Status)}  # what rank 0 answers
