"""Errors a user can act on.

Anything raised as a :class:`SmartbinError` reaches the user as one line and exit code 2
(bad argument, bad data path, bad config, broken bundle), never as a traceback.
"""


class SmartbinError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""

    exit_code = 2


class ConfigError(SmartbinError):
    """Invalid configuration: the message names the key and the file."""


class BundleError(SmartbinError):
    """A model bundle that is missing, malformed or does not match its hash."""


class ImageReadError(SmartbinError):
    """An image that cannot be decoded; carries the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
