from dlas.registry import Registry

# device.kind -> Device class
DEVICES: Registry = Registry("device kind")
