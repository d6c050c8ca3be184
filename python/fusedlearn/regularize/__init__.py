"""Weight regularisers: plain L2, L1, and layer-wise adaptive weight decay (Ishii & Sato 2017).

* :class:`L2` — one coefficient for every weight matrix (the usual ``weight_decay``);
* :class:`LayerwiseWeightDecay` — a coefficient per layer, ``lambda_i = c * |grad w_i| / |w_i|``,
  so the weight decay holds the same ratio ``c`` to the back-propagated gradient in every layer;
* :class:`L1` — ``strength * sign(w)`` added to the gradients.

The L2 kinds hand their coefficients to any :mod:`fusedlearn.optim` optimizer as
parameter groups (``optimizer = SGD(reg.param_groups(), lr=...)``), so the fused
optimizer kernels apply ``lambda_i * w`` in their single pass over memory;
``apply()`` adds the penalty gradients explicitly instead, and :func:`with_penalty`
wraps an optimizer so that ``step()`` does that first.
"""
from .weight_decay import L1, L2, LayerwiseWeightDecay, weight_layers, with_penalty

__all__ = ["L2", "L1", "LayerwiseWeightDecay", "weight_layers", "with_penalty"]
