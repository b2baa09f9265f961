"""Errors of the daemon's control operations; str() is the one line the CLI prints."""


class VarpdError(Exception):
    """Base of the daemon's own errors."""


class OverlayNotFound(VarpdError):
    def __init__(self, name: str) -> None:
        super().__init__(f"overlay {name!r} not found")
        self.name = name


class OverlayExists(VarpdError):
    """An overlay of that name, or with that VNI and encapsulation, already exists."""


class StateError(VarpdError):
    """The state directory cannot be written (full, read-only, permissions) or is another daemon's."""


class SocketInUse(VarpdError):
    """The admin socket's path is served by a running daemon, or is not a socket at all."""


class PlacementRefused(VarpdError):
    """create-overlay names a network namespace that does not exist, or a listen IP it does not have."""
