"""cnnlab: measured answers to why convolutional networks work for vision.

Importing cnnlab changes nothing outside it: no environment variable, no JAX config. Entry points (run.py, the
benchmark) call `cnnlab.runtime.xla_flags.apply()` before JAX starts; a notebook or library may call it too.
"""

__version__ = "0.1.0"
