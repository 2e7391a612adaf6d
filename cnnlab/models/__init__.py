"""Model registry: every module in this package registers its models by name.

Adding a model is one new file here:

    from cnnlab.models import register
    @register("my_net")
    class MyNet(nn.Module):
      num_classes: int = 10
      @nn.compact
      def __call__(self, x, train: bool = False): ...

Models take `x` as (batch, *spatial, channels) and `train` as a keyword. They are plain flax; an op with a
faster CPU kernel is a field whose default is the plain op (`conv: layers.ModuleDef = nn.Conv`,
`pool_fn: Callable = layers.pool`, ...), handed down to submodules, so `cnnlab.kernels.specialise` can swap it.
"""

from typing import Any

import flax.linen as nn

from cnnlab.errors import UserError
from cnnlab.registry import Registry, import_submodules

MODELS: Registry = Registry("model")
register = MODELS.register


def create(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with keyword overrides; layer sizes must be positive."""
  for key, value in kwargs.items():
    sizes = value if isinstance(value, (tuple, list)) else (value,)
    if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in sizes) and key in _SIZE_ARGS:
      raise UserError(f"model {name!r}: {key} must be positive integers, got {value!r}")
  return MODELS.get(name)(**kwargs)


# Keyword arguments that are layer widths, depths or window sizes (checked by `create`).
_SIZE_ARGS = frozenset({"features", "hidden", "kernel_size", "window", "width", "depth", "channels", "num_classes",
                        "stride", "strides", "pool_size", "num_layers", "dilation"})


import_submodules(__name__)
