"""The single exception type the packet layer lets escape."""


class PacketError(ValueError):
    """A frame (or an argument for building one) is malformed.

    Subclasses ValueError so generic callers still catch it, but the daemon can
    tell "bad bytes from a guest" apart from its own bugs.
    """
