"""fusedlearn.regularize: layer-wise adaptive weight decay, L2 and L1 baselines, optimizer integration."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn
from fusedlearn.regularize import L1, L2, LayerwiseWeightDecay, weight_layers, with_penalty


def _mlp(dtype=np.float64, scales=(1.0, 1.0, 1.0), act="tanh", seed=0):
    m = nn.Sequential(nn.Linear(12, 16, activation=act, dtype=dtype, generator=seed),
                      nn.Linear(16, 16, activation=act, dtype=dtype, generator=seed + 1),
                      nn.Linear(16, 4, dtype=dtype, generator=seed + 2))
    for layer, s in zip((m[0], m[1], m[2]), scales):
        layer.weight.data *= s
    return m


def _data(n=64, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12))
    y = np.argmax(x @ np.random.default_rng(99).standard_normal((12, 4)), axis=1)  # learnable labels
    return x.astype(dtype), y


def _full_batch_grad_norms(model, x, y):
    loss = nn.CrossEntropyLoss()
    model.zero_grad()
    _, g = loss(model(x), y)
    model.backward(g)
    norms = [float(np.linalg.norm(m.weight.grad)) for _, m in weight_layers(model)]
    model.zero_grad()
    return norms


@pytest.mark.parametrize("anchor", ["ratio", "last"])
def test_ratio_is_equal_across_layers_when_gradient_scales_differ_by_orders(anchor):
    # Layer scales chosen so that the layers' gradient norms span orders of magnitude.
    model = _mlp(scales=(30.0, 0.01, 1.0), act=None)
    x, y = _data()
    s = _full_batch_grad_norms(model, x, y)
    assert max(s) / min(s) > 1e3, s
    c = 0.05
    lwd = LayerwiseWeightDecay(model, c, (x, y), nn.CrossEntropyLoss(), anchor=anchor, num_batches=1,
                               batch_size=len(x))
    n = [float(np.linalg.norm(m.weight.data)) for _, m in weight_layers(model)]
    ratios = [lam * ni / si for lam, ni, si in zip(lwd.layer_coefficients, n, s)]
    # independent measurement: every layer gets the same |lambda_i w_i| / |grad_i|
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    if anchor == "ratio":
        np.testing.assert_allclose(ratios, c, rtol=1e-9)
    else:
        assert lwd.layer_coefficients[-1] == pytest.approx(c, rel=1e-12)
    np.testing.assert_allclose(lwd.grad_scales, s, rtol=1e-9)
    # adjacent ratios chain to the measured scales
    np.testing.assert_allclose(lwd.adjacent_ratios, [s[0] / s[1], s[1] / s[2]], rtol=1e-9)
    # the coefficients span orders of magnitude too (a single lambda would not balance them)
    lam = lwd.layer_coefficients
    assert max(lam) / min(lam) > 100


def test_coefficients_per_parameter_and_bias_handling():
    model = _mlp()
    x, y = _data()
    lwd = LayerwiseWeightDecay(model, 0.1, (x, y), nn.CrossEntropyLoss())
    co = lwd.coefficients
    assert list(co) == [n for n, _ in model.named_parameters()]
    assert co["0.bias"] == 0.0 and co["2.bias"] == 0.0
    assert co["0.weight"] == lwd.layer_coefficients[0] > 0
    with_b = LayerwiseWeightDecay(model, 0.1, (x, y), nn.CrossEntropyLoss(), include_bias=True)
    assert with_b.coefficients["1.bias"] == with_b.coefficients["1.weight"] > 0


def test_random_estimator_needs_no_labels_and_tracks_the_loss_estimator():
    model = _mlp(scales=(30.0, 0.01, 1.0), act=None)
    x, y = _data(256)
    a = LayerwiseWeightDecay(model, 0.1, (x, y), nn.CrossEntropyLoss(), num_batches=4)
    b = LayerwiseWeightDecay(model, 0.1, x, estimator="random", num_batches=4)
    # Both see the same orders of magnitude between layers (within a factor 5).
    ra, rb = np.log10(a.layer_coefficients), np.log10(b.layer_coefficients)
    np.testing.assert_allclose(ra - ra[-1], rb - rb[-1], atol=0.7)


def _optimizers():
    O = fl.optim
    return [
        (O.SGD, dict(lr=0.1, momentum=0.9)),
        (O.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        (O.Adam, dict(lr=0.01)),
        (O.RMSprop, dict(lr=0.01, momentum=0.5)),
        (O.Adagrad, dict(lr=0.1)),
        (O.Adadelta, dict(lr=1.0)),
        (O.Adamax, dict(lr=0.01)),
        (O.AccSGD, dict(lr=0.01)),
        (O.SDProp, dict(lr=0.01)),
    ]


@pytest.mark.parametrize("cls,hyper", _optimizers(), ids=lambda v: getattr(v, "__name__", ""))
def test_param_groups_step_equals_manual_l2_in_the_gradient(cls, hyper):
    x, y = _data()
    ma, mb = _mlp(seed=3), _mlp(seed=3)
    lwd = LayerwiseWeightDecay(ma, 0.3, (x, y), nn.CrossEntropyLoss(), include_bias=True)
    coeffs = lwd.coefficients
    opt_a = cls(lwd.param_groups(**hyper), **hyper)
    opt_b = cls(mb.parameters(), **hyper)
    loss = nn.CrossEntropyLoss()
    for _ in range(3):
        for m, opt in ((ma, opt_a), (mb, opt_b)):
            opt.zero_grad()
            _, g = loss(m(x), y)
            m.backward(g)
        for name, p in mb.named_parameters():
            p.grad += coeffs[name] * p.data  # the manual L2 term
        opt_a.step()
        opt_b.step()
    for (na, pa), (nb, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        np.testing.assert_allclose(pa.data, pb.data, rtol=1e-12, atol=1e-13, err_msg=na)


def test_apply_and_with_penalty_match_the_manual_gradient():
    x, y = _data()
    ma, mb = _mlp(seed=5), _mlp(seed=5)
    loss = nn.CrossEntropyLoss()
    l1a, l2a = L1(ma, 0.01), L2(ma, 0.02)
    opt_a = with_penalty(fl.optim.SGD(ma.parameters(), lr=0.1), l1a, l2a)
    opt_b = fl.optim.SGD(mb.parameters(), lr=0.1)
    for _ in range(2):
        for m, opt in ((ma, opt_a), (mb, opt_b)):
            opt.zero_grad()
            _, g = loss(m(x), y)
            m.backward(g)
        for name, p in mb.named_parameters():
            if name.endswith("weight"):
                p.grad += 0.01 * np.sign(p.data) + 0.02 * p.data
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        np.testing.assert_allclose(pa.data, pb.data, rtol=1e-12, atol=1e-14)
    assert opt_a.param_groups is opt_a.optimizer.param_groups
    # a parameter without a gradient is left alone, like the optimizers do
    ma.zero_grad()
    l2a.apply()
    assert all(p.grad is None for p in ma.parameters())
    assert l1a.penalty() == pytest.approx(0.01 * sum(np.abs(m.weight.data).sum() for m in ma))
    assert l2a.penalty() == pytest.approx(0.01 * sum((m.weight.data ** 2).sum() for m in ma))


def test_reestimation_during_fit_updates_the_optimizer_groups():
    x, y = _data(128)
    model = _mlp(seed=7)
    lwd = LayerwiseWeightDecay(model, 0.1, (x, y), nn.CrossEntropyLoss(), reestimate_every=3, num_batches=2)
    first = list(lwd.layer_coefficients)
    opt = fl.optim.SGD(lwd.param_groups(), lr=0.2, momentum=0.9)
    fl.train.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=2, batch_size=32, callbacks=[lwd],
                 progress=False)
    assert lwd.layer_coefficients != first
    wd = [g["weight_decay"] for g in opt.param_groups[:3]]
    np.testing.assert_allclose(wd, lwd.layer_coefficients)
    assert opt.param_groups[3]["weight_decay"] == 0.0  # biases
    np.testing.assert_allclose(lwd.ratios(), 0.1, rtol=1e-9)


def test_reestimate_keeps_the_gradients():
    x, y = _data()
    model = _mlp()
    lwd = LayerwiseWeightDecay(model, 0.1, (x, y), nn.CrossEntropyLoss())
    for p in model.parameters():
        p.grad = np.full_like(p.data, 7.0)
    lwd.reestimate()
    assert all((p.grad == 7.0).all() for p in model.parameters())


@pytest.mark.parametrize("make", [
    lambda m, d: L2(m, 1e-3),
    lambda m, d: L1(m, 1e-4),
    lambda m, d: LayerwiseWeightDecay(m, 1e-3, d, nn.CrossEntropyLoss()),
], ids=["l2", "l1", "layerwise"])
def test_short_training_run_lowers_the_loss(make):
    x, y = _data(128, np.float32)
    model = _mlp(np.float32, act="relu")
    reg = make(model, (x, y))
    if isinstance(reg, L1):
        opt = with_penalty(fl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), reg)
    else:
        opt = fl.optim.SGD(reg.param_groups(), lr=0.1, momentum=0.9)
    h = fl.train.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=15, batch_size=32, progress=False)
    assert h["loss"][-1] < 0.6 * h["loss"][0]


def test_bad_inputs_raise():
    x, y = _data()
    model = _mlp()
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="c must be finite and >= 0"):
        LayerwiseWeightDecay(model, -1.0, (x, y), ce)
    with pytest.raises(TypeError, match="c must be a number"):
        LayerwiseWeightDecay(model, "0.1", (x, y), ce)
    with pytest.raises(ValueError, match="data is required"):
        LayerwiseWeightDecay(model, 0.1)
    with pytest.raises(ValueError, match="needs the loss"):
        LayerwiseWeightDecay(model, 0.1, (x, y))
    with pytest.raises(ValueError, match="anchor must be one of"):
        LayerwiseWeightDecay(model, 0.1, (x, y), ce, anchor="first")
    with pytest.raises(ValueError, match="estimator must be one of"):
        LayerwiseWeightDecay(model, 0.1, (x, y), ce, estimator="analytic")
    with pytest.raises(ValueError, match="reestimate_every must be"):
        LayerwiseWeightDecay(model, 0.1, (x, y), ce, reestimate_every=0)
    with pytest.raises(ValueError, match="num_batches must be"):
        LayerwiseWeightDecay(model, 0.1, (x, y), ce, num_batches=0)
    with pytest.raises(ValueError, match="has no weight layers"):
        L2(nn.Sequential(nn.ReLU()), 0.1)
    with pytest.raises(TypeError, match="expected a fusedlearn.nn.Module"):
        L2([np.zeros((2, 2))], 0.1)
    with pytest.raises(ValueError, match="weight_decay must be finite and >= 0"):
        L2(model, float("nan"))
    with pytest.raises(ValueError, match="'params' and 'weight_decay' are set by the regulariser"):
        L2(model, 0.1).param_groups(weight_decay=0.1)
    with pytest.raises(TypeError, match="expected an optimizer"):
        with_penalty(object(), L1(model, 0.1))
    zero = _mlp()
    zero[1].weight.data[:] = 0
    with pytest.raises(ValueError, match="weight of layer '1' is all zeros"):
        LayerwiseWeightDecay(zero, 0.1, (x, y), ce)
    opt = fl.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="mixes parameters with different coefficients"):
        L2(model, 0.1).update_optimizer(opt)
