"""fit(): accuracy on digits, early stopping, schedulers, history files and plot,
checkpoints written atomically, and kill / resume giving bit-identical weights."""
import csv
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import nn
from fusedlearn.train import EarlyStopping, LambdaCallback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Child processes import the same fusedlearn as this one (the installed
# package in CI, the source tree with the built module in development).
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fl.__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed=0, dropout=0.0):
    g = np.random.default_rng(seed)
    layers = [nn.Linear(64, 256, generator=g), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=seed))
    layers += [nn.Linear(256, 128, generator=g), nn.ReLU(), nn.Linear(128, 10, generator=g)]
    return nn.Sequential(*layers)


def test_digits_mlp_reaches_97_percent(digits, tmp_path):
    train, test = digits
    model = mlp()
    opt = fl.optim.SDProp(model.parameters(), lr=3e-3)
    sched = fl.optim.CosineAnnealingLR(opt, T_max=20)
    hist = fl.train.fit(model, nn.CrossEntropyLoss(), opt, train, test, epochs=20, batch_size=32, scheduler=sched,
                        progress=False, history_path=tmp_path / "h.csv", plot_path=tmp_path / "curves.png")
    result = fl.train.evaluate(model, nn.CrossEntropyLoss(), test)
    assert result["accuracy"] >= 0.97
    assert hist["val_accuracy"][-1] == pytest.approx(result["accuracy"])
    assert hist["epoch"] == list(range(1, 21)) and hist["loss"][-1] < hist["loss"][0]
    assert hist["lr"][0] == pytest.approx(3e-3) and hist["lr"][-1] < 1e-4
    with open(tmp_path / "h.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and float(rows[-1]["val_accuracy"]) == pytest.approx(result["accuracy"])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pred = fl.train.predict(model, test.x)
    assert (pred.argmax(1) == test.y).mean() == pytest.approx(result["accuracy"])


def test_history_json_progress_bar_and_regression(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 1, generator=0))
    hist = fl.train.fit(model, nn.MSELoss(), fl.optim.Adam(model.parameters(), lr=0.05), (x, y), (x, y), epochs=3,
                        batch_size=16, progress=True, history_path=tmp_path / "h.json", plot_path=tmp_path / "p.png")
    assert hist["accuracy"] == [None] * 3 and len(hist["val_loss"]) == 3
    saved = json.loads((tmp_path / "h.json").read_text())
    assert saved["loss"] == pytest.approx(hist["loss"])
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "val_loss" in err
    with pytest.raises(ValueError, match="csv or .json"):
        fl.train.write_history(hist, tmp_path / "h.txt")


def test_early_stopping_and_plateau_scheduler(digits):
    train, test = digits
    model = mlp()
    opt = fl.optim.SGD(model.parameters(), lr=0.0)  # nothing improves after the first epoch
    sched = fl.optim.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    seen = []
    spy = LambdaCallback(on_epoch_end=lambda e, logs, state: seen.append(logs["val_loss"]))
    es = EarlyStopping(monitor="val_loss", patience=2, min_delta=1e-3)
    hist = fl.train.fit(model, nn.CrossEntropyLoss(), opt, train, test, epochs=50, batch_size=256,
                        scheduler=sched, callbacks=[es, spy], progress=False)
    assert len(hist["epoch"]) == 3 and es.stopped_epoch == 3 and es.best_epoch == 1
    assert seen == hist["val_loss"]
    # ReduceLROnPlateau received the (constant) validation loss
    assert sched.best == pytest.approx(hist["val_loss"][0])


def _run(tmp_path, epochs, ckpt=None, resume=False, callbacks=(), digits=None):
    train, test = digits
    model = mlp(seed=3, dropout=0.2)
    opt = fl.optim.SDProp(model.parameters(), lr=2e-3)
    sched = fl.optim.StepLR(opt, step_size=2, gamma=0.5)
    hist = fl.train.fit(model, nn.CrossEntropyLoss(), opt, train, test, epochs=epochs, batch_size=128,
                        scheduler=sched, callbacks=[EarlyStopping(patience=10), *callbacks], seed=11,
                        progress=False, checkpoint_path=ckpt, resume=resume)
    return model, opt, hist


def test_kill_and_resume_is_bit_identical(tmp_path, digits):
    ref_model, ref_opt, ref_hist = _run(tmp_path, 5, digits=digits)
    ckpt = tmp_path / "run.ckpt"

    def kill(epoch, logs, state):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 5, ckpt, callbacks=[LambdaCallback(on_epoch_end=kill)], digits=digits)
    assert fl.load(ckpt)["epoch"] == 2  # the interrupted epoch left no checkpoint
    model, opt, hist = _run(tmp_path, 5, ckpt, resume=True, digits=digits)
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert hist["loss"] == ref_hist["loss"] and hist["val_accuracy"] == ref_hist["val_accuracy"]
    ref_state, state = ref_opt.state_dict()["state"], opt.state_dict()["state"]
    for i in ref_state:
        for key in ref_state[i]:
            np.testing.assert_array_equal(ref_state[i][key], state[i][key])
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    # resuming a finished run does nothing more
    model2, _, hist2 = _run(tmp_path, 5, ckpt, resume=True, digits=digits)
    assert hist2["loss"] == ref_hist["loss"]


def test_resume_in_a_new_process_after_sigkill(tmp_path, digits):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{PKG_PARENT!r}, {os.path.join(ROOT, 'tests')!r}]
        import numpy as np, fusedlearn as fl
        import test_train_fit as t
        fl.set_num_threads(1)
        def die(epoch, logs, state):
            if epoch == 3 and sys.argv[1] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        model, _, _ = t._run(None, 4, sys.argv[2], resume=True,
                             callbacks=[fl.train.LambdaCallback(on_epoch_end=die)], digits=fl.data.digits())
        np.savez(sys.argv[3], **model.state_dict())
    """)
    path = tmp_path / "child.py"
    path.write_text(script)
    ckpt, out = str(tmp_path / "c.ckpt"), str(tmp_path / "w.npz")
    killed = subprocess.run([sys.executable, str(path), "kill", ckpt, out], capture_output=True)
    assert killed.returncode == -9 and not os.path.exists(out)
    assert fl.load(ckpt)["epoch"] == 2
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    done = subprocess.run([sys.executable, str(path), "resume", ckpt, out], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref_model, _, _ = _run(tmp_path, 4, digits=digits)
    weights = np.load(out)
    for k, v in ref_model.state_dict().items():
        np.testing.assert_array_equal(weights[k], v, err_msg=k)


def test_save_load_roundtrip(tmp_path):
    model = mlp(dropout=0.5)
    opt = fl.optim.Adam(model.parameters(), lr=1e-3)
    model(np.ones((4, 64), np.float32))
    model.backward(np.ones((4, 10), np.float32))
    opt.step()
    fl.save(tmp_path / "m.ckpt", model, opt, epoch=7, note="hello", metrics={"acc": 0.5})
    other = mlp(seed=9, dropout=0.5)
    opt2 = fl.optim.Adam(other.parameters(), lr=0.5)
    ck = fl.load(tmp_path / "m.ckpt", other, opt2)
    assert ck["epoch"] == 7 and ck["note"] == "hello" and ck["metrics"] == {"acc": 0.5}
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert opt2.param_groups[0]["lr"] == 1e-3
    np.testing.assert_array_equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # the dropout generator continues where it was
    np.testing.assert_array_equal(model[2](np.ones(50)), other[2](np.ones(50)))
    with pytest.raises(ValueError, match="reserved"):
        fl.save(tmp_path / "x", model, epoch=1, rng=3)


def test_load_refuses_code_and_other_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"format": "fusedlearn-checkpoint", "x": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="trusted=True"):
        fl.load(tmp_path / "evil.ckpt")
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(ValueError, match="not a fusedlearn checkpoint"):
        fl.load(tmp_path / "other.pkl")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    model = mlp()
    target = tmp_path / "m.ckpt"
    fl.save(target, model, epoch=1)
    good = target.read_bytes()
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        raise OSError("disk on fire")  # after the bytes were written, before the rename

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        fl.save(target, mlp(seed=5), epoch=2)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls
    assert target.read_bytes() == good and fl.load(target)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt"]
    # a failure at the rename of a first version leaves nothing at all
    import fusedlearn.checkpoint as C

    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError("no space left on device")

    monkeypatch.setattr(C.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="no space"):
        fl.save(target, mlp(seed=6), epoch=3)
    assert target.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["m.ckpt"]
    monkeypatch.setattr(C.os, "fdopen", real_fdopen)
    monkeypatch.setattr(C.os, "replace", lambda *a: (_ for _ in ()).throw(RuntimeError("killed mid-write")))
    with pytest.raises(RuntimeError):
        fl.save(tmp_path / "new.ckpt", model)
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt"]


def test_fit_argument_errors(digits):
    train, test = digits
    model = mlp()
    opt = fl.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="batch_size"):
        fl.train.fit(model, loss, opt, train, epochs=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="checkpoint_path"):
        fl.train.fit(model, loss, opt, train, epochs=1, batch_size=8, resume=True, progress=False)
    with pytest.raises(TypeError, match="train_data"):
        fl.train.fit(model, loss, opt, train.x, epochs=1, batch_size=8, progress=False)
    bad = fl.data.ArrayDataset(train.x[:10], np.full(10, 12))
    with pytest.raises(ValueError, match="out of range"):
        fl.train.fit(model, loss, opt, bad, epochs=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match="floating-point"):
        fl.train.fit(model, loss, opt, (train.x.astype(np.int64), train.y), epochs=1, batch_size=8, progress=False)


def test_cli_demo_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    out = subprocess.run([sys.executable, "-m", "fusedlearn.cli", "demo", "--epochs", "2", "--cnn-epochs", "1", "--threads", "1",
                          "--no-progress", "--plot", str(tmp_path / "d.png"), "--json", str(tmp_path / "d.json")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "wall time" in out.stdout and "CNN test accuracy" in out.stdout
    assert (tmp_path / "d.png").exists() and json.loads((tmp_path / "d.json").read_text())["test_accuracy"] > 0.8
    help_ = subprocess.run([sys.executable, "-m", "fusedlearn.cli", "--help"], capture_output=True, text=True, env=env)
    assert "demo" in help_.stdout and "info" in help_.stdout


def test_plain_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails: fall back to printed lines
    x = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    model = mlp()
    fl.train.fit(model, nn.CrossEntropyLoss(), fl.optim.SGD(model.parameters(), lr=0.01), (x, y), epochs=2,
                 batch_size=8, progress=True)
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "acc" in out
