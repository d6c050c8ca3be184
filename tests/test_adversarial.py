"""fusedlearn.train.AdversarialFeatures, fusedlearn.train.augmented and fusedlearn.data.augment."""
import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn
from fusedlearn.data.augment import RandomShiftRotate, shift_rotate
from fusedlearn.train import AdversarialFeatures, augmented, kl_divergence
from test_nn_gradcheck import _numgrad, _sample


def _mlp(dtype=np.float64, act="tanh", seed=0, width=16):
    return nn.Sequential(nn.Linear(10, width, activation=act, dtype=dtype, generator=seed),
                         nn.Linear(width, width, activation=act, dtype=dtype, generator=seed + 1),
                         nn.Linear(width, 4, dtype=dtype, generator=seed + 2))


def _data(n=48, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10))
    y = np.argmax(x @ np.random.default_rng(99).standard_normal((10, 4)), axis=1)
    return x.astype(dtype), y


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2])
def test_perturbation_norm_bound_and_it_beats_a_random_direction(dtype, k):
    model = _mlp(dtype, seed=1)
    x, _ = _data(64, dtype)
    adv = AdversarialFeatures(model, eps=0.2, layers=[k], power_iterations=2, seed=0)
    f, g = model[:k], model[k:]
    h = f(x)
    p = _softmax(g(h).astype(np.float64))
    r = adv.perturbation(h, g)
    assert r.shape == h.shape and r.dtype == h.dtype
    hn = np.linalg.norm(h.reshape(len(h), -1).astype(np.float64), axis=1)
    rn = np.linalg.norm(r.reshape(len(r), -1).astype(np.float64), axis=1)
    assert (rn <= 0.2 * hn * (1 + 1e-5)).all()
    np.testing.assert_allclose(rn, 0.2 * hn, rtol=1e-5)  # the bound is attained
    rand = np.random.default_rng(1).standard_normal(h.shape)
    rand *= (rn / np.linalg.norm(rand, axis=1))[:, None]
    kl_adv = kl_divergence(p, g(h + r).astype(np.float64))
    kl_rand = kl_divergence(p, g(h + rand.astype(dtype)).astype(np.float64))
    assert kl_adv.mean() > 3 * kl_rand.mean()
    assert (kl_adv > kl_rand).mean() > 0.9


def test_kl_divergence_matches_its_definition():
    rng = np.random.default_rng(0)
    p = _softmax(rng.standard_normal((5, 3)))
    zq = rng.standard_normal((5, 3))
    q = _softmax(zq)
    np.testing.assert_allclose(kl_divergence(p, zq), (p * np.log(p / q)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(kl_divergence(p, np.log(p)), 0.0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2])
def test_adversarial_loss_gradients_match_finite_differences(k):
    model = _mlp(np.float64, seed=2)
    x, y = _data(12)
    ce = nn.CrossEntropyLoss()
    adv = AdversarialFeatures(model, eps=0.5, layers=[k], weight=0.7, seed=3)
    model.zero_grad()
    _, value, r = adv.loss_and_backward(model, ce, x, y, k)  # r* drawn here, then held fixed
    analytic = {n: p.grad.copy() for n, p in model.named_parameters()}

    def objective():
        h = model[:k](x)
        g = model[k:]
        return ce(g(h), y)[0] + 0.7 * ce(g(h + r), y)[0]

    assert objective() == pytest.approx(value, rel=1e-12)
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        idx = _sample(p.data.shape, rng, k=6)
        fd = _numgrad(objective, p.data, idx)
        np.testing.assert_allclose([analytic[name][i] for i in idx], fd, rtol=1e-6, atol=1e-9, err_msg=name)


def test_power_iteration_leaves_parameter_gradients_alone():
    model = _mlp(seed=4)
    x, _ = _data()
    for p in model.parameters():
        p.grad = np.full_like(p.data, 3.0)
    saved = [p.grad for p in model.parameters()]
    adv = AdversarialFeatures(model, eps=0.3, layers=[1], power_iterations=3, seed=0)
    adv.perturbation(model[:1](x), model[1:])
    assert all(p.grad is s and (s == 3.0).all() for p, s in zip(model.parameters(), saved))


def test_split_points_default_random_choice_and_determinism():
    model = _mlp(np.float32)
    x, y = _data(32, np.float32)
    adv = AdversarialFeatures(model, eps=0.3, seed=5)
    assert adv.layers == [1, 2]  # inputs of the 2nd and 3rd weight layers
    ce = nn.CrossEntropyLoss()
    seen = set()
    for _ in range(20):
        model.zero_grad()
        adv(model, ce, x, y)
        seen.add(adv.last_split)
    assert seen == {1, 2}
    outs = []
    for _ in range(2):
        m = _mlp(np.float32)
        a = AdversarialFeatures(m, eps=0.3, seed=11)
        a(m, ce, x, y)
        outs.append([p.grad.copy() for p in m.parameters()])
    for g1, g2 in zip(*outs):
        np.testing.assert_array_equal(g1, g2)
    cnnish = nn.Sequential(nn.Flatten(), nn.Linear(10, 8, generator=0), nn.ReLU(), nn.Flatten(),
                           nn.Linear(8, 4, generator=1))
    assert AdversarialFeatures(cnnish, eps=0.1).layers == [4]  # never the (flattened) input


@pytest.mark.parametrize("method", ["adversarial", "augmented", "both"])
def test_short_training_run_lowers_the_loss(method):
    rng = np.random.default_rng(0)  # horizontal (0) vs vertical (1) bars: a shift-invariant task
    y = rng.integers(0, 2, 96)
    x = 0.3 * rng.random((96, 1, 6, 6)).astype(np.float32)
    for i, (c, pos) in enumerate(zip(y, rng.integers(1, 5, 96))):
        if c:
            x[i, 0, :, pos] += 1
        else:
            x[i, 0, pos, :] += 1
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32, activation="relu", generator=0),
                          nn.Linear(32, 32, activation="relu", generator=1), nn.Linear(32, 2, generator=2))
    aug = RandomShiftRotate(max_shift=1, max_degrees=5, seed=0)
    objective = {"adversarial": AdversarialFeatures(model, eps=0.1, seed=0),
                 "augmented": augmented(aug),
                 "both": AdversarialFeatures(model, eps=0.1, transform=aug, seed=0)}[method]
    opt = fl.optim.Adam(model.parameters(), lr=3e-3)
    h = fl.train.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=25, batch_size=32, objective=objective,
                     progress=False)
    assert h["loss"][-1] < 0.7 * h["loss"][0]


# ---- augmentation ----------------------------------------------------------------------------
def test_shift_rotate_exact_cases():
    rng = np.random.default_rng(0)
    im = rng.random((3, 2, 7, 7)).astype(np.float32)
    zero = np.zeros((3, 2))
    np.testing.assert_array_equal(shift_rotate(im, zero, np.zeros(3)), im)
    np.testing.assert_allclose(shift_rotate(im, zero, np.full(3, 90.0)), np.rot90(im, 1, axes=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(shift_rotate(im, zero, np.full(3, 180.0)), im[:, :, ::-1, ::-1], atol=1e-6)
    shifted = shift_rotate(im, np.tile([[2.0, -1.0]], (3, 1)), np.zeros(3), fill=-1.0)
    expect = np.full_like(im, -1.0)
    expect[:, :, 2:, :-1] = im[:, :, :-2, 1:]
    np.testing.assert_array_equal(shifted, expect)
    half = shift_rotate(im[:, :1], np.tile([[0.0, 0.5]], (3, 1)), np.zeros(3))  # bilinear: mean of neighbours
    np.testing.assert_allclose(half[:, 0, :, 1:], 0.5 * (im[:, 0, :, :-1] + im[:, 0, :, 1:]), rtol=1e-6)


def test_random_shift_rotate_shapes_dtype_and_determinism():
    rng = np.random.default_rng(1)
    flat = rng.random((5, 64)).astype(np.float32)
    a = RandomShiftRotate(2, 10, image_shape=(8, 8), seed=3)
    out = a(flat)
    assert out.shape == flat.shape and out.dtype == np.float32
    assert not np.array_equal(out, flat)
    np.testing.assert_array_equal(RandomShiftRotate(2, 10, image_shape=(8, 8), seed=3)(flat), out)
    a.manual_seed(3)
    np.testing.assert_array_equal(a(flat), out)
    three = rng.random((4, 9, 9))
    assert RandomShiftRotate(1, 5, seed=0)(three).shape == (4, 9, 9)
    assert np.array_equal(RandomShiftRotate(0, 0, seed=0)(three), three)


def test_bad_inputs_raise():
    model = _mlp()
    with pytest.raises(TypeError, match="model must be a fusedlearn.nn.Sequential"):
        AdversarialFeatures(nn.Linear(3, 3), eps=0.1)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        AdversarialFeatures(model, eps=0.0)
    with pytest.raises(TypeError, match="eps must be a number"):
        AdversarialFeatures(model, eps="0.1")
    with pytest.raises(ValueError, match=r"split point 3 is out of range: h = model\[:k\]\(x\) needs 1 <= k < 3"):
        AdversarialFeatures(model, eps=0.1, layers=[1, 3])
    with pytest.raises(ValueError, match="power_iterations must be an integer >= 1"):
        AdversarialFeatures(model, eps=0.1, power_iterations=0)
    with pytest.raises(ValueError, match="no middle layer"):
        AdversarialFeatures(nn.Sequential(nn.Linear(3, 3)), eps=0.1)
    with pytest.raises(ValueError, match="r has shape"):
        x, y = _data(4)
        AdversarialFeatures(model, eps=0.1).loss_and_backward(model, nn.CrossEntropyLoss(), x, y, 1,
                                                              r=np.zeros((4, 3)))
    with pytest.raises(TypeError, match="objective must be callable"):
        fl.train.fit(model, nn.CrossEntropyLoss(), fl.optim.SGD(model.parameters()), _data(4), epochs=1,
                     batch_size=2, objective=3, progress=False)
    with pytest.raises(ValueError, match="max_shift must be an integer >= 0"):
        RandomShiftRotate(-1)
    with pytest.raises(ValueError, match=r"max_degrees must be in \[0, 180\]"):
        RandomShiftRotate(1, 200)
    with pytest.raises(TypeError, match="images must be a floating-point array"):
        shift_rotate(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="expected images"):
        shift_rotate(np.zeros((2, 16)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"image_shape \(5, 5\) does not fit"):
        shift_rotate(np.zeros((2, 16)), np.zeros((2, 2)), np.zeros(2), image_shape=(5, 5))
    with pytest.raises(ValueError, match=r"shifts must have shape \(2, 2\)"):
        shift_rotate(np.zeros((2, 4, 4)), np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="transform must be callable"):
        augmented(None)


def test_small_data_example_quick_runs(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__))))
    r = subprocess.run([sys.executable, os.path.join(root, "examples", "small_data.py"), "--quick", "--workers", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "small_data.md").read_text()
    assert "(a) L2 vs layer-wise weight decay" in text and "| 100 |" in text
    assert (tmp_path / "small_data.png").stat().st_size > 1000
