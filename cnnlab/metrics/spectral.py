"""Spectral measures of output maps: the share of power in period-2 ("checkerboard") patterns."""

import numpy as np


def checkerboard_shares(maps_NHW: np.ndarray) -> np.ndarray:
  """Per map: share of the (mean-removed) spectral power on the Nyquist row and column (period-2 patterns).

  A period-2 pattern holding a share s of a map's power has an rms amplitude of sqrt(s) times the map's own.
  """
  m = np.asarray(maps_NHW, np.float64)
  m = m - m.mean(axis=(1, 2), keepdims=True)
  power = np.abs(np.fft.fft2(m)) ** 2
  h, w = m.shape[1:]
  nyquist = power[:, h // 2, :].sum(-1) + power[:, :, w // 2].sum(-1) - power[:, h // 2, w // 2]
  return nyquist / np.maximum(power.sum(axis=(1, 2)), 1e-30)
