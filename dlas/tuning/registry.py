from dlas.registry import Registry

TUNERS: Registry = Registry("tuning")
