from cnnlab.runtime import xla_flags; xla_flags.apply()
import time, jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from cnnlab.kernels import conv
from cnnlab.runtime import prng
T=time.time
with prng.classic_threefry():
  kw=dict(features=4, kernel_size=(3, 3))
  t=T(); x=jax.random.normal(jax.random.key(1),(2,9,11,1)); print("x",T()-t)
  fast,ref=conv.Conv(**kw),nn.Conv(**kw)
  t=T(); params=ref.init(jax.random.key(0),x); print("ref init",T()-t)
  t=T(); fp=fast.init(jax.random.key(0),x); print("fast init",T()-t)
  loss=lambda m: lambda p,x: jnp.sum(m.apply(p,x)**2)
  t=T(); jax.jit(fast.apply)(params,x).block_until_ready(); print("fast fwd jit",T()-t)
  t=T(); ref.apply(params,x).block_until_ready(); print("ref fwd eager",T()-t)
  t=T(); g=jax.grad(loss(fast),argnums=(0,1))(params,x); jax.block_until_ready(g); print("fast grad eager",T()-t)
  t=T(); g=jax.grad(loss(ref),argnums=(0,1))(params,x); jax.block_until_ready(g); print("ref grad eager",T()-t)
