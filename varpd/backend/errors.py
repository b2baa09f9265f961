"""Errors of the backend layer; each names what was wrong so one line tells the user."""


class BackendError(Exception):
    """A backend could not do what was asked (unreachable, invalid data, ...)."""


class PropertyError(BackendError):
    """A property value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"property {name}: {reason}")
        self.name = name
        self.reason = reason


class PluginNotFound(BackendError):
    """No backend of that name is installed."""


class ConfigError(BackendError):
    """A backend's data source (e.g. hosts.json) is invalid; the message names file, line, key, field.

    `lines` holds one line per problem (the daemon prints them so); the message joins them with "; ".
    """

    def __init__(self, message: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.lines = tuple(lines) or (message,)
