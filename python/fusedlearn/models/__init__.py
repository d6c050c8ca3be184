"""Ready-made models (``fl.models``): LeNet-5, a small ResNet, a CNN for 8x8 digits.

All are :class:`fusedlearn.nn.Module` s with torch-style names; activations are
fused into the convolution / batch-norm / linear kernels where they follow one.
"""
from __future__ import annotations

import numpy as np

from .. import nn

__all__ = ["lenet5", "resnet_small", "digits_cnn", "BasicBlock"]


def _gen(seed):
    return np.random.default_rng(seed)


def lenet5(num_classes: int = 10, seed=None, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5-style CNN for ``1x28x28`` inputs (LeCun et al. 1998, with ReLU and max pooling):

    conv 5x5 (6, padding 2) -> ReLU -> maxpool 2 -> conv 5x5 (16) -> ReLU -> maxpool 2 ->
    flatten (16*5*5) -> 120 -> ReLU -> 84 -> ReLU -> ``num_classes``.
    """
    g = _gen(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, activation="relu", generator=g),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, activation="relu", generator=g),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, activation="relu", generator=g),
        nn.Linear(120, 84, activation="relu", generator=g),
        nn.Linear(84, num_classes, generator=g),
    )


def digits_cnn(num_classes: int = 10, seed=None) -> nn.Sequential:
    """A small CNN for the ``1x8x8`` digits: conv 3x3 (16, pad 1) -> ReLU -> maxpool 2 ->
    conv 3x3 (32, pad 1) -> ReLU -> maxpool 2 -> flatten (128) -> 64 -> ReLU -> ``num_classes``."""
    g = _gen(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, activation="relu", generator=g),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, activation="relu", generator=g),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64, activation="relu", generator=g),
        nn.Linear(64, num_classes, generator=g),
    )


class BasicBlock(nn.Module):
    """The basic residual block of He et al. (2016):
    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions (no bias);
    the shortcut is the identity, or a strided 1x1 convolution + batch norm when the shape changes
    (option B).  Names as torchvision: ``conv1, bn1, conv2, bn2, downsample.0/1``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, generator=None) -> None:
        super().__init__()
        g = generator
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, generator=g)
        self.bn1 = nn.BatchNorm2d(planes, activation="relu")
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, generator=g)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False, generator=g),
                                            nn.BatchNorm2d(planes))
        else:
            self.downsample = None
        self._y = None

    def forward(self, x):
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        sc = x if self.downsample is None else self.downsample(x)
        out += sc
        np.maximum(out, 0, out=out)
        self._y = out
        return out

    def backward(self, grad_out):
        if self._y is None:
            raise RuntimeError("BasicBlock: backward() called before forward()")
        g = np.where(self._y > 0, grad_out, np.zeros((), self._y.dtype))
        gx = self.conv1.backward(self.bn1.backward(self.conv2.backward(self.bn2.backward(g))))
        gx += g if self.downsample is None else self.downsample.backward(g)
        return gx


def resnet_small(num_classes: int = 10, blocks_per_stage: int = 1, width: int = 16, seed=None) -> nn.Sequential:
    """A CIFAR-style ResNet for ``3x32x32`` inputs (He et al. 2016, section 4.2): a 3x3 stem
    (``width`` channels, BN, ReLU), three stages of ``blocks_per_stage`` basic blocks with
    ``width, 2 width, 4 width`` channels (stride 2 at the start of stages 2 and 3), global average
    pooling and a linear classifier.  ``blocks_per_stage=1``: ResNet-8; 3: ResNet-20."""
    g = _gen(seed)
    layers = [nn.Conv2d(3, width, 3, padding=1, bias=False, generator=g), nn.BatchNorm2d(width, activation="relu")]
    in_planes = width
    for stage, planes in enumerate((width, 2 * width, 4 * width)):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(BasicBlock(in_planes, planes, stride, generator=g))
            in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes, generator=g)]
    return nn.Sequential(*layers)
