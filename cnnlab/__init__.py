"""cnnlab: measured answers to why convolutional networks work for vision."""

from cnnlab import xla_flags as _xla_flags

_xla_flags.apply()  # before JAX starts its backend: XLA reads $XLA_FLAGS once

__version__ = "0.1.0"
