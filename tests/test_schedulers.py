"""Learning-rate schedules against torch.optim.lr_scheduler and closed forms."""
import math

import numpy as np
import pytest

import fusedlearn.optim as fo
from fusedlearn.nn import Parameter

LRS = (0.1, 0.03)


def our_opt(lrs=LRS):
    return fo.SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs], lr=1.0)


def torch_opt(torch, lrs=LRS):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs], lr=1.0)


SCHEDULES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=30)),
]


def run(opt, sched, epochs):
    out = []
    for _ in range(epochs):
        opt.step()
        sched.step()
        out.append(list(sched.get_last_lr()))
        assert out[-1] == [g["lr"] for g in opt.param_groups]
    return out


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[f"{n}-{kw}" for n, kw in SCHEDULES])
def test_matches_torch_for_30_epochs(name, kw):
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = our_opt(), torch_opt(torch)
    ours = getattr(fo, name)(ours_opt, **kw)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kw)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    assert ours.base_lrs == list(LRS) and [g["initial_lr"] for g in ours_opt.param_groups] == list(LRS)
    a, b = run(ours_opt, ours, 30), run(theirs_opt, theirs, 30)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    assert ours.last_epoch == theirs.last_epoch == 30
    assert len({round(x[0], 12) for x in a}) > 3  # the rate did change


def test_our_schedule_drives_a_torch_optimizer():
    torch = pytest.importorskip("torch")
    o1, o2 = torch_opt(torch), torch_opt(torch)
    a = run(o1, fo.StepLR(o1, step_size=3, gamma=0.1), 10)
    b = run(o2, torch.optim.lr_scheduler.StepLR(o2, step_size=3, gamma=0.1), 10)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_closed_forms():
    opt = our_opt()
    sched = fo.StepLR(opt, step_size=4, gamma=0.5)
    lrs = run(opt, sched, 12)
    np.testing.assert_allclose([x[0] for x in lrs], [0.1 * 0.5 ** (t // 4) for t in range(1, 13)], rtol=1e-12)
    opt = our_opt()
    sched = fo.CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    lrs = run(opt, sched, 16)
    want = [0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(1, 17)]
    np.testing.assert_allclose([x[0] for x in lrs], want, rtol=1e-12)
    assert lrs[7][0] == pytest.approx(0.01)


def test_inverse_time_lr():
    opt = our_opt()
    sched = fo.InverseTimeLR(opt, b=5.0)
    assert sched.get_last_lr() == pytest.approx(list(LRS))
    lrs = run(opt, sched, 30)
    for t, (l0, l1) in enumerate(lrs, start=1):
        assert l0 == pytest.approx(0.1 * 5.0 / (5.0 + t), rel=1e-12)
        assert l1 == pytest.approx(0.03 * 5.0 / (5.0 + t), rel=1e-12)
    assert lrs[4][0] == pytest.approx(0.05)  # halved at t = b
    opt = our_opt()
    sched = fo.InverseTimeLR(opt, b=10.0, a=[2.0, 1.0])
    assert sched.get_last_lr() == pytest.approx([0.2, 0.1])
    lrs = run(opt, sched, 5)
    assert lrs[-1] == pytest.approx([2.0 / 15.0, 1.0 / 15.0])
    with pytest.raises(ValueError):
        fo.InverseTimeLR(our_opt(), b=0.0)


def test_step_with_epoch_uses_closed_form():
    opt = our_opt()
    sched = fo.ExponentialLR(opt, gamma=0.5)
    sched.step(epoch=3)
    assert sched.get_last_lr() == pytest.approx([0.1 * 0.125, 0.03 * 0.125])
    assert sched.last_epoch == 3


METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.79995, 0.85, 0.85,
           0.85, 0.85, 0.85, 0.85, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
PLATEAUS = [
    dict(patience=2),
    dict(patience=1, cooldown=2, factor=0.5),
    dict(patience=0, threshold=0.01, threshold_mode="abs", min_lr=0.002),
    dict(mode="max", patience=1, factor=0.2, min_lr=[0.0, 0.01]),
]


@pytest.mark.parametrize("kw", PLATEAUS, ids=[str(k) for k in PLATEAUS])
def test_reduce_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = our_opt(), torch_opt(torch)
    ours = fo.ReduceLROnPlateau(ours_opt, **kw)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kw)
    a, b = [], []
    for m in METRICS:
        ours.step(m)
        theirs.step(m)
        a.append(ours.get_last_lr())
        b.append(theirs.get_last_lr())
        assert ours.num_bad_epochs == theirs.num_bad_epochs and ours.best == theirs.best
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert a[-1] != a[0]


def test_reduce_on_plateau_by_hand():
    opt = our_opt((0.1,))
    sched = fo.ReduceLROnPlateau(opt, patience=2)  # divide by 10 after 3 epochs without improvement
    lrs = []
    for m in [1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.4]:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)
    with pytest.raises(ValueError):
        fo.ReduceLROnPlateau(our_opt(), factor=1.0)
    with pytest.raises(ValueError):
        fo.ReduceLROnPlateau(our_opt(), mode="lowest")
    with pytest.raises(ValueError):
        fo.ReduceLROnPlateau(our_opt(), min_lr=[0.0])


@pytest.mark.parametrize("make", [
    lambda o: fo.StepLR(o, step_size=3, gamma=0.3),
    lambda o: fo.ExponentialLR(o, gamma=0.8),
    lambda o: fo.CosineAnnealingLR(o, T_max=7, eta_min=0.005),
    lambda o: fo.InverseTimeLR(o, b=3.0),
], ids=["step", "exp", "cosine", "inverse_time"])
def test_state_dict_round_trip(make):
    o1 = our_opt()
    s1 = make(o1)
    run(o1, s1, 5)
    o2 = our_opt((0.5, 0.5))
    s2 = make(o2)
    o2.load_state_dict(o1.state_dict())
    s2.load_state_dict(s1.state_dict())
    assert s2.last_epoch == 5 and s2.base_lrs == list(LRS)
    np.testing.assert_allclose(run(o1, s1, 10), run(o2, s2, 10), rtol=1e-12)


def test_plateau_state_dict_round_trip():
    o1 = our_opt()
    s1 = fo.ReduceLROnPlateau(o1, patience=1)
    for m in METRICS[:9]:
        s1.step(m)
    o2 = our_opt()
    s2 = fo.ReduceLROnPlateau(o2, patience=5)
    o2.load_state_dict(o1.state_dict())
    s2.load_state_dict(s1.state_dict())
    assert (s2.patience, s2.best, s2.num_bad_epochs, s2.last_epoch) == (1, s1.best, s1.num_bad_epochs, 9)
    for m in METRICS[9:]:
        s1.step(m)
        s2.step(m)
        assert s1.get_last_lr() == s2.get_last_lr()


def test_resume_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        fo.StepLR(our_opt(), step_size=2, last_epoch=4)
    opt = our_opt()
    fo.StepLR(opt, step_size=2)
    fo.StepLR(opt, step_size=2, last_epoch=4)  # initial_lr now present
