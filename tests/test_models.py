"""Layers and models: finite-difference gradient checks (float64) of every CNN layer, torch's
parameter layouts and state_dict keys, outputs against torch with shared weights, and accuracy
(digits CNN >= 98 %; LeNet on Fashion-MNIST >= 89 %, where Debian's dataset-fashion-mnist is installed)."""
import os
import time

import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn
from test_nn_gradcheck import check_module


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, bias=False),  # depthwise
    dict(in_channels=3, out_channels=5, kernel_size=1, activation="tanh"),               # pointwise
    dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, activation="sigmoid"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", activation="relu"),
])
def test_conv2d_gradcheck(kwargs):
    rng = np.random.default_rng(0)
    m = nn.Conv2d(**kwargs, generator=rng)
    if m.bias is not None:
        m.bias.data[:] = np.abs(m.bias.data) + 0.05  # keep relu away from its kink
    check_module(m, rng.standard_normal((2, kwargs["in_channels"], 7, 6)), rng)


@pytest.mark.parametrize("layer", [
    lambda: nn.MaxPool2d(2),
    lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    lambda: nn.MaxPool2d((2, 3), dilation=(2, 1)),
    lambda: nn.AvgPool2d(3, stride=2, padding=1),
    lambda: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
    lambda: nn.AdaptiveAvgPool2d(1),
    lambda: nn.AdaptiveAvgPool2d((3, 2)),
])
def test_pool_gradcheck(layer):
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) / 7.0  # distinct values: the max is unique
    check_module(layer(), x, rng)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_gradcheck(activation, training):
    rng = np.random.default_rng(2)
    m = nn.BatchNorm2d(3, activation=activation)
    m.weight.data[:] = rng.standard_normal(3)
    m.bias.data[:] = rng.standard_normal(3)
    m.running_mean[:] = rng.standard_normal(3)
    m.running_var[:] = rng.random(3) + 0.5
    m.train(training)
    if training:  # the finite differences re-run forward: keep the running stats fixed
        m.momentum = 0.0
    check_module(m, rng.standard_normal((4, 3, 3, 2)), rng, tol=1e-5)


def test_dropout2d_fixed_mask_and_semantics():
    rng = np.random.default_rng(3)
    m = nn.Dropout2d(0.5, seed=7)
    check_module(m, rng.standard_normal((3, 4, 2, 2)), rng, before_forward=lambda: m.manual_seed(7))
    y = m(np.ones((8, 16, 3, 3)))
    per_channel = y.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2).all(axis=2))  # whole channels
    m.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    assert m(x) is x or np.array_equal(m(x), x)


def test_basic_block_and_resnet_gradcheck():
    rng = np.random.default_rng(4)
    for block, shape in ((fl.models.BasicBlock(2, 4, stride=2, generator=rng), (2, 2, 5, 5)),
                         (fl.models.BasicBlock(3, 3, generator=rng), (2, 3, 4, 4))):
        check_module(block, rng.standard_normal(shape), rng, before_forward=lambda: _freeze_bn(block), tol=1e-5)


def _freeze_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0


def test_layouts_and_state_dict_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [
        (nn.Conv2d(4, 6, (3, 2), stride=2, groups=2), torch.nn.Conv2d(4, 6, (3, 2), stride=2, groups=2)),
        (nn.Conv2d(3, 5, 1, bias=False), torch.nn.Conv2d(3, 5, 1, bias=False)),
        (nn.BatchNorm2d(7), torch.nn.BatchNorm2d(7)),
    ]
    for ours, theirs in pairs:
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        for k in sd:
            assert tuple(np.shape(sd[k])) == tuple(tsd[k].shape), k
    # torch's default init bound for a conv weight: sqrt(1 / fan_in)
    w = nn.Conv2d(8, 16, 3, generator=0).weight.data
    assert np.abs(w).max() <= 1 / np.sqrt(8 * 9) + 1e-7 and np.abs(w).max() > 0.8 / np.sqrt(8 * 9)
    # lenet5: a torch model with the same layers loads our state dict and computes the same output
    ours = fl.models.lenet5(seed=0)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 5),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(400, 120), torch.nn.ReLU(),
        torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10))
    ours_sd = ours.state_dict()
    tkeys = list(theirs.state_dict())
    mapped = dict(zip(tkeys, ours_sd.values()))
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in mapped.items()})
    x = np.random.default_rng(5).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_resnet_state_dict_roundtrip_and_eval():
    m = fl.models.resnet_small(seed=0)
    x = np.random.default_rng(6).standard_normal((4, 3, 32, 32)).astype(np.float32)
    m.train()
    m(x)
    m.eval()
    y = m(x)
    m2 = fl.models.resnet_small(seed=1)
    m2.load_state_dict({k: np.array(v, copy=True) for k, v in m.state_dict().items()})
    m2.eval()
    np.testing.assert_allclose(m2(x), y, rtol=1e-6)
    assert int(m.state_dict()["1.num_batches_tracked"]) == 1


def _train(model, train, test, epochs, batch, lr, seed=0):
    opt = fl.optim.Adam(model.parameters(), lr=lr)
    sched = fl.optim.CosineAnnealingLR(opt, T_max=epochs)
    fl.train.fit(model, nn.CrossEntropyLoss(), opt, train, epochs=epochs, batch_size=batch, scheduler=sched,
                 seed=seed, progress=False)
    return fl.train.evaluate(model, nn.CrossEntropyLoss(), test)["accuracy"]


def test_digits_cnn_accuracy():
    train, test = fl.data.digits(seed=0, flatten=False)
    before = fl.get_num_threads()
    fl.set_num_threads(1)  # tiny batches: a thread team costs more than it saves (far more on a loaded machine)
    try:
        acc = _train(fl.models.digits_cnn(seed=0), train, test, epochs=8, batch=32, lr=1e-3)
    finally:
        fl.set_num_threads(before)
    assert acc >= 0.98, acc


def test_lenet_fashion_mnist_accuracy():
    """The demo's CNN run (fusedlearn demo: the same model, optimizer, schedule and 5 epochs)."""
    try:
        train, test = fl.data.fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    t0 = time.perf_counter()
    acc = _train(fl.models.lenet5(seed=0), train, test, epochs=6, batch=64, lr=2e-3)
    print(f"LeNet-5 Fashion-MNIST: {acc:.4f} in {time.perf_counter() - t0:.1f} s")
    assert acc >= 0.89, acc
