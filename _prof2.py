import time, jax, jax.numpy as jnp
T=time.time
jnp.zeros(3).block_until_ready()
with jax.threefry_partitionable(False):
  t=T(); jax.jit(lambda k: jax.random.normal(k,(3,3,8,5)))(jax.random.key(0)).block_until_ready(); print("normal classic",T()-t)
  t=T(); jax.random.normal(jax.random.key(0),(3,3,8,7)).block_until_ready(); print("normal classic eager",T()-t)
t=T(); jax.random.normal(jax.random.key(0),(3,3,8,7)).block_until_ready(); print("normal part eager",T()-t)
