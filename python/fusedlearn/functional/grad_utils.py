"""Fused passes over lists of arrays: norms, non-finite detection, scaling, clamping."""
from .. import _C

sum_of_squares = _C.sum_of_squares
abs_max = _C.abs_max
has_nonfinite = _C.has_nonfinite
scale_ = _C.scale_
clamp_ = _C.clamp_

__all__ = ["sum_of_squares", "abs_max", "has_nonfinite", "scale_", "clamp_"]
