"""A 2-D mesh (prompts x probes) for batches: 8 forced host devices as (2, 4), a ragged list of prompts
sharded over "prompts" and each prompt's probes over "probes"; the exponents equal the 1-device ragged run
within float32 rounding, and the compiled program really is partitioned 8 ways with all-gathers."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numpy as np, jax, jax.numpy as jnp, loopjax
    from jax.sharding import Mesh
    from loopjax.engine.lyapunov import benettin
    assert len(jax.devices()) == 8
    m = loopjax.load("builtin:ouro-tiny-random")
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("prompts", "probes"))
    ids = [np.array([5, 6, 7, 8], np.int32), np.array([9, 10, 11], np.int32), np.array([3, 4, 5, 6, 7], np.int32)]
    ref = loopjax.spectrum(m, ids, k=4, steps=6, key=jax.random.key(1))
    got = loopjax.spectrum(m, ids, k=4, steps=6, key=jax.random.key(1), mesh=mesh)   # 3 prompts: padded to 4
    err = max(float(np.abs(np.asarray(a.exponents) - np.asarray(b.exponents)).max()) for a, b in zip(ref, got))
    assert err < 1e-5, err
    assert float(np.abs(np.asarray(ref[0].exponents)).max()) > 0.05   # a non-trivial spectrum

    batch = jnp.array([[5, 6, 7, 8], [9, 10, 11, 12]], jnp.int32)
    z0 = jnp.stack([loopjax.init_state(m, x) for x in batch])
    q = jnp.stack([jnp.linalg.qr(jax.random.normal(jax.random.key(i), (256, 4)))[0] for i in range(2)])
    def run(ids, z0, q):
        def one(i, z, qq):
            f, _ = loopjax.loop_map(m, i, init_state=z)
            return benettin(f, z, k=4, steps=3, probes=qq, mesh=mesh).exponents
        return jax.vmap(one, spmd_axis_name="prompts")(ids, z0, q)
    txt = jax.jit(run).lower(batch, z0, q).compile().as_text()
    assert "num_partitions=8" in txt and "all-gather" in txt
    print("ok", err)
""")


def test_prompts_by_probes_mesh_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
