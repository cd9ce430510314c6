"""The daemon's outputs behind one interface. Every output the encoded stream leaves by (the ZMQ publisher, MPEG-TS
on standard output, each push target, the WebRTC viewers) is a `Sink`: it starts when built, reports its figures
(`stats()`, the same for ZMQ `status` and HTTP `/status`) and stops within a deadline. `build_sinks` makes them
from the options, so a new output is one class here and one line there.

(Raw Y4M on standard output is not a sink: it takes the decoded frames, before the encoder, see output.EncoderThread.)
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from common import faults
from transports.fanout import FanOut
from transports.push import Pusher
from transports.video_format import VideoFormat

from .output import StdoutTs


class Sink(ABC):
    """An output of the encoded stream."""

    name: str  # what /status calls it; also the component named when it fails
    kind: str  # zmq | stdout | push | webrtc

    @abstractmethod
    def stats(self) -> dict:
        """Its figures for /status (JSON-serialisable)."""

    @abstractmethod
    async def stop(self, deadline: float) -> None:
        """Stop within `deadline` seconds: flush what can be flushed in that time, then let go."""

    def status(self) -> dict:
        """Its figures with its name and kind: one row of /status's `outputs`."""
        return {"name": self.name, "kind": self.kind, **self.stats()}


class ZmqSink(Sink):
    """Every packet to the ZMQ PUB socket (transports.zmq_pub.VideoPublisher), from a fan-out subscription."""

    kind = "zmq"

    def __init__(self, publisher, fanout: FanOut, spawn):
        """spawn(component, coroutine): the daemon's way to run a task whose end ends the daemon."""
        self.name, self.publisher, self.fanout = "zmq publisher", publisher, fanout
        self.packets = 0
        self._task = spawn(self.name, self._forward())

    async def _forward(self):
        sub = self.fanout.subscribe(maxsize=1024, name="zmq-pub")
        try:
            while True:
                pkt = await sub.aget(timeout=1.0)
                if pkt is not None:
                    faults.point("zmq publisher")
                    self.publisher.send_packet(pkt)
                    self.packets += 1
        finally:
            self.fanout.unsubscribe(sub)

    def stats(self) -> dict:
        return {"packets": self.packets}

    async def stop(self, deadline: float) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class StdoutSink(Sink):
    """MPEG-TS on standard output (`--stdout mpegts`), finalised on stop."""

    kind = "stdout"

    def __init__(self, fmt: VideoFormat, fanout: FanOut, on_error):
        self.name = "stdout"
        self.writer = StdoutTs(fmt, fanout, on_error=on_error)

    def stats(self) -> dict:
        return {"packets": self.writer.packets, "error": self.writer.error}

    async def stop(self, deadline: float) -> None:
        await asyncio.to_thread(self.writer.close, deadline)


class PushSink(Sink):
    """One `--push` target (RTMP, RTMPS, SRT), reconnecting on its own."""

    kind = "push"

    def __init__(self, url: str, fmt: VideoFormat, fanout: FanOut, silent_audio: bool, on_error):
        self.pusher = Pusher(url, fmt, fanout, silent_audio=silent_audio, on_error=on_error)
        self.name = f"push {self.pusher.target}"

    def stats(self) -> dict:
        return self.pusher.stats()

    async def stop(self, deadline: float) -> None:
        await asyncio.to_thread(self.pusher.stop, deadline)


class WebRTCSink(Sink):
    """The WebRTC viewers (the browser page and WHEP), one hub (transports.webrtc.WebRTCHub)."""

    kind = "webrtc"

    def __init__(self, hub):
        self.name, self.hub = "webrtc", hub

    def stats(self) -> dict:
        return self.hub.stats()

    async def stop(self, deadline: float) -> None:
        await asyncio.wait_for(self.hub.close(), deadline)


def build_sinks(opts, fmt: VideoFormat, fanout: FanOut, publisher, spawn, on_error, hub=None) -> list[Sink]:
    """The outputs the options ask for: the ZMQ publisher always, MPEG-TS on stdout, each push URL, and the WebRTC
    viewers when HTTP is on (`hub`)."""
    sinks: list[Sink] = [ZmqSink(publisher, fanout, spawn)]
    if opts.stdout == "mpegts":
        sinks.append(StdoutSink(fmt, fanout, on_error))
    sinks += [PushSink(url, fmt, fanout, opts.push_audio, on_error) for url in opts.push]
    if hub is not None:
        sinks.append(WebRTCSink(hub))
    return sinks
