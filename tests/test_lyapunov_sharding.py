"""Probe-axis sharding over a Mesh of 8 (forced host) CPU devices, in a subprocess."""

import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import re
    import numpy as np
    import jax
    import jax.numpy as jnp  # noqa: F811
    from jax.sharding import Mesh
    from jax.tree_util import Partial
    from loopjax.engine import lyapunov
    from loopjax.engine.lyapunov import benettin

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("p",))
    rng = np.random.default_rng(0)
    d = 24
    W = jnp.asarray(2.0 * rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32)

    def layer(W, z):
        return jnp.tanh(jnp.matmul(W, z.reshape(-1), precision="highest")).reshape(z.shape) + 0.1 * z

    f = Partial(layer, W)
    z0 = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    Q0 = jnp.asarray(np.linalg.qr(rng.normal(size=(d, 16)))[0], jnp.float32)

    ref = benettin(f, z0, k=16, steps=40, probes=Q0)
    shd = benettin(f, z0, k=16, steps=40, probes=Q0, mesh=mesh)
    np.testing.assert_allclose(shd.exponents, ref.exponents, atol=1e-5)
    np.testing.assert_allclose(shd.log_growth, ref.log_growth, atol=1e-4)
    np.testing.assert_allclose(shd.final_state, ref.final_state, atol=1e-6)
    assert float(ref.exponents.max() - ref.exponents.min()) > 0.1  # a non-trivial spectrum

    # The compiled program really is partitioned over the probe axis: 8 partitions, each device runs
    # the tangent map on 16/8 = 2 probe columns (f32[24,2] blocks), and the columns are all-gathered
    # for the QR. None of this is in the single-device program.
    kw = dict(steps=40, warmup=0, renorm_every=1, probe_chunk=None, squeeze=True)
    acc = (jnp.zeros((1, 16)), jnp.zeros((1, 16)), jnp.float32(0), None)  # Kahan sum, compensation, t0, mask
    hlo = lyapunov._core.lower((f,), z0, Q0, *acc, mesh=mesh, **kw).compile().as_text()
    hlo1 = lyapunov._core.lower((f,), z0, Q0, *acc, mesh=None, **kw).compile().as_text()
    assert "num_partitions=8" in hlo, hlo[:300]
    assert "all-gather" in hlo and "all-gather" not in hlo1
    block = r"f32\\[24,2\\]|f32\\[2,24\\]"
    assert re.search(block, hlo) and not re.search(block, hlo1)

    # a 2-D mesh shards the probes over both axes
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    shd2 = benettin(f, z0, k=16, steps=40, probes=Q0, mesh=mesh2)
    np.testing.assert_allclose(shd2.exponents, ref.exponents, atol=1e-5)

    try:
        benettin(f, z0, k=12, steps=40, key=jax.random.PRNGKey(0), mesh=mesh)
    except ValueError as e:
        assert "k=12 must be a multiple of the number of mesh devices (8)" in str(e), e
    else:
        raise AssertionError("k=12 over 8 devices did not raise")
    print("SHARDING-OK")
""")


def test_probe_sharding_matches_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "SHARDING-OK" in proc.stdout
