"""Thin functional wrappers over the compiled kernels (``fusedlearn._C``)."""
from .optim import (  # noqa: F401
    accsgd_, adadelta_, adagrad_, adam_, adamax_, adamw_, rmsprop_, sdprop_, sgd_,
)
from .grad_utils import abs_max, clamp_, has_nonfinite, scale_, sum_of_squares  # noqa: F401
from .gemm import gemm, linear  # noqa: F401
from .rnn import rnn_backward, rnn_cell, rnn_forward  # noqa: F401
