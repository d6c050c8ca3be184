"""Neural-network building blocks with an explicit, module-level backward.

``Module.forward(x)`` caches what ``backward(grad_out)`` needs; ``backward``
accumulates parameter gradients into ``Parameter.grad`` and returns the input
gradient.  Names, arguments, defaults and weight layouts follow ``torch.nn``.
"""
from .parameter import Parameter
from .module import IncompatibleKeys, Module, StateDictError
from .linear import Linear
from .activation import ReLU, Sigmoid, Tanh
from .layers import Dropout, Flatten, Identity
from .container import Residual, Sequential
from .loss import CrossEntropyLoss, MSELoss
from .conv import Conv2d, Dropout2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .batchnorm import BatchNorm2d
from . import init

__all__ = [
    "Parameter", "Module", "StateDictError", "IncompatibleKeys", "Linear", "ReLU", "Tanh", "Sigmoid",
    "Dropout", "Flatten", "Identity", "Sequential", "Residual", "CrossEntropyLoss", "MSELoss", "init",
    "Conv2d", "Dropout2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d",
]
