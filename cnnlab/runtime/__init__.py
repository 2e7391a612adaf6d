"""Process-level setup an entry point applies before JAX starts: XLA flags, the compile cache."""
