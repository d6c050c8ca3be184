"""Optimizers with torch.optim's API over fused multi-tensor kernels, learning-rate
schedules and gradient clipping.

Parameters may be torch tensors, ``fusedlearn.nn.Parameter`` objects or
``(array, grad_array)`` pairs; each step is one fused kernel call per
(param group, step count, device, dtype).
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adagrad import Adagrad
from .adadelta import Adadelta
from .rmsprop import RMSprop
from .adam import Adam, AdamW
from .adamax import Adamax
from .accsgd import AccSGD
from .sdprop import SDProp
from .nadam import NAdam
from .adafactor import Adafactor
from .radam import RAdam
from .rprop import Rprop
from .asgd import ASGD
from .grad_clip import clip_grad_norm_, clip_grad_value_, found_inf
from .schedules import (
    CosineAnnealingLR, ExponentialLR, InverseTimeLR, LRScheduler, ReduceLROnPlateau, StepLR,
)
from . import schedules
from .constraints import GRUSpectralConstraint

__all__ = [
    "Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "AccSGD", "SDProp", "NAdam", "RAdam", "Rprop", "ASGD", "Adafactor",
    "clip_grad_norm_", "clip_grad_value_", "found_inf",
    "LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau", "InverseTimeLR",
    "schedules",
]
__all__ += ["GRUSpectralConstraint"]
