"""cnnlab: measured answers to why convolutional networks work for vision."""

__version__ = "0.1.0"
