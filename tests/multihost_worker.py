"""One process of the 2-process test in tests/test_multihost.py (2 CPU devices per process, gloo collectives)."""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)
from cnnlab.training import parallel  # noqa: E402  (after the device count is set)

parallel.initialize_distributed(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]))

import flax  # noqa: E402
import numpy as np  # noqa: E402

from cnnlab import data, models  # noqa: E402
from cnnlab.training import input_pipeline, train  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
c = data.get_config()
c.name = "digits"
ds = data.load(c)
rows = parallel.process_rows(32)
local = next(input_pipeline.train_batches(ds.x_train, ds.y_train, 32, seed=0, rows=rows))
full = next(input_pipeline.train_batches(ds.x_train, ds.y_train, 32, seed=0))
assert local["x"].shape[0] == 16 and np.array_equal(local["y"], full["y"][rows])  # reads only its own rows
cfg = train.get_config()
cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3, progress=False,
                tensorboard=False))
state, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), ds, sys.argv[3], seed=0)
if jax.process_index() == 0:
  flat = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(jax.device_get(state.params)).items()}
  np.savez(sys.argv[4], test_loss=summary["test_loss"], **flat)
jax.distributed.shutdown()
