"""nn.LSTM / nn.GRU against torch.nn.LSTM / torch.nn.GRU with copied weights (float32, every ISA):
outputs, final states, the input / initial-state gradients and every parameter gradient."""
import numpy as np
import pytest

from fusedlearn import nn

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

T, B, I, H = 6, 4, 5, 7
ATOL = 1e-5

CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(bias=False, batch_first=True),
]


def _pair(kind, I=I, H=H, **kw):
    torch.manual_seed(0)
    tm = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H, **kw)
    m = (nn.LSTM if kind == "lstm" else nn.GRU)(I, H, **kw)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
    return m, tm


def _run(kind, m, tm, kw, lengths=None, with_hx=True, T=T, B=B, I=I, H=H, ATOL=ATOL):
    rng = np.random.default_rng(1)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    bf = kw.get("batch_first", False)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((D * L, B, H)).astype(np.float32)
    c0 = rng.standard_normal((D * L, B, H)).astype(np.float32)
    go = rng.standard_normal((B, T, D * H) if bf else (T, B, D * H)).astype(np.float32)
    gh = rng.standard_normal((D * L, B, H)).astype(np.float32)
    gc = rng.standard_normal((D * L, B, H)).astype(np.float32)
    lstm = kind == "lstm"

    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    hx_t = ((h0t, c0t) if lstm else h0t) if with_hx else None
    if lengths is None:
        out_t, hn_t = tm(xt, hx_t)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        out_p, hn_t = tm(packed, hx_t)
        out_t, _ = pad_packed_sequence(out_p, batch_first=bf, total_length=T)
    hnt, cnt = hn_t if lstm else (hn_t, None)
    loss = (out_t * torch.tensor(go)).sum() + (hnt * torch.tensor(gh)).sum()
    if lstm:
        loss = loss + (cnt * torch.tensor(gc)).sum()
    loss.backward()

    hx = ((h0, c0) if lstm else h0) if with_hx else None
    out, hn = m(x, hx, lengths=lengths)
    hn_, cn_ = hn if lstm else (hn, None)
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(hn_, hnt.detach().numpy(), atol=ATOL, rtol=0)
    if lstm:
        np.testing.assert_allclose(cn_, cnt.detach().numpy(), atol=ATOL, rtol=0)
    m.zero_grad()
    gx = m.backward(go, (gh, gc) if lstm else gh)
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=ATOL, rtol=0)
    tp = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tp[name].grad.numpy(), atol=ATOL, rtol=1e-5, err_msg=name)
    ghx = m.grad_hx
    if with_hx:
        np.testing.assert_allclose(ghx[0] if lstm else ghx, h0t.grad.numpy(), atol=ATOL, rtol=0)
        if lstm:
            np.testing.assert_allclose(ghx[1], c0t.grad.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_matches_torch(isa, kind, kw):
    m, tm = _pair(kind, **kw)
    _run(kind, m, tm, kw)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True), dict(bidirectional=True, batch_first=True)],
                         ids=["1layer", "2layer-bi", "bi-batch_first"])
def test_variable_lengths_match_packed(isa, kind, kw):
    m, tm = _pair(kind, **kw)
    lengths = np.array([3, T, 1, 5])  # unsorted, max == T
    _run(kind, m, tm, kw, lengths=lengths)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_no_hx_and_grad_hx_zero_structure(kind):
    m, tm = _pair(kind)
    _run(kind, m, tm, {}, with_hx=False)
    ghx = m.grad_hx
    if kind == "lstm":
        assert isinstance(ghx, tuple) and ghx[0].shape == (1, B, H) and ghx[1].shape == (1, B, H)
    else:
        assert ghx.shape == (1, B, H)


# Recurrent GEMMs with the weight packed once per sequence (batch <= the GEMM's row
# block) over several K blocks (H = 520: forward K = H, backward K = 4H or 2H, all > 512),
# a batch above the row block, whose steps read the weight unpacked, and a sequence
# long enough that the input projection runs in chunks of steps with W_ih packed once
# (T * B above the row block of every ISA; the last chunk shorter; both directions).
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("T_,B_,H_,kw", [(3, 5, 520, {}), (2, 250, 24, {}), (70, 4, 16, dict(bidirectional=True))],
                         ids=["packed-multiblock", "unpacked-batch", "chunked-projection"])
def test_large_recurrent_gemms_match_torch(isa, kind, T_, B_, H_, kw):
    m, tm = _pair(kind, I=9, H=H_, **kw)
    _run(kind, m, tm, kw, T=T_, B=B_, I=9, H=H_, ATOL=2e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=["default", "2layers-bidir-batch_first"])
def test_unbatched_input_matches_torch(kind, kw):
    m, tm = _pair(kind, **kw)
    rng = np.random.default_rng(3)
    D, L = (2 if kw.get("bidirectional") else 1), kw.get("num_layers", 1)
    x = rng.standard_normal((T, I)).astype(np.float32)
    h0 = rng.standard_normal((D * L, H)).astype(np.float32)
    c0 = rng.standard_normal((D * L, H)).astype(np.float32)
    go = rng.standard_normal((T, D * H)).astype(np.float32)
    gh = rng.standard_normal((D * L, H)).astype(np.float32)
    lstm = kind == "lstm"
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    out_t, hn_t = tm(xt, (h0t, c0t) if lstm else h0t)
    hnt = hn_t[0] if lstm else hn_t
    ((out_t * torch.tensor(go)).sum() + (hnt * torch.tensor(gh)).sum()).backward()
    out, hn = m(x, (h0, c0) if lstm else h0)
    assert out.shape == (T, D * H)
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(hn[0] if lstm else hn, hnt.detach().numpy(), atol=ATOL, rtol=0)
    gx = m.backward(go, (gh, None) if lstm else gh)
    assert gx.shape == (T, I)
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(m.grad_hx[0] if lstm else m.grad_hx, h0t.grad.numpy(), atol=ATOL, rtol=0)
    tp = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tp[name].grad.numpy(), atol=ATOL, rtol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="unbatched"):
        m(x, lengths=np.array([T]))
    with pytest.raises(ValueError, match="2-D"):
        m(x, (h0[:, None], c0[:, None]) if lstm else h0[:, None])


def test_threads_agree(threads):
    m, tm = _pair("lstm", num_layers=2, bidirectional=True)
    _run("lstm", m, tm, dict(num_layers=2, bidirectional=True))


def test_torch_init_scale_and_eval_dropout_identity():
    m = nn.LSTM(I, H, num_layers=3, dropout=0.5, generator=0)
    bound = 1 / np.sqrt(H)
    for _, p in m.named_parameters():
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.5 * bound
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    m.eval()
    a, _ = m(x)
    b, _ = m(x)
    np.testing.assert_array_equal(a, b)
