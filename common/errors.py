"""Errors every layer raises alike."""


class ConfigError(ValueError):
    """A configuration value that cannot work. The message is one line meant for the user."""
