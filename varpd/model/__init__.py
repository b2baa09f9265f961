"""Pure values of the domain: mappings, destinations, overlay descriptions."""

from varpd.model.mapping import AddressIndex, Destination, IPAddress, Mapping, MappingChange, MappingRecord

__all__ = ["AddressIndex", "Destination", "IPAddress", "Mapping", "MappingChange", "MappingRecord"]
