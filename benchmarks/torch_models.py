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


C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # LeCun et al. 1998, Table I (as cnnlab.models.lenet.C3_TABLE)


class Squash(nn.Module):
  def forward(self, x):
    return 1.7159 * torch.tanh(2.0 / 3.0 * x)


class Subsample(nn.Module):
  """2x2 sum times a trainable per-map coefficient, plus a per-map bias."""

  def __init__(self, channels: int):
    super().__init__()
    self.coef, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return nn.functional.avg_pool2d(x, 2) * 4.0 * self.coef[:, None, None] + self.bias[:, None, None]


class SparseConv(nn.Module):
  """C3 with only the table's 1,500 weights (+16 biases), scattered into one dense 6->16 kernel per step."""

  def __init__(self, table=C3_TABLE, kernel_size: int = 5, in_channels: int = 6):
    super().__init__()
    pairs = [(j, i) for j, t in enumerate(table) for i in t]
    self.weight = nn.Parameter(torch.randn(len(pairs), kernel_size, kernel_size) * 0.1)
    self.bias = nn.Parameter(torch.zeros(len(table)))
    self.register_buffer("out_idx", torch.tensor([j for j, _ in pairs]))
    self.register_buffer("in_idx", torch.tensor([i for _, i in pairs]))
    self.shape = (len(table), in_channels, kernel_size, kernel_size)

  def forward(self, x):
    w = torch.zeros(self.shape, dtype=x.dtype).index_put((self.out_idx, self.in_idx), self.weight)
    return nn.functional.conv2d(x, w, self.bias)


class LeNet5(nn.Module):
  """cnnlab.models.LeNet5: C1-S2-C3-S4-C5-F6 with the scaled tanh, RBF output as negative squared distances."""

  def __init__(self, num_classes: int = 10):
    super().__init__()
    self.body = nn.Sequential(nn.Conv2d(1, 6, 5), Squash(), Subsample(6), Squash(), SparseConv(), Squash(),
                              Subsample(16), Squash(), nn.Conv2d(16, 120, 5), Squash(), nn.Flatten(),
                              nn.Linear(120, 84), Squash())
    self.centres = nn.Parameter(torch.randn(num_classes, 84))

  def forward(self, x):
    pad = [(32 - s) // 2 for s in x.shape[2:]]
    x = nn.functional.pad(x, (pad[1], 32 - x.shape[3] - pad[1], pad[0], 32 - x.shape[2] - pad[0]))
    h = self.body(x)
    return -((h[:, None, :] - self.centres[None]) ** 2).sum(-1)


def lenet5(num_classes: int = 10) -> nn.Module:
  return LeNet5(num_classes)


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
