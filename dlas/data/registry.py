from dlas.registry import Registry

DATASETS: Registry = Registry("dataset")
