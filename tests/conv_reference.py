"""Naive numpy references (float64) for conv2d, pooling and batch norm, with their gradients."""
import numpy as np


def conv2d_ref(x, w, b, stride, pad, dil, groups):
    """y and a function grad(gy) -> (gx, gw, gb), by explicit loops over the kernel taps."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    OH = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    Kg = K // groups
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x

    def tap(r, s):  # [N, C, OH, OW] view of the inputs read by tap (r, s)
        return xp[:, :, r * dh: r * dh + sh * (OH - 1) + 1: sh, s * dw: s * dw + sw * (OW - 1) + 1: sw]

    y = np.zeros((N, K, OH, OW))
    for g in range(groups):
        ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
        for r in range(R):
            for s in range(S):
                y[:, ks] += np.einsum("kc,nchw->nkhw", w[ks, :, r, s], tap(r, s)[:, cs])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]

    def grad(gy):
        gy = np.asarray(gy, np.float64)
        gxp = np.zeros_like(xp)
        gw = np.zeros_like(w)
        for g in range(groups):
            ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
            for r in range(R):
                for s in range(S):
                    gw[ks, :, r, s] = np.einsum("nkhw,nchw->kc", gy[:, ks], tap(r, s)[:, cs])
                    gxp[:, cs, r * dh: r * dh + sh * (OH - 1) + 1: sh, s * dw: s * dw + sw * (OW - 1) + 1: sw] += \
                        np.einsum("kc,nkhw->nchw", w[ks, :, r, s], gy[:, ks])
        return gxp[:, :, ph:ph + H, pw:pw + W], gw, gy.sum(axis=(0, 2, 3))

    return y, grad


def _windows(H, W, k, s, p, d, ceil_mode):
    def out(n, kk, ss, pp, dd):
        span = n + 2 * pp - dd * (kk - 1) - 1
        o = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (o - 1) * ss >= n + pp:
            o -= 1
        return o
    return out(H, k[0], s[0], p[0], d[0]), out(W, k[1], s[1], p[1], d[1])


def max_pool_ref(x, k, s, p, d, ceil_mode=False):
    """(y, flat indices), loops over outputs."""
    x = np.asarray(x, np.float64)
    *lead, H, W = x.shape
    OH, OW = _windows(H, W, k, s, p, d, ceil_mode)
    planes = x.reshape(-1, H, W)
    y = np.empty((planes.shape[0], OH, OW))
    idx = np.empty((planes.shape[0], OH, OW), np.int64)
    for pl in range(planes.shape[0]):
        for i in range(OH):
            for j in range(OW):
                best, bi = -np.inf, None
                for r in range(k[0]):
                    for t in range(k[1]):
                        h, w_ = i * s[0] - p[0] + r * d[0], j * s[1] - p[1] + t * d[1]
                        if 0 <= h < H and 0 <= w_ < W:
                            if bi is None:
                                bi = h * W + w_
                            if planes[pl, h, w_] > best:
                                best, bi = planes[pl, h, w_], h * W + w_
                y[pl, i, j], idx[pl, i, j] = best, bi
    return y.reshape(*lead, OH, OW), idx.reshape(*lead, OH, OW)


def avg_pool_ref(x, k, s, p, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """(y, grad(gy) -> gx), torch's divisor rules."""
    x = np.asarray(x, np.float64)
    *lead, H, W = x.shape
    OH, OW = _windows(H, W, k, s, p, (1, 1), ceil_mode)
    planes = x.reshape(-1, H, W)
    y = np.zeros((planes.shape[0], OH, OW))
    win = {}
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            div = divisor_override or (size if count_include_pad else (h1 - h0) * (w1 - w0))
            win[i, j] = (h0, h1, w0, w1, div)
            y[:, i, j] = planes[:, h0:h1, w0:w1].sum(axis=(1, 2)) / div

    def grad(gy):
        gyp = np.asarray(gy, np.float64).reshape(-1, OH, OW)
        gx = np.zeros_like(planes)
        for (i, j), (h0, h1, w0, w1, div) in win.items():
            gx[:, h0:h1, w0:w1] += (gyp[:, i, j] / div)[:, None, None]
        return gx.reshape(x.shape)

    return y.reshape(*lead, OH, OW), grad


def batch_norm_ref(x, weight, bias, eps):
    """Training-mode batch norm: (y, mean, biased var, grad(gy) -> (gx, gw, gb))."""
    x = np.asarray(x, np.float64)
    ax = (0, 2, 3)
    mean = x.mean(axis=ax)
    var = x.var(axis=ax)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None, None]) * inv[None, :, None, None]
    y = xhat * weight[None, :, None, None] + bias[None, :, None, None]

    def grad(gy):
        M = x.size // x.shape[1]
        gb = gy.sum(axis=ax)
        gw = (gy * xhat).sum(axis=ax)
        gx = (weight * inv)[None, :, None, None] * (gy - gb[None, :, None, None] / M
                                                     - xhat * gw[None, :, None, None] / M)
        return gx, gw, gb

    return y, mean, var, grad
