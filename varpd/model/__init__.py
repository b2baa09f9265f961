"""Pure values of the domain: mappings, destinations, overlay descriptions."""

from varpd.model.mapping import Destination, IPAddress, Mapping, MappingChange, MappingRecord

__all__ = ["Destination", "IPAddress", "Mapping", "MappingChange", "MappingRecord"]
