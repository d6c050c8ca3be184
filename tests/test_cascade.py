"""fl.train.cascade: stage structure (frozen blocks bitwise unchanged), the returned model,
pseudo-inputs computed once per stage, the memory-mapped cache and its removal, per-stage
histories, every optimizer and scheduler, learning on digits, and the errors for bad input."""
import glob
import os

import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn, optim
from fusedlearn.train import LambdaCallback, cascade, default_head


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_img():
    return fl.data.digits(flatten=False)


def mlp_blocks(seed=0, widths=(64, 48, 32, 32)):
    g = np.random.default_rng(seed)
    return [nn.Linear(a, b, activation="relu", generator=g) for a, b in zip(widths[:-1], widths[1:])]


def cnn_blocks(seed=0):
    g = np.random.default_rng(seed)
    return [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, generator=g), nn.BatchNorm2d(8, activation="relu"),
                          nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, generator=g), nn.BatchNorm2d(16, activation="relu"))]


def sgd(lr=0.05):
    return lambda params: optim.SGD(params, lr=lr, momentum=0.9)


def small(ds, n):
    return ds.x[:n], ds.y[:n]


def snapshot(module):
    return {k: np.array(v, copy=True) for k, v in module.state_dict().items()}


def test_frozen_blocks_unchanged_bitwise_cnn_with_batchnorm(digits_img):
    blocks = cnn_blocks()
    starts, ends = [], []  # per stage: the state of every block when the stage begins / ends
    cbs = lambda stage: [LambdaCallback(on_train_begin=lambda state: starts.append([snapshot(b) for b in blocks]),
                                        on_train_end=lambda h, state: ends.append([snapshot(b) for b in blocks]))]
    res = cascade(blocks, default_head(10, generator=1), nn.CrossEntropyLoss(), sgd(), small(digits_img[0], 400),
                  small(digits_img[1], 100), epochs_per_stage=2, batch_size=32, callbacks=cbs, progress=False)
    assert len(starts) == 2
    final = [snapshot(b) for b in blocks]
    # block 0 was trained in stage 1 (its BatchNorm statistics too) ...
    assert any(not np.array_equal(starts[0][0][k], final[0][k]) for k in final[0])
    assert not np.array_equal(starts[0][0]["1.running_mean"], final[0]["1.running_mean"])
    # ... and then frozen: neither its pseudo-input pass nor stage 2 changed its parameters or its
    # running statistics (the pass runs in eval mode)
    for k in final[0]:
        assert np.array_equal(ends[0][0][k], final[0][k]), k
    assert any(not np.array_equal(starts[1][1][k], final[1][k]) for k in final[1])
    assert all(not m.training for m in res.model.modules())
    assert all(p.grad is None for p in blocks[0].parameters())
    assert res.stages[1]["input_shape"] == (8, 4, 4) and res.stages[1]["output_shape"] == (16, 4, 4)



def held_arrays(module):
    """The private array attributes (forward caches for backward) of every layer of ``module``."""
    out = []
    for name, m in module.named_modules():
        for k, v in vars(m).items():
            if k.startswith("_") and k not in ("_parameters", "_buffers", "_modules") and \
                    (isinstance(v, np.ndarray) or (isinstance(v, (tuple, list)) and
                                                   any(isinstance(e, np.ndarray) for e in v))):
                out.append(f"{name}.{k}")
    return out


def test_only_the_stage_being_trained_holds_activations_and_grads(digits_img):
    blocks = cnn_blocks() + [nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, generator=5), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(2), nn.Flatten())]
    seen = []

    def cbs(stage):
        def on_train_begin(state):  # the frozen blocks and the ones still to come hold nothing
            seen.append([(j, held_arrays(b), [p.grad is not None for p in b.parameters()])
                         for j, b in enumerate(blocks) if j != stage])

        def on_epoch_end(epoch, logs, state):  # the one being trained does (the check can fail)
            seen.append([(stage, held_arrays(blocks[stage]) != [], None)])
        return [LambdaCallback(on_train_begin=on_train_begin, on_epoch_end=on_epoch_end)]

    res = cascade(blocks, default_head(10, generator=1), nn.CrossEntropyLoss(), sgd(), small(digits_img[0], 200),
                  small(digits_img[1], 50), epochs_per_stage=1, batch_size=32, callbacks=cbs,
                  max_memory_bytes=0, progress=False)
    assert len(seen) == 6
    for begin, during in zip(seen[::2], seen[1::2]):
        assert all(arrays == [] and not any(grads) for _, arrays, grads in begin), begin
        assert during[0][1] is True
    assert held_arrays(res.model) == []
    assert all(p.grad is None for p in res.model.parameters())
    # the parameters stay trainable: the model fine-tunes end-to-end with fit, through every block
    # (a conv bias before BatchNorm gets a zero gradient, so look at the weights)
    before = [m.weight.data.copy() for m in res.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    fl.train.fit(res.model, nn.CrossEntropyLoss(), optim.SGD(list(res.model.parameters()), lr=0.01),
                 small(digits_img[0], 64), epochs=1, batch_size=32, progress=False)
    after = [m.weight.data for m in res.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(after) == 4 and all(not np.array_equal(a, b) for a, b in zip(before, after))

def test_model_is_blocks_plus_last_head(digits):
    blocks = mlp_blocks()
    res = cascade(blocks, None, nn.CrossEntropyLoss(), sgd(), small(digits[0], 300), epochs_per_stage=1,
                  batch_size=32, progress=False)
    assert isinstance(res.model, nn.Sequential) and len(res.model) == len(blocks) + 1
    assert all(res.model[i] is b for i, b in enumerate(blocks))
    x = digits[1].x
    h = x
    for b in blocks:
        h = b(h)
    expected = res.model[-1](h)
    np.testing.assert_array_equal(fl.train.predict(res.model, x), expected)
    assert res.model[-1][-1].out_features == 10  # the default head: Linear(32, max(y) + 1)


class Counting(nn.Module):
    """A Linear block that records each forward call as (training, batch size)."""

    def __init__(self, i, o, seed):
        super().__init__()
        self.lin = nn.Linear(i, o, activation="relu", generator=seed)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, len(x)))
        return self.lin(x)

    def backward(self, g):
        return self.lin.backward(g)


def test_pseudo_inputs_computed_once_per_stage(digits):
    n_tr, n_va, epochs, pbs = 300, 70, (2, 3, 1), 128
    blocks = [Counting(64, 32, 0), Counting(32, 32, 1), Counting(32, 16, 2)]
    cascade(blocks, default_head(10, generator=0), nn.CrossEntropyLoss(), sgd(), small(digits[0], n_tr),
            small(digits[1], n_va), epochs_per_stage=epochs, batch_size=50, pseudo_batch_size=pbs, progress=False)
    for j, b in enumerate(blocks):
        train_samples = sum(n for t, n in b.calls if t)
        eval_samples = sum(n for t, n in b.calls if not t)
        assert train_samples == epochs[j] * n_tr  # trained in its own stage only
        # shape probes (2 train + 2 val samples, 2 more for its head's check), validation after each
        # of its epochs, then - unless it is the last block - one pass over train and val
        expected = 4 + 2 + epochs[j] * n_va + (n_tr + n_va if j < len(blocks) - 1 else 0)
        assert eval_samples == expected, (j, b.calls)
        if j < len(blocks) - 1:  # the pass for the pseudo-inputs goes in pseudo_batch_size batches
            assert [n for t, n in b.calls if not t][-4:] == [128, 128, 44, 70]


def test_memmap_cache_used_and_removed(digits, tmp_path):
    seen = []

    def look(stage):
        def on_epoch_end(epoch, logs, state):
            seen.append((stage, sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*" / "*")))))
        return [LambdaCallback(on_epoch_end=on_epoch_end)]

    args = (nn.CrossEntropyLoss(), sgd(), small(digits[0], 200), small(digits[1], 50))
    res = cascade(mlp_blocks(), default_head(10, generator=3), *args, epochs_per_stage=1, batch_size=32,
                  callbacks=look, max_memory_bytes=1000, cache_dir=tmp_path, progress=False)
    assert [s["cache"] for s in res.stages] == ["input", "memmap", "memmap"]
    assert res.stages[1]["cache_bytes"] == (200 + 50) * 48 * 4
    assert seen == [(0, []), (1, ["stage1_train.dat", "stage1_val.dat"]),
                    (2, ["stage2_train.dat", "stage2_val.dat"])]
    assert os.listdir(tmp_path) == []  # the temporary directory is gone
    # in memory (the default budget) the same run gives the same model, bit for bit
    mem = cascade(mlp_blocks(), default_head(10, generator=3), *args, epochs_per_stage=1, batch_size=32,
                  cache_dir=tmp_path, progress=False)
    assert [s["cache"] for s in mem.stages] == ["input", "memory", "memory"]
    assert os.listdir(tmp_path) == []
    x = digits[1].x
    np.testing.assert_array_equal(fl.train.predict(res.model, x), fl.train.predict(mem.model, x))


def test_memmap_removed_when_a_stage_fails(digits, tmp_path):
    def boom(stage):
        def on_epoch_end(epoch, logs, state):
            if stage == 1:
                assert len(os.listdir(tmp_path)) == 1
                raise RuntimeError("stop in stage 2")
        return [LambdaCallback(on_epoch_end=on_epoch_end)]

    with pytest.raises(RuntimeError, match="stop in stage 2"):
        cascade(mlp_blocks(), None, nn.CrossEntropyLoss(), sgd(), small(digits[0], 100), epochs_per_stage=1,
                batch_size=32, callbacks=boom, max_memory_bytes=0, cache_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_histories_per_stage_and_files(digits, tmp_path, capsys):
    res = cascade(mlp_blocks(), None, nn.CrossEntropyLoss(), sgd(), small(digits[0], 200), small(digits[1], 60),
                  epochs_per_stage=[1, 2, 3], batch_size=32, history_path=tmp_path / "h.csv",
                  plot_path=tmp_path / "curve_{stage}.png", progress=True)
    assert [h["epoch"] for h in res.histories] == [[1], [1, 2], [1, 2, 3]]
    assert all(len(h["val_accuracy"]) == len(h["epoch"]) and None not in h["val_accuracy"] for h in res.histories)
    for k in (1, 2, 3):
        rows = (tmp_path / f"h_stage{k}.csv").read_text().strip().splitlines()
        assert rows[0].startswith("epoch,loss,accuracy") and len(rows) == 1 + k
        assert (tmp_path / f"curve_{k}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "cascade stage 1/3" in out and "cascade stage 3/3" in out


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: optim.Adagrad(p, lr=0.05),
    lambda p: optim.Adadelta(p, lr=1.0),
    lambda p: optim.RMSprop(p, lr=1e-3),
    lambda p: optim.Adam(p, lr=1e-2),
    lambda p: optim.AdamW(p, lr=1e-2),
    lambda p: optim.Adamax(p, lr=1e-2),
    lambda p: optim.AccSGD(p, lr=0.05),
    lambda p: optim.SDProp(p, lr=1e-3),
], ids=["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "AccSGD", "SDProp"])
def test_every_optimizer(make, digits):
    blocks = mlp_blocks(widths=(64, 32, 32))
    before = [p.data.copy() for b in blocks for p in b.parameters()]
    made = []
    res = cascade(blocks, None, nn.CrossEntropyLoss(), lambda p: made.append(make(p)) or made[-1],
                  digits[0], small(digits[1], 100), epochs_per_stage=2, batch_size=32, progress=False)
    assert len(made) == 2 and made[0] is not made[1]  # one optimizer per stage, over that stage's parameters
    assert {id(p) for p in made[1].param_groups[0]["params"]} == \
        {id(p) for p in [*blocks[1].parameters(), *res.model[-1].parameters()]}
    after = [p.data for b in blocks for p in b.parameters()]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    assert res.histories[-1]["val_accuracy"][-1] > 0.4  # chance is 0.1


@pytest.mark.parametrize("make, lrs", [
    (lambda o: optim.StepLR(o, step_size=1, gamma=0.5), [0.1, 0.05, 0.025]),
    (lambda o: optim.ExponentialLR(o, gamma=0.1), [0.1, 0.01, 0.001]),
    (lambda o: optim.CosineAnnealingLR(o, T_max=2), [0.1, 0.05, 0.0]),
    (lambda o: optim.InverseTimeLR(o, b=1.0), None),
    (lambda o: optim.ReduceLROnPlateau(o, patience=0, factor=0.5, mode="max"), None),
], ids=["StepLR", "ExponentialLR", "CosineAnnealingLR", "InverseTimeLR", "ReduceLROnPlateau"])
def test_every_scheduler_restarts_per_stage(make, lrs, digits):
    made = []
    res = cascade(mlp_blocks(widths=(64, 32, 32)), None, nn.CrossEntropyLoss(), sgd(0.1),
                  small(digits[0], 200), small(digits[1], 60), epochs_per_stage=3, batch_size=32,
                  scheduler=lambda o: made.append(make(o)) or made[-1], progress=False)
    assert len(made) == 2
    for h in res.histories:
        assert h["lr"][0] == pytest.approx(0.1)  # each stage starts from the initial learning rate
        if lrs is not None:
            assert h["lr"] == pytest.approx(lrs, abs=1e-12)
        else:
            assert h["lr"][-1] < 0.1


def test_digits_mlp_learns_and_rises_per_stage(digits):
    res = cascade(mlp_blocks(widths=(64, 128, 128, 128)), default_head(10, generator=0), nn.CrossEntropyLoss(),
                  sgd(0.05), digits[0], digits[1], epochs_per_stage=8, batch_size=32, progress=False)
    accs = [h["val_accuracy"][-1] for h in res.histories]
    assert accs[-1] > 0.95, accs
    assert max(accs) - min(accs) < 0.05, accs  # every stage is a working classifier on its own
    test = fl.train.evaluate(res.model, nn.CrossEntropyLoss(), digits[1])
    assert test["accuracy"] == pytest.approx(accs[-1])


def test_digits_cnn_learns(digits_img):
    res = cascade(cnn_blocks(), default_head(10, hidden=64, pool_size=2, generator=0), nn.CrossEntropyLoss(),
                  sgd(0.05), digits_img[0], digits_img[1], epochs_per_stage=4, batch_size=32, progress=False)
    accs = [h["val_accuracy"][-1] for h in res.histories]
    assert accs[-1] > 0.9, accs


class Doubler(nn.Module):
    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return 2 * g


def test_bad_inputs(digits):
    L, tr = nn.CrossEntropyLoss(), small(digits[0], 50)
    kw = dict(epochs_per_stage=1, progress=False)
    with pytest.raises(ValueError, match="blocks is empty"):
        cascade([], None, L, sgd(), tr, **kw)
    with pytest.raises(TypeError, match="single Linear; wrap it in a list"):
        cascade(nn.Linear(64, 10), None, L, sgd(), tr, **kw)
    with pytest.raises(TypeError, match="block 1 is not a fusedlearn.nn.Module"):
        cascade([nn.Linear(64, 8), "relu"], None, L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"block 1 \(ReLU\) has no parameters"):
        cascade([nn.Linear(64, 8), nn.ReLU()], None, L, sgd(), tr, **kw)
    lin = nn.Linear(64, 64)
    with pytest.raises(ValueError, match="the same module appears twice"):
        cascade([lin, lin], None, L, sgd(), tr, **kw)
    a = nn.Linear(64, 64)
    b = nn.Linear(64, 64)
    b.weight = a.weight
    with pytest.raises(ValueError, match="blocks 0 and 1 share a parameter"):
        cascade([a, b], None, L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"block 1 \(Linear\) does not accept the output of block 0, shape \(32,\)"):
        cascade([nn.Linear(64, 32), nn.Linear(16, 8)], None, L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"block 0 \(Linear\) does not accept train inputs of shape \(64,\)"):
        cascade([nn.Linear(10, 8)], None, L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"val inputs have per-sample shape \(1, 8, 8\)"):
        cascade(mlp_blocks(), None, L, sgd(), tr, (digits[1].x.reshape(-1, 1, 8, 8), digits[1].y), **kw)
    with pytest.raises(ValueError, match="the head for block 0 .* has no parameters"):
        cascade(mlp_blocks(), lambda shape: Doubler(), L, sgd(), tr, **kw)
    with pytest.raises(TypeError, match="head factory must return a fusedlearn.nn.Module, got int"):
        cascade(mlp_blocks(), lambda shape: 3, L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"head for block 0 does not accept its output of shape \(48,\)"):
        cascade(mlp_blocks(), lambda shape: nn.Linear(7, 10), L, sgd(), tr, **kw)
    with pytest.raises(ValueError, match=r"class indices up to 9 \(need \[10\] or more\)"):
        cascade(mlp_blocks(), lambda shape: nn.Linear(shape[0], 3), L, sgd(), tr, **kw)
    with pytest.raises(TypeError, match="head must be a factory"):
        cascade(mlp_blocks(), "linear", L, sgd(), tr, **kw)
    with pytest.raises(TypeError, match="optimizer must be a factory"):
        cascade(mlp_blocks(), None, L, optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1), tr, **kw)
    with pytest.raises(TypeError, match="optimizer factory returned list"):
        cascade(mlp_blocks(), None, L, lambda p: list(p), tr, **kw)
    with pytest.raises(TypeError, match="scheduler must be a factory"):
        cascade(mlp_blocks(), None, L, sgd(), tr, scheduler=3, **kw)
    with pytest.raises(ValueError, match="epochs_per_stage has 2 entries for 3 blocks"):
        cascade(mlp_blocks(), None, L, sgd(), tr, epochs_per_stage=[1, 2], progress=False)
    with pytest.raises(ValueError, match="every stage needs >= 1 epoch"):
        cascade(mlp_blocks(), None, L, sgd(), tr, epochs_per_stage=0, progress=False)
    with pytest.raises(ValueError, match=r"train needs targets \(y\)"):
        cascade(mlp_blocks(), None, L, sgd(), fl.data.ArrayDataset(tr[0]), **kw)
    with pytest.raises(ValueError, match="train is empty"):
        cascade(mlp_blocks(), None, L, sgd(), (tr[0][:0], tr[1][:0]), **kw)
    with pytest.raises(ValueError, match="max_memory_bytes must be >= 0"):
        cascade(mlp_blocks(), None, L, sgd(), tr, max_memory_bytes=-1, **kw)
    with pytest.raises(ValueError, match="head=None .* needs class-index targets"):
        cascade(mlp_blocks(), None, nn.MSELoss(), sgd(), (tr[0], tr[0][:, :3]), **kw)
    with pytest.raises(TypeError, match=r"epochs_per_stage must be an int or a sequence of ints .* got 2\.5"):
        cascade(mlp_blocks(), None, L, sgd(), tr, epochs_per_stage=2.5, progress=False)
    with pytest.raises(TypeError, match=r"epochs_per_stage must be an int or a sequence of ints .* got \[1, 2\.0, 1\]"):
        cascade(mlp_blocks(), None, L, sgd(), tr, epochs_per_stage=[1, 2.0, 1], progress=False)
    with pytest.raises(TypeError, match="epochs_per_stage must be an int or a sequence of ints .* got '3'"):
        cascade(mlp_blocks(), None, L, sgd(), tr, epochs_per_stage="3", progress=False)
    with pytest.raises(ValueError, match="pseudo_batch_size must be >= 1, got 0"):
        cascade(mlp_blocks(), None, L, sgd(), tr, pseudo_batch_size=0, **kw)
    with pytest.raises(FileNotFoundError, match="cache_dir '/nonexistent/fl_cascade' is not a directory"):
        cascade(mlp_blocks(), None, L, sgd(), tr, cache_dir="/nonexistent/fl_cascade", **kw)
    with pytest.raises(ValueError, match=r"val needs targets \(y\)"):
        cascade(mlp_blocks(), None, L, sgd(), tr, fl.data.ArrayDataset(tr[0]), **kw)
    with pytest.raises(ValueError, match="hidden must be >= 1 or None, got 0"):
        default_head(10, hidden=0)
    with pytest.raises(ValueError, match="pool_size must be >= 1, got 0"):
        default_head(10, pool_size=0)
    with pytest.raises(ValueError, match="pool_size 3 does not divide the feature map 8x8"):
        default_head(10, pool_size=3)((4, 8, 8))
    with pytest.raises(ValueError, match="num_outputs must be >= 1"):
        default_head(0)
