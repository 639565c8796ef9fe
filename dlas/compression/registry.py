from dlas.registry import Registry

COMPRESSIONS: Registry = Registry("compression")
