"""Fused multi-tensor optimizer steps.

Each ``<rule>_(params, grads, *state_lists, step=..., **hyper)`` updates every
array of ``params`` (and the state lists) in place in a single pass over
memory, with ``torch.optim``'s hyperparameter names and semantics.  Arrays may
be numpy arrays, torch tensors (CPU, or CUDA when built with CUDA) or anything
speaking DLPack / the buffer protocol; float32 takes the SIMD path, float64
the scalar reference path.  ``found_inf`` (a bool or a scalar array) skips the
step entirely when true, leaving parameters and state untouched.
"""
from .. import _C

sgd_ = _C.sgd_
adagrad_ = _C.adagrad_
adadelta_ = _C.adadelta_
rmsprop_ = _C.rmsprop_
adam_ = _C.adam_
adamw_ = _C.adamw_
adamax_ = _C.adamax_
accsgd_ = _C.accsgd_
sdprop_ = _C.sdprop_
nadam_ = _C.nadam_
radam_ = _C.radam_
rprop_ = _C.rprop_
asgd_ = _C.asgd_
adafactor_ = _C.adafactor_  # one tensor per call (factored state has its own shapes)

__all__ = ["sgd_", "adagrad_", "adadelta_", "rmsprop_", "adam_", "adamw_", "adamax_", "accsgd_", "sdprop_",
           "nadam_", "radam_", "rprop_", "asgd_", "adafactor_"]
