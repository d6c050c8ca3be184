"""examples/sdprop_vs_adaptive.py: the quick mode on a tiny subset writes a report, a figure and the raw
runs, and every optimizer learns (well above the 10 % of chance)."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("sdprop_vs_adaptive", ROOT / "examples" / "sdprop_vs_adaptive.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    ex = _load_example()
    out = tmp_path_factory.mktemp("sdprop")
    setups = ["digits_mlp"]
    try:
        import fusedlearn as fl
        fl.data.fashion_mnist()
        setups.append("demo_fashion")
    except FileNotFoundError:
        pass
    rc = ex.main(["--quick", "--workers", "1", "--max-train", "200", "--setups", ",".join(setups),
                  "--out", str(out)])
    assert rc == 0
    return ex, out, setups, json.loads((out / "sdprop.json").read_text())


def test_outputs_and_structure(quick_run):
    ex, out, setups, saved = quick_run
    assert saved["setups"] == setups and saved["quick"] is True
    md = (out / "sdprop.md").read_text()
    assert md.startswith("# SDProp vs RMSprop vs Adam")
    for name in setups:
        assert f"(`{name}`)" in md
    assert "## Batch-size sensitivity" in md
    assert (out / "sdprop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = saved["settings"]
    seeds = cfg["seeds"]
    for name in setups:
        s = ex.setup_cfg(cfg, name)
        assert saved["sizes"][name]["train"] <= 200
        for bs in s["batch_sizes"]:
            for opt in ex.OPTIMIZERS:
                lr = saved["chosen"][f"{name}|{bs}|{opt}"]
                assert lr in cfg["grid"]
                for rate in (lr, ex.DEFAULT_LR[opt]):
                    runs = [r for r in saved["runs"] if r["setup"] == name and r["bs"] == bs and r["opt"] == opt
                            and math.isclose(r["lr"], rate)]
                    assert sorted(r["seed"] for r in runs) == sorted(seeds)
                    for r in runs:
                        assert len(r["test_acc"]) == len(r["val_acc"]) == len(r["train_loss"]) == s["epochs"]
                        assert all(0.0 <= a <= 1.0 for a in r["test_acc"] + r["val_acc"])
    # no run is repeated: the (set-up, optimizer, lr, batch, seed) keys are unique
    keys = [(r["setup"], r["opt"], r["lr"], r["bs"], r["seed"]) for r in saved["runs"]]
    assert len(keys) == len(set(keys))


def test_every_optimizer_learns(quick_run):
    ex, out, setups, saved = quick_run
    for name in setups:
        bs = ex.setup_cfg(saved["settings"], name)["batch_sizes"][0]
        for opt in ex.OPTIMIZERS:
            lr = saved["chosen"][f"{name}|{bs}|{opt}"]
            final = [r["test_acc"][-1] for r in saved["runs"]
                     if r["setup"] == name and r["bs"] == bs and r["opt"] == opt and math.isclose(r["lr"], lr)]
            assert np.mean(final) > 0.4, (name, opt, final)  # chance is 0.1
            first_loss = [r["train_loss"][0] for r in saved["runs"] if r["setup"] == name and r["opt"] == opt]
            assert all(np.isfinite(first_loss))


def test_report_rewritten_from_json(quick_run, tmp_path):
    ex, out, setups, saved = quick_run
    (tmp_path / "sdprop.json").write_text((out / "sdprop.json").read_text())
    assert ex.main(["--from-json", str(tmp_path / "sdprop.json")]) == 0
    assert (tmp_path / "sdprop.md").read_text() == (out / "sdprop.md").read_text()


def test_helpers():
    ex = _load_example()
    assert ex.epochs_to([0.2, 0.5, 0.7, 0.9], 0.6) == 3
    assert ex.epochs_to([0.2, 0.5], 0.6) is None
    runs = [dict(lr=1e-3, val_acc=[0.5, 0.8, 0.9]), dict(lr=3e-3, val_acc=[0.9, 0.85, 0.7]),
            dict(lr=1e-4, val_acc=[0.1, 0.2, 0.9])]
    assert ex.select(runs, 1) == 1e-4  # ties at 0.9: the smaller rate
    assert ex.select(runs, 3) == 3e-3
    with pytest.raises(ValueError, match="unknown optimizer"):
        ex.make_optimizer("SGD", [], 1e-3)
    with pytest.raises(SystemExit):
        ex.main(["--setups", "nope"])


def test_reuse_takes_every_saved_run(quick_run, tmp_path):
    ex, out, setups, saved = quick_run
    rc = ex.main(["--quick", "--workers", "1", "--max-train", "200", "--setups", ",".join(setups),
                  "--out", str(tmp_path), "--reuse", str(out / "sdprop.json")])
    assert rc == 0
    again = json.loads((tmp_path / "sdprop.json").read_text())
    assert again["reused"] == len(again["runs"]) == len(saved["runs"])
    assert again["chosen"] == saved["chosen"]
    old = {(r["setup"], r["opt"], r["lr"], r["bs"], r["seed"]): r["test_acc"] for r in saved["runs"]}
    assert all(old[(r["setup"], r["opt"], r["lr"], r["bs"], r["seed"])] == r["test_acc"] for r in again["runs"])
    # a different data size is not the same configuration: nothing is reused
    rc = ex.main(["--quick", "--workers", "1", "--max-train", "150", "--setups", "digits_mlp",
                  "--out", str(tmp_path / "other"), "--reuse", str(out / "sdprop.json")])
    assert rc == 0
    assert json.loads((tmp_path / "other" / "sdprop.json").read_text())["reused"] == 0
