"""CPU speed kernels: each computes what a plain flax / lax op computes, faster on XLA:CPU."""
