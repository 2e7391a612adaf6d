"""Model registry: every module in this package registers its models by name.

Adding a model is one new file here:

    from cnnlab.models import register
    @register("my_net")
    class MyNet(nn.Module):
      num_classes: int = 10
      @nn.compact
      def __call__(self, x, train: bool = False): ...

Models take `x` as (batch, *spatial, channels) and `train` as a keyword.
"""

from typing import Any

import flax.linen as nn

from cnnlab.registry import Registry, import_submodules

MODELS: Registry = Registry("model")
register = MODELS.register


def create(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with keyword overrides."""
  return MODELS.get(name)(**kwargs)


import_submodules(__name__)
