"""The backend contract, its property system and the entry-point registry."""

from varpd.backend.base import Backend, DestType, MappingBackend, OverlayContext, PluginMode
from varpd.backend.errors import BackendError, ConfigError, PluginNotFound, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection, resolve

__all__ = [
    "Backend", "BackendError", "ConfigError", "DestType", "MappingBackend", "OverlayContext",
    "PluginMode", "PluginNotFound", "PropType", "PropertyError", "PropertySpec", "Protection", "resolve",
]
