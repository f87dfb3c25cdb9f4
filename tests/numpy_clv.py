"""An independent float64 NumPy implementation of Ginelli's covariant Lyapunov vectors (the test reference).

Written from the paper (Ginelli et al., PRL 99, 130601, 2007), not from loopjax.engine.clv: explicit Jacobians,
numpy QR, a Python loop, a different probe draw and backward start."""
import numpy as np


def ginelli(step, jacobian, z0, *, k, warmup, window, backward, seed=123):
    """CLVs (window, d, k), growth (window, k) log‖J v‖ and states (window, d) of z -> step(z)."""
    rng = np.random.default_rng(seed)
    z = np.asarray(z0, dtype=np.float64)
    Q = np.linalg.qr(rng.normal(size=(z.size, k)))[0]
    Qs, Rs, zs = [], [], []
    for t in range(warmup + window + backward):
        Q_next, R = np.linalg.qr(jacobian(z) @ Q)
        if t >= warmup:
            Rs.append(R)
            if t < warmup + window:
                Qs.append(Q)
                zs.append(z)
        Q, z = Q_next, step(z)
    C = np.triu(rng.uniform(0.5, 1.5, size=(k, k)))
    C /= np.linalg.norm(C, axis=0)
    Cs, growth = [None] * window, [None] * window
    for t in range(window + backward - 1, -1, -1):
        C = np.linalg.solve(Rs[t], C)  # R is upper triangular; a general solve is an independent route
        n = np.linalg.norm(C, axis=0)
        C = C / n
        if t < window:
            Cs[t], growth[t] = C, -np.log(n)
    V = np.stack([Qs[t] @ Cs[t] for t in range(window)])
    return V / np.linalg.norm(V, axis=1, keepdims=True), np.stack(growth), np.stack(zs)


def min_angle(V, split):
    """Minimal principal angle between span(V[:, :split]) and span(V[:, split:]) per step, via the SVD."""
    out = []
    for v in V:
        qa, qb = np.linalg.qr(v[:, :split])[0], np.linalg.qr(v[:, split:])[0]
        out.append(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False).max(), -1.0, 1.0)))
    return np.array(out)
