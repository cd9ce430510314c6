"""Push the daemon's already-encoded stream to a media server (`--push URL`): the scale-out path.

`rtmp://` and `rtmps://` get FLV, `srt://` gets MPEG-TS (FFmpeg's protocols through PyAV; stream copy, no second
encode). Each target has its own thread and its own bounded fan-out subscription: a slow or absent server costs
that target skipped packets (it resumes at the next keyframe), never the stream. When the server goes away the
pusher reconnects with growing back-off (1 s up to 30 s) and starts again at a keyframe.
"""
from __future__ import annotations

import functools
import logging
import threading
from urllib.parse import urlsplit

import av

from common import faults

from .fanout import FanOut
from .mpegts import MpegTsWriter
from .video_format import VideoFormat

log = logging.getLogger(__name__)

FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts"}
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
IO_TIMEOUT_US = "5000000"  # FFmpeg's rw_timeout: a server that stops reading is a lost connection after 5 s


def push_format(url: str) -> str:
    """The container for a push URL; ValueError for a scheme we cannot push to (srt:// also when this PyAV's FFmpeg
    was built without libsrt, as PyPI's wheels are)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in FORMATS:
        raise ValueError(f"--push {url!r}: the scheme must be one of {', '.join(sorted(FORMATS))}")
    if not parts.hostname:
        raise ValueError(f"--push {url!r}: no host")
    if scheme == "srt" and not _has_protocol("srt"):
        raise ValueError(f"--push {url!r}: this PyAV's FFmpeg has no srt protocol (built without libsrt); push "
                         "rtmp:// instead, or install a PyAV built against an FFmpeg with libsrt")
    return FORMATS[scheme]


@functools.lru_cache(maxsize=None)
def _has_protocol(scheme: str) -> bool:
    """Whether FFmpeg (through PyAV) knows the protocol: opening a URL that names no server fails at once with
    ProtocolNotFoundError when it does not, and with a connection error when it does. Asked once per process (the
    daemon checks its URLs at start, then each Pusher checks its own)."""
    try:
        av.open(f"{scheme}://127.0.0.1:9?mode=caller&connect_timeout=100000", "w", format="mpegts",
                timeout=0.5).close()
    except av.ProtocolNotFoundError:
        return False
    except (OSError, av.FFmpegError):
        pass
    return True


class Pusher:
    """One push target. on_error(component, exc): a failure that is not the network's (a bug) ends the daemon."""

    def __init__(self, url: str, fmt: VideoFormat, fanout: FanOut, silent_audio: bool = False,
                 queue_size: int = 512, on_error=None):
        self.url, self.format = url, push_format(url)
        self.fanout, self.size, self.fps = fanout, (fmt.width, fmt.height), fmt.fps
        self.silent_audio, self.queue_size, self.on_error = silent_audio, queue_size, on_error
        self.state = "connecting"
        self.packets = self.bytes = self.reconnects = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"push:{self.target}", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        """The URL without credentials or query (for logs and /status; stream keys stay private)."""
        u = urlsplit(self.url)
        return f"{u.scheme}://{u.hostname}{':%d' % u.port if u.port else ''}"

    def stats(self) -> dict:
        return {"target": self.target, "state": self.state, "packets": self.packets, "bytes": self.bytes,
                "reconnects": self.reconnects, "last_error": self.last_error}

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._session():
                    attempt = 0  # it streamed: the next wait starts short again
            except (OSError, av.FFmpegError) as e:  # the server or the network: reconnect
                self.last_error = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - a bug: reported, the daemon ends
                self.last_error = f"{type(e).__name__}: {e}"
                self.state = "failed"
                if self.on_error is not None:
                    self.on_error("push", e)
                return
            if self._stop.is_set():
                break
            wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            self.state = "waiting"
            self.reconnects += 1
            log.warning("push %s: %s; retrying in %.0f s", self.target, self.last_error or "ended", wait)
            self._stop.wait(wait)
        self.state = "stopped"

    def _session(self) -> bool:
        """Connect, stream until the connection fails or stop(); True when anything was sent."""
        self.state = "connecting"
        sub = self.fanout.subscribe(maxsize=self.queue_size, name=f"push:{self.target}")
        writer = None
        sent = False
        try:
            opts = {"rw_timeout": IO_TIMEOUT_US}
            if self.format == "flv":
                opts["flvflags"] = "no_duration_filesize"
            writer = MpegTsWriter(None, *self.size, self.fps, format=self.format, path=self.url, options=opts,
                                  silent_audio=self.silent_audio)
            while not self._stop.is_set():
                pkt = sub.get(timeout=0.5)
                if pkt is None:
                    if sub.closed:
                        break
                    continue
                faults.point("push")
                writer.write(pkt)
                if not sent:
                    self.state, sent = "streaming", True
                    log.info("push %s: streaming", self.target)
                self.packets += 1
                self.bytes += len(pkt.data)
        finally:
            self.fanout.unsubscribe(sub)
            if writer is not None:
                try:
                    writer.close()
                except (OSError, av.FFmpegError):
                    pass
        return sent

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
