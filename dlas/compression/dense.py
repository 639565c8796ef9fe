from dlas.compression.base import Compression
from dlas.compression.registry import COMPRESSIONS


@COMPRESSIONS.register("dense")
class Dense(Compression):
    """The trained float32 model as it is: the baseline every other option is compared with."""

    baseline = True
