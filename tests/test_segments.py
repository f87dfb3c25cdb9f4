"""A run continued in segments inside the engine (benettin -> benettin_continue ... -> concatenate) equals
one uninterrupted run: the compensated sum, the step count and the probes are carried, not re-summed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.engine.lyapunov import LyapunovResult, benettin, benettin_continue, benettin_sublayers, concatenate


def _map():
    rng = np.random.default_rng(0)
    W = jnp.asarray(1.5 * rng.normal(size=(12, 12)) / np.sqrt(12), jnp.float32)
    return lambda z: jnp.tanh(W @ z.reshape(-1)).reshape(z.shape) + 0.3 * z, jnp.ones((3, 4), jnp.float32)


@pytest.mark.parametrize("cuts", [(10,), (3, 4, 3), (1, 9)])
def test_segments_equal_one_run(cuts):
    f, z0 = _map()
    one = benettin(f, z0, k=5, steps=sum(cuts), key=jax.random.key(1))
    seg = benettin(f, z0, k=5, steps=cuts[0], key=jax.random.key(1))
    parts = [seg]
    for n in cuts[1:]:
        parts.append(benettin_continue(f, parts[-1], steps=n))
    joined = concatenate(parts)
    assert joined.total_steps == one.total_steps == sum(cuts)
    for name in ("exponents", "log_growth", "running", "final_state", "final_probes", "state_norms", "log_sum"):
        np.testing.assert_array_equal(np.asarray(getattr(joined, name)), np.asarray(getattr(one, name)), name)


def test_sublayer_segments_and_saved_arrays_equal_one_run():
    f, z0 = _map()
    maps = (lambda z: 0.9 * f(z), lambda z: f(z) + 0.1)
    one = benettin_sublayers(maps, z0, k=3, steps=8, key=jax.random.key(2))
    first = benettin_sublayers(maps, z0, k=3, steps=5, key=jax.random.key(2))
    restored = LyapunovResult.from_arrays({k: np.asarray(v) for k, v in first.to_arrays().items()},
                                          total_steps=5, names=first.names)  # as after an orbax round trip
    joined = concatenate([restored, benettin_continue(maps, restored, steps=3)])
    np.testing.assert_array_equal(np.asarray(joined.exponents), np.asarray(one.exponents))
    np.testing.assert_array_equal(np.asarray(joined.log_growth), np.asarray(one.log_growth))


def test_segment_errors():
    f, z0 = _map()
    a = benettin(f, z0, k=2, steps=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="not consecutive"):
        concatenate([a, a])
    with pytest.raises(ValueError, match="no segments"):
        concatenate([])
    with pytest.raises(ValueError, match="accumulation state"):
        benettin_continue(f, LyapunovResult.from_json(a.to_json()), steps=2)


def test_key_scheme_int_and_bad_keys():
    m = loopjax.load("builtin:ouro-tiny-random")
    ids = np.array([3, 4, 5], np.int32)
    a = loopjax.lambda1(m, ids, steps=3, key=5)
    b = loopjax.lambda1(m, ids, steps=3, key=jax.random.key(5))
    assert float(a) == float(b)
    with pytest.raises(TypeError, match="key must be"):
        loopjax.lambda1(m, ids, steps=3, key="seed")
    with pytest.raises(ValueError, match="empty"):
        loopjax.spectrum(m, [], k=1, steps=2)
