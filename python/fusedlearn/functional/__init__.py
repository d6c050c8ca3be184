"""Thin functional wrappers over the compiled kernels (``fusedlearn._C``)."""
from .optim import (  # noqa: F401
    adafactor_, accsgd_, adadelta_, adagrad_, adam_, adamax_, adamw_, asgd_, nadam_, radam_, rmsprop_, rprop_, sdprop_,
    sgd_,
)
from .grad_utils import abs_max, clamp_, has_nonfinite, scale_, sum_of_squares  # noqa: F401
from .gemm import gemm, linear  # noqa: F401
from .rnn import rnn_backward, rnn_cell, rnn_forward  # noqa: F401
from .conv import (  # noqa: F401
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, batch_norm,
    batch_norm_backward, conv2d, conv2d_backward, conv2d_paths, max_pool2d, max_pool2d_backward,
)
