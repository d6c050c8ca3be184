"""Conventional image augmentation: random shifts of a few pixels and small rotations (numpy only).

:func:`shift_rotate` warps a batch with one rotation angle and one shift per image
(bilinear interpolation, ``fill`` outside the image); :class:`RandomShiftRotate`
draws those from a seeded generator, so an augmented run is reproducible.
"""
from __future__ import annotations

import math

import numpy as np


def _as_images(x, image_shape, who: str):
    """``x`` as ``[N, C, H, W]`` plus a function giving an array back in ``x``'s shape."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: images must be a floating-point array, got dtype {x.dtype}")
    shape = x.shape
    if image_shape is not None:
        img = tuple(int(s) for s in image_shape)
        if len(img) == 2:
            img = (1, *img)
        if len(img) != 3 or x.ndim < 2 or int(np.prod(shape[1:])) != int(np.prod(img)):
            raise ValueError(f"{who}: image_shape {tuple(image_shape)} does not fit inputs of shape {shape}")
        return x.reshape(shape[0], *img), (lambda y: y.reshape(shape))
    if x.ndim == 4:
        return x, (lambda y: y)
    if x.ndim == 3:
        return x[:, None], (lambda y: y[:, 0])
    raise ValueError(f"{who}: expected images [N, C, H, W] or [N, H, W] (or flat inputs with image_shape=), "
                     f"got shape {shape}")


def shift_rotate(x, shifts, degrees, *, image_shape=None, fill: float = 0.0) -> np.ndarray:
    """Images of ``x`` rotated by ``degrees[n]`` about their centre and shifted by ``shifts[n]``.

    ``x``: ``[N, C, H, W]``, ``[N, H, W]``, or ``[N, D]`` with ``image_shape=(C, H, W)`` or
    ``(H, W)``.  ``shifts``: ``[N, 2]`` as (down, right) pixels (may be fractional);
    ``degrees``: ``[N]``, counter-clockwise as the image is displayed (row 0 at the top).
    Output pixel ``(i, j)`` reads the input at ``R(-theta) ((i, j) - centre - shift) + centre``
    by bilinear interpolation; samples outside the image read ``fill``.  A new array of ``x``'s
    shape and dtype is returned.
    """
    imgs, back = _as_images(x, image_shape, "shift_rotate")
    n, c, h, w = imgs.shape
    shifts = np.asarray(shifts, dtype=np.float64)
    degrees = np.asarray(degrees, dtype=np.float64)
    if shifts.shape != (n, 2):
        raise ValueError(f"shift_rotate: shifts must have shape ({n}, 2), got {shifts.shape}")
    if degrees.shape != (n,):
        raise ValueError(f"shift_rotate: degrees must have shape ({n},), got {degrees.shape}")
    if not (np.isfinite(shifts).all() and np.isfinite(degrees).all()):
        raise ValueError("shift_rotate: shifts and degrees must be finite")
    theta = np.deg2rad(degrees)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    y = ii[None] - cy - shifts[:, 0, None, None]
    xx = jj[None] - cx - shifts[:, 1, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    ys = cos * y + sin * xx + cy
    xs = -sin * y + cos * xx + cx
    # Snap coordinates within rounding of an integer, so whole-pixel moves and quarter turns are exact.
    for a in (ys, xs):
        r = np.round(a)
        np.copyto(a, r, where=np.abs(a - r) < 1e-9)
    y0, x0 = np.floor(ys), np.floor(xs)
    wy, wx = ys - y0, xs - x0
    flat = imgs.reshape(n, c, h * w)
    out = np.zeros((n, c, h * w), dtype=np.float64)
    for dy, dx, wgt in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = y0 + dy, x0 + dx
        inside = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
        idx = (np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)).astype(np.intp).reshape(n, 1, h * w)
        vals = np.take_along_axis(flat, np.broadcast_to(idx, (n, c, h * w)), axis=2)
        vals = np.where(inside.reshape(n, 1, h * w), vals, fill)
        out += wgt.reshape(n, 1, h * w) * vals
    return back(out.reshape(n, c, h, w).astype(imgs.dtype))


class RandomShiftRotate:
    """Random whole-pixel shifts in ``[-max_shift, max_shift]`` (each axis; with
    ``integer_shifts=False`` uniform real shifts, interpolated, for images too small for whole
    pixels) and rotations by an angle uniform in ``[-max_degrees, max_degrees]``, one draw per
    image per call, from a
    generator seeded with ``seed`` (:meth:`manual_seed` reseeds it).  Call it on a batch::

        aug = RandomShiftRotate(max_shift=2, max_degrees=10, seed=0)
        xb_aug = aug(xb)            # same shape and dtype as xb

    Flat inputs need ``image_shape`` (``(H, W)`` or ``(C, H, W)``).  Use it in
    :func:`fusedlearn.train.fit` through ``objective=fusedlearn.train.augmented(aug)``.
    """

    def __init__(self, max_shift=2, max_degrees: float = 10.0, *, integer_shifts: bool = True, image_shape=None,
                 fill: float = 0.0, seed=None) -> None:
        if integer_shifts and (isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer))
                               or max_shift < 0):
            raise ValueError(f"RandomShiftRotate: max_shift must be an integer >= 0, got {max_shift!r} "
                             "(fractional shifts need integer_shifts=False)")
        if not integer_shifts and not (isinstance(max_shift, (int, float, np.integer, np.floating))
                                       and math.isfinite(float(max_shift)) and max_shift >= 0):
            raise ValueError(f"RandomShiftRotate: max_shift must be a finite number >= 0, got {max_shift!r}")
        if not math.isfinite(float(max_degrees)) or not 0.0 <= float(max_degrees) <= 180.0:
            raise ValueError(f"RandomShiftRotate: max_degrees must be in [0, 180], got {max_degrees!r}")
        self.integer_shifts = bool(integer_shifts)
        self.max_shift = int(max_shift) if self.integer_shifts else float(max_shift)
        self.max_degrees = float(max_degrees)
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.fill = float(fill)
        self._rng = np.random.default_rng(seed)

    def manual_seed(self, seed) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, x) -> np.ndarray:
        n = len(x)
        if self.integer_shifts:
            shifts = self._rng.integers(-self.max_shift, self.max_shift + 1, size=(n, 2)).astype(np.float64)
        else:
            shifts = self._rng.uniform(-self.max_shift, self.max_shift, size=(n, 2))
        degrees = self._rng.uniform(-self.max_degrees, self.max_degrees, size=n)
        return shift_rotate(x, shifts, degrees, image_shape=self.image_shape, fill=self.fill)

    def __repr__(self) -> str:
        return f"RandomShiftRotate(max_shift={self.max_shift}, max_degrees={self.max_degrees})"
