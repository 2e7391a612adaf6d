"""PyTorch twins of the benchmarked cnnlab models (same layers, same parameter counts), for speed comparison only."""

import torch
from torch import nn


class LocallyConnected2d(nn.Module):
  """`nn.ConvLocal` with SAME padding and stride 1: a separate (k*k*C, F) filter at every output position."""

  def __init__(self, in_channels: int, features: int, kernel_size: int, size: tuple[int, int]):
    super().__init__()
    self.k, self.size = kernel_size, size
    n = size[0] * size[1]
    self.weight = nn.Parameter(torch.randn(n, kernel_size * kernel_size * in_channels, features) * 0.05)
    self.bias = nn.Parameter(torch.zeros(n, features))

  def forward(self, x):
    cols = nn.functional.unfold(x, self.k, padding=self.k // 2)             # (B, C*k*k, H*W)
    y = torch.einsum("bkl,lkf->blf", cols, self.weight) + self.bias          # (B, H*W, F)
    return y.transpose(1, 2).reshape(x.shape[0], -1, *self.size)


def cnn(features=(16, 32), kernel_size=3, padding="SAME", hidden=(), size=28, in_channels=1, num_classes=10,
        local=False) -> nn.Module:
  """cnnlab.models.CNN (max pool 2x2 after each stage, flatten head); `local` gives the LCN."""
  layers, c, s = [], in_channels, size
  for width in features:
    if local:
      layers.append(LocallyConnected2d(c, width, kernel_size, (s, s)))
    else:
      layers.append(nn.Conv2d(c, width, kernel_size, padding=kernel_size // 2 if padding == "SAME" else 0))
      s = s if padding == "SAME" else s - kernel_size + 1
    layers += [nn.ReLU(), nn.MaxPool2d(2)]
    c, s = width, s // 2
  layers.append(nn.Flatten())
  n = c * s * s
  for width in hidden:
    layers += [nn.Linear(n, width), nn.ReLU()]
    n = width
  layers.append(nn.Linear(n, num_classes))
  return nn.Sequential(*layers)


def mlp(hidden=(256, 256), in_features=784, num_classes=10) -> nn.Module:
  layers, n = [nn.Flatten()], in_features
  for width in hidden:
    layers += [nn.Linear(n, width), nn.ReLU()]
    n = width
  return nn.Sequential(*layers, nn.Linear(n, num_classes))


def alexnet(size: int = 67, num_classes: int = 10, groups: int = 2) -> nn.Module:
  """cnnlab.models.AlexNet: LRN after conv1/conv2 (PyTorch divides alpha by the size, hence 5e-4), 3x3/2 pools."""
  lrn = lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
  s = (size - 11) // 4 + 1
  for _ in range(3):
    s = (s - 3) // 2 + 1
  return nn.Sequential(
      nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
      nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
      nn.Conv2d(384, 384, 3, padding=1, groups=groups), nn.ReLU(),
      nn.Conv2d(384, 256, 3, padding=1, groups=groups), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Flatten(), nn.Linear(256 * s * s, 4096), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))


def count_params(net: nn.Module) -> int:
  return sum(p.numel() for p in net.parameters())


def step_runner(net: nn.Module, x_shape_nhwc: tuple[int, ...], num_classes: int = 10, learning_rate: float = 1e-3):
  """A function running n Adam steps (cross-entropy, fixed random batch) of `net` in eager mode."""
  b, *spatial, c = x_shape_nhwc
  x = torch.rand(b, c, *spatial)
  y = torch.randint(0, num_classes, (b,))
  opt = torch.optim.Adam(net.parameters(), learning_rate)
  net.train()

  def run(n: int) -> None:
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss = nn.functional.cross_entropy(net(x), y)
      loss.backward()
      opt.step()
    loss.item()

  return run
