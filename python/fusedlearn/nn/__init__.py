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
from .rnn import GRU, LSTM
from .conv import Conv2d, Dropout2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .batchnorm import BatchNorm2d
from .sync_batchnorm import SyncBatchNorm2d
from . import init
from .embedding import Embedding
from .loss import SequenceCrossEntropyLoss
from .sequence import SequenceModel

__all__ = [
    "Parameter", "Module", "StateDictError", "IncompatibleKeys", "Linear", "ReLU", "Tanh", "Sigmoid",
    "Dropout", "Flatten", "Identity", "Sequential", "Residual", "CrossEntropyLoss", "MSELoss", "init",
    "Conv2d", "Dropout2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "SyncBatchNorm2d",
]
__all__ += ["LSTM", "GRU"]
__all__ += ["Embedding", "SequenceCrossEntropyLoss", "SequenceModel"]
