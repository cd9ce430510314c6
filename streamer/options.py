"""The daemon's options."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.settings import DEFAULTS


@dataclass
class ServeOptions:
    """The daemon's options: the serve options of scopes daemon and web, and attach (pipeline/settings.py), with
    their defaults from there."""

    control: str = DEFAULTS["control"]
    publish: str = DEFAULTS["publish"]
    http: str = DEFAULTS["http"]  # "" or "off" disables HTTP
    stdout: str = DEFAULTS["stdout"]  # "", "mpegts" or "y4m"
    keyframe_interval: float = DEFAULTS["keyframe_interval"]
    crf: int = DEFAULTS["crf"]
    nvenc: bool = DEFAULTS["nvenc"]
    attach: str = DEFAULTS["attach"]  # wait on this ZMQ address for a rank 0 started by torchrun
    ice_servers: str = DEFAULTS["ice_servers"]
    ice_username: str = DEFAULTS["ice_username"]
    ice_credential: str = DEFAULTS["ice_credential"]
    ice_hosts: str = DEFAULTS["ice_hosts"]
    token: str = DEFAULTS["token"]  # resolved: --token, --token-file or $STREAMER_TOKEN (pipeline.settings)
    allowed_hosts: str = DEFAULTS["allowed_hosts"]
    max_viewers: int = DEFAULTS["max_viewers"]
    push: list = dataclasses.field(default_factory=list)  # media-server URLs (transports/push.py)
    push_audio: bool = DEFAULTS["push_audio"]
    progress: bool = True  # a spinner on a terminal while loading (not an option)

    @classmethod
    def from_settings(cls, values: dict) -> "ServeOptions":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})
