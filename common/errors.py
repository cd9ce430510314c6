"""Errors every layer raises alike."""


class ConfigError(ValueError):
    """A configuration value that cannot work. The message is one line meant for the user."""


class ComponentFailed(Exception):
    """A named part of a process (the decoder, the encoder, stdout, ...) failed with `cause`; whoever catches it
    ends the process naming `component` (the daemon's one log line)."""

    def __init__(self, component: str, cause: BaseException):
        super().__init__(f"{component} failed: {type(cause).__name__}: {cause}")
        self.component, self.cause = component, cause
