"""Weight initialisation with ``torch.nn.init``'s names and formulas.

Each function fills a ``Parameter`` (or a floating-point numpy array) in place
and returns it.  Random numbers come from ``generator`` (a
``numpy.random.Generator``) when given, else from this module's generator,
which :func:`manual_seed` reseeds.  Draws are made in float64 and cast.
"""
from __future__ import annotations

import math

import numpy as np

from .parameter import Parameter

__all__ = [
    "manual_seed", "default_generator", "calculate_gain", "uniform_", "normal_", "zeros_", "ones_",
    "constant_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]

_generator = np.random.default_rng()


def manual_seed(seed) -> np.random.Generator:
    """Reseed the generator the init functions use by default; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


def _array(tensor) -> np.ndarray:
    arr = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"init: expected a Parameter or numpy array, got {type(tensor).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"init: expected a floating-point array, got dtype {arr.dtype}")
    return arr


def _rng(generator) -> np.random.Generator:
    if generator is None:
        return _generator
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def _fill(tensor, values):
    arr = _array(tensor)
    arr[...] = values
    return tensor


def calculate_gain(nonlinearity: str, param=None) -> float:
    """torch's recommended gain for a nonlinearity."""
    linear = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid", "identity"}
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fans(arr: np.ndarray) -> tuple:
    if arr.ndim < 2:
        raise ValueError("fan in and fan out can not be computed for an array with fewer than 2 dimensions")
    receptive = int(np.prod(arr.shape[2:])) if arr.ndim > 2 else 1
    return arr.shape[1] * receptive, arr.shape[0] * receptive


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    arr = _array(tensor)
    return _fill(tensor, _rng(generator).uniform(a, b, arr.shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    arr = _array(tensor)
    return _fill(tensor, _rng(generator).normal(mean, std, arr.shape))


def constant_(tensor, val: float):
    return _fill(tensor, val)


def zeros_(tensor):
    return _fill(tensor, 0.0)


def ones_(tensor):
    return _fill(tensor, 1.0)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    fan_in, fan_out = _fans(_array(tensor))
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    fan_in, fan_out = _fans(_array(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(arr, a, mode, nonlinearity) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _fans(arr)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError("kaiming init of an array with a zero-sized dimension")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None):
    """He initialisation, uniform: bound = gain * sqrt(3 / fan)."""
    bound = math.sqrt(3.0) * _kaiming_std(_array(tensor), a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None):
    """He initialisation, normal: std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(_array(tensor), a, mode, nonlinearity), generator)
