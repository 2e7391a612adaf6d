"""MNIST-1D (Greydanus & Kobak 2020), generated locally: 4,000 train / 1,000 test signals of length 40.

Uses `make_dataset(get_dataset_args())`, never `get_dataset`, which tries a download with no timeout.
`mnist1d_shuffled` applies the paper's fixed random permutation of the 40 positions (`shuffle_seq`).
"""

import numpy as np

from cnnlab.data import Dataset, register


def _make(shuffle_seq: bool) -> Dataset:
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  args = get_dataset_args()
  args.shuffle_seq = shuffle_seq
  d = make_dataset(args)
  f = lambda x: np.asarray(x, np.float32)[..., None]  # (N, 40, 1)
  name = "mnist1d_shuffled" if shuffle_seq else "mnist1d"
  return Dataset(name, f(d["x"]), d["y"].astype(np.int32), f(d["x_test"]), d["y_test"].astype(np.int32), 10)


@register("mnist1d")
def load(config) -> Dataset:
  del config  # MNIST-1D ships its own train/test split.
  return _make(shuffle_seq=False)


@register("mnist1d_shuffled")
def load_shuffled(config) -> Dataset:
  del config
  return _make(shuffle_seq=True)
