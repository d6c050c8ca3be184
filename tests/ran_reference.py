"""Float64 numpy reference of one RAN / RAN-EKF step (docs/math/ran.md), with
parameters unpacked (bias b (m), weights alpha (K, m), centres C (K, d),
widths w (K)) and a full covariance P."""
import numpy as np


def evaluate(b, alpha, C, w, x):
    diff = x[None, :] - C
    d2 = (diff ** 2).sum(axis=1)
    phi = np.exp(-d2 / w ** 2)
    f = b + phi @ alpha
    K, m = alpha.shape
    d = C.shape[1]
    A = np.zeros((m, m + K * (m + d)))
    A[:, :m] = np.eye(m)
    for k in range(K):
        off = m + k * (m + d)
        A[:, off:off + m] = phi[k] * np.eye(m)
        A[:, off + m:off + m + d] = (2 * alpha[k][:, None] / w[k] ** 2) * phi[k] * diff[k][None, :]
    return phi, f, A, d2


def pack(b, alpha, C):
    return np.concatenate([b] + [np.concatenate([alpha[k], C[k]]) for k in range(len(C))])


def unpack(theta, K, d, m):
    blk = theta[m:m + K * (m + d)].reshape(K, m + d)
    return theta[:m].copy(), blk[:, :m].copy(), blk[:, m:].copy()


def step(state, x, y, *, delta, epsilon, kappa, eta=0.0, ekf=False, R=1.0, P0=1.0, Q0=0.0, centre_power=1):
    """state: dict b, alpha, C, w (and P); returns (allocated, e); updates state."""
    b, alpha, C, w = state["b"], state["alpha"], state["C"], state["w"]
    K, m = alpha.shape
    d = x.shape[0]
    phi, f, A, d2 = evaluate(b, alpha, C, w, x)
    e = y - f
    dist = np.sqrt(d2.min()) if K else np.inf
    if dist > delta and np.linalg.norm(e) > epsilon:
        state["alpha"] = np.vstack([alpha, e[None, :]])
        state["C"] = np.vstack([C, x[None, :]])
        state["w"] = np.append(w, kappa * (dist if np.isfinite(dist) else delta))
        if ekf:
            P = state["P"]
            p, q = P.shape[0], P.shape[0] + m + d
            Pn = np.zeros((q, q))
            Pn[:p, :p] = P
            Pn[p:, p:] = P0 * np.eye(m + d)
            state["P"] = Pn
        return True, e
    if ekf:
        P = state["P"]
        B = P @ A.T
        S = R * np.eye(m) + A @ B
        G = B @ np.linalg.inv(S)
        theta = pack(b, alpha, C) + G @ e
        state["P"] = P - G @ B.T + Q0 * np.eye(P.shape[0])
        state["b"], state["alpha"], state["C"] = unpack(theta, K, d, m)
    else:
        s = alpha @ e  # (K,) with the weights before the update
        g = 2 * eta * phi * s / (w ** centre_power)
        state["C"] = C + g[:, None] * (x[None, :] - C)
        state["alpha"] = alpha + eta * phi[:, None] * e[None, :]
        state["b"] = b + eta * e
    return False, e
