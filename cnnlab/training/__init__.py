"""Training: state, steps, the fit loop, sweeps, checkpoints, preemption, input pipelines, data parallelism."""
