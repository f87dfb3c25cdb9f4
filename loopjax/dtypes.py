"""The dtype policy: weights as stored (or as asked), arithmetic in float32, float64 under x64."""
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def compute_dtype():
    """Activations, tangents, QR and log-growth sums: float64 when jax x64 is on, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def parse_dtype(dtype):
    """None (keep as stored) or a dtype name / numpy dtype -> jnp dtype or None."""
    if dtype is None:
        return None
    names = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
             "float16": jnp.float16, "fp16": jnp.float16, "float64": jnp.float64, "fp64": jnp.float64}
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(names)}")
        return names[dtype]
    return jnp.dtype(dtype).type
