"""The dtype policy: weights as stored (or as asked), arithmetic in float32, float64 under x64."""
import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST

# the weight dtypes loopjax accepts, by name and alias
DTYPE_NAMES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
               "float16": jnp.float16, "fp16": jnp.float16, "float64": jnp.float64, "fp64": jnp.float64}
_WEIGHT_DTYPES = {np.dtype(t): t for t in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64)}
_WEIGHTS_MUST_BE = "weights must be float32, bfloat16, float16 or float64"


def compute_dtype():
    """Activations, tangents, QR and log-growth sums: float64 when jax x64 is on, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def parse_dtype(dtype, *, check_x64: bool = True):
    """None (keep as stored), a name ('float32', 'bf16', ...) or a dtype object (jnp.bfloat16, np.float16,
    np.dtype('float32'), ...) -> the jnp scalar type (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64) or None.

    Only floating-point weight dtypes are accepted; float64 only while jax x64 is on (checked at call time,
    since the x64 flag can change after import). check_x64=False skips that check, for dtypes that only say how
    to store weights in a file (numpy writes float64 without x64).
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype in DTYPE_NAMES:
            kind = np.dtype(DTYPE_NAMES[dtype])
        else:
            try:
                kind = np.dtype(jnp.dtype(dtype))
            except TypeError:
                raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_NAMES)}") from None
    else:
        try:
            kind = np.dtype(jnp.dtype(dtype))
        except TypeError:
            raise ValueError(f"unknown dtype {dtype!r}; {_WEIGHTS_MUST_BE}") from None
    if not jnp.issubdtype(kind, jnp.floating):
        raise ValueError(f"dtype {kind.name} is not a floating-point dtype; {_WEIGHTS_MUST_BE}")
    if kind not in _WEIGHT_DTYPES:
        raise ValueError(f"dtype {kind.name} is not supported; {_WEIGHTS_MUST_BE}")
    if check_x64 and kind == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax x64: call jax.config.update('jax_enable_x64', True) "
                         "(CLI: --x64) first")
    return _WEIGHT_DTYPES[kind]
