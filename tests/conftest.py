"""Shared fixtures: tiny real data and tiny training configs, so compiled functions are reused across tests."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture(scope="session")
def digits():
  from cnnlab import data
  c = data.get_config()
  c.name = "digits"
  return data.load(c)


@pytest.fixture
def tiny_train_config():
  from cnnlab import train
  c = train.get_config()
  c.steps = 8
  c.batch_size = 32
  c.eval_batch_size = 200
  c.log_every = 2
  c.checkpoint_every = 4
  c.progress = False
  c.tensorboard = False
  return c
