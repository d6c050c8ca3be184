"""Embedding and the per-timestep cross-entropy: vs torch, vs finite differences, bad inputs."""
import numpy as np
import pytest

import fusedlearn as fl
from test_nn_gradcheck import _numgrad


def test_embedding_forward_backward_matches_numpy_reference():
    emb = fl.nn.Embedding(7, 4, generator=0)
    idx = np.array([[0, 3, 3], [6, 0, 3]])
    out = emb(idx)
    np.testing.assert_array_equal(out, emb.weight.data[idx])
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert emb.backward(g) is None
    ref = np.zeros((7, 4), np.float32)
    np.add.at(ref, idx.reshape(-1), g.reshape(-1, 4))
    np.testing.assert_allclose(emb.weight.grad, ref)
    emb.backward(g)  # accumulates
    np.testing.assert_allclose(emb.weight.grad, 2 * ref)


def test_embedding_init_and_padding_row():
    emb = fl.nn.Embedding(2000, 50, padding_idx=-1, generator=1)
    assert emb.padding_idx == 1999
    assert np.all(emb.weight.data[1999] == 0)
    w = emb.weight.data[:-1]
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1.0) < 0.01  # N(0, 1)
    idx = np.array([1999, 5, 1999])
    emb(idx)
    emb.backward(np.ones((3, 50), np.float32))
    assert np.all(emb.weight.grad[1999] == 0)
    assert np.all(emb.weight.grad[5] == 1)
    assert emb.state_dict().keys() == {"weight"}


def test_embedding_vs_torch():
    torch = pytest.importorskip("torch")
    emb = fl.nn.Embedding(11, 5, padding_idx=2, generator=3)
    ref = torch.nn.Embedding(11, 5, padding_idx=2)
    ref.load_state_dict({"weight": torch.from_numpy(emb.weight.data.copy())})
    idx = np.random.default_rng(0).integers(0, 11, size=(6, 4))
    g = np.random.default_rng(1).standard_normal((6, 4, 5)).astype(np.float32)
    out = emb(idx)
    tout = ref(torch.from_numpy(idx))
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, tout.detach().numpy())
    emb.backward(g)
    np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_embedding_finite_differences_float64():
    emb = fl.nn.Embedding(5, 3, dtype=np.float64, generator=2)
    idx = np.array([4, 1, 4, 4, 0])
    c = np.random.default_rng(3).standard_normal((5, 3))
    emb(idx)
    emb.backward(c)
    w = emb.weight.data
    num = _numgrad(lambda: np.sum(emb(idx) * c), w, list(np.ndindex(w.shape))).reshape(w.shape)
    np.testing.assert_allclose(emb.weight.grad, num, atol=1e-8)


def test_embedding_bad_inputs():
    emb = fl.nn.Embedding(4, 2)
    with pytest.raises(TypeError, match="indices must be integers"):
        emb(np.array([0.5]))
    with pytest.raises(IndexError, match="index 4 is out of range"):
        emb(np.array([1, 4]))
    with pytest.raises(IndexError, match="index -1 is out of range"):
        emb(np.array([-1]))
    with pytest.raises(ValueError, match="padding_idx must be within"):
        fl.nn.Embedding(4, 2, padding_idx=4)
    with pytest.raises(TypeError, match="num_embeddings must be an integer"):
        fl.nn.Embedding(4.0, 2)
    with pytest.raises(RuntimeError, match="before forward"):
        fl.nn.Embedding(4, 2).backward(np.zeros((1, 2)))
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"grad_out has shape \(3, 2\)"):
        emb.backward(np.zeros((3, 2)))


def test_from_pretrained_freeze():
    emb = fl.nn.Embedding.from_pretrained(np.eye(3, dtype=np.float32))
    assert not emb.weight.requires_grad
    emb(np.array([0, 2]))
    emb.backward(np.ones((2, 3), np.float32))
    assert emb.weight.grad is None


# ---- per-timestep cross-entropy ------------------------------------------------------------------

def _seq_case(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((5, 3, 7)).astype(dtype)
    t = rng.integers(0, 7, size=(5, 3))
    return z, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sequence_cross_entropy_vs_torch(reduction):
    torch = pytest.importorskip("torch")
    z, t = _seq_case()
    t[1, 2] = -100  # ignored
    w = np.linspace(0.5, 2.0, 7)
    ours = fl.nn.SequenceCrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1)
    value, grad = ours(z, t)
    zt = torch.from_numpy(np.moveaxis(z, -1, 1).copy()).requires_grad_(True)  # torch: classes on axis 1
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32), reduction=reduction,
                                    label_smoothing=0.1)
    tl = ref(zt, torch.from_numpy(t))
    tl.sum().backward()
    np.testing.assert_allclose(value, tl.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, np.moveaxis(zt.grad.numpy(), 1, -1), rtol=1e-5, atol=1e-6)
    # CrossEntropyLoss itself takes torch's (N, C, d1) layout with the same math.
    v2, g2 = fl.nn.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1)(
        np.moveaxis(z, -1, 1), t)
    np.testing.assert_allclose(v2, value, rtol=1e-6)
    np.testing.assert_allclose(np.moveaxis(g2, 1, -1), grad, rtol=1e-6)


def test_sequence_cross_entropy_mask_equals_ignore_index():
    z, t = _seq_case(np.float64, seed=1)
    mask = np.ones(t.shape, bool)
    mask[3:, 0] = False  # a shorter first sequence
    v_mask, g_mask = fl.nn.SequenceCrossEntropyLoss()(z, t, mask=mask)
    t_ign = np.where(mask, t, -100)
    v_ign, g_ign = fl.nn.SequenceCrossEntropyLoss()(z, t_ign)
    assert v_mask == pytest.approx(v_ign, rel=1e-12)
    np.testing.assert_allclose(g_mask, g_ign, atol=1e-15)
    assert np.all(g_mask[3:, 0] == 0)
    # and it equals the 2-D loss over the real steps only
    v_2d, _ = fl.nn.CrossEntropyLoss()(z[mask], t[mask])
    assert v_mask == pytest.approx(v_2d, rel=1e-12)


def test_sequence_cross_entropy_finite_differences_float64():
    z, t = _seq_case(np.float64, seed=2)
    mask = np.random.default_rng(4).random(t.shape)  # float weights
    loss = fl.nn.SequenceCrossEntropyLoss(label_smoothing=0.05)
    _, grad = loss(z, t, mask=mask)
    num = _numgrad(lambda: loss(z, t, mask=mask)[0], z, list(np.ndindex(z.shape))).reshape(z.shape)
    np.testing.assert_allclose(grad, num, atol=1e-8)


def test_sequence_cross_entropy_bad_inputs():
    z, t = _seq_case()
    loss = fl.nn.SequenceCrossEntropyLoss()
    with pytest.raises(ValueError, match=r"target must have shape \(5, 3\)"):
        loss(z, t[:4])
    with pytest.raises(ValueError, match=r"mask must have shape \(5, 3\)"):
        loss(z, t, mask=np.ones((5,)))
    with pytest.raises(TypeError, match="integer class indices"):
        loss(z, t.astype(np.complex64))
    with pytest.raises(ValueError, match="target label 7 is out of range"):
        loss(z, np.full((5, 3), 7))
    with pytest.raises(ValueError, match=r"target must have shape \(5, 3\) for pred of shape \(5, 7, 3\)"):
        fl.nn.CrossEntropyLoss()(np.moveaxis(z, -1, 1), t[:, :2].T)
