"""Data: ArrayDataset batching, digits, IDX / CIFAR-10 readers on generated files, Fashion-MNIST lookup."""
import gzip
import os

import numpy as np
import pytest

import fusedlearn as fl
from fusedlearn import data


def _write_idx(path, arr, code, compress):
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    payload = header + arr.astype(big).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def _fake_mnist(directory, compress, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    sets = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbl = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(directory / f"{split}-images-idx3-ubyte", img, 0x08, compress)
        _write_idx(directory / f"{split}-labels-idx1-ubyte", lbl, 0x08, compress)
        sets[split] = (img, lbl)
    return sets


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                        (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_types(tmp_path, code, dtype, compress):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.idx", arr, code, compress)
    got = data.read_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        data.read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "t", np.zeros((10, 10), np.uint8), 0x08, False)
    raw = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "t")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_and_fashion_mnist_from_path(tmp_path, compress):
    sets = _fake_mnist(tmp_path, compress)
    train, test = data.mnist(tmp_path)
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    np.testing.assert_allclose(train.x[:, 0] * 255, sets["train"][0], atol=1e-3)
    np.testing.assert_array_equal(test.y, sets["t10k"][1])
    ftrain, _ = data.fashion_mnist(tmp_path, flatten=True)
    assert ftrain.x.shape == (12, 784) and 0 <= ftrain.x.min() and ftrain.x.max() <= 1


def test_missing_files_raise_file_not_found_with_hint(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(tmp_path)
    monkeypatch.setattr(data.sets, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("FUSEDLEARN_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.fashion_mnist()
    with pytest.raises(FileNotFoundError):
        data.mnist(tmp_path)
    with pytest.raises(FileNotFoundError):
        data.cifar10(tmp_path)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
                    reason="Debian's dataset-fashion-mnist package is not installed")
def test_fashion_mnist_from_debian_package():
    train, test = data.fashion_mnist()
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(test.y).tolist() == [1000] * 10


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(0)
    written = []
    for name, n in (("data_batch_1.bin", 4), ("data_batch_2.bin", 3), ("test_batch.bin", 2)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (tmp_path / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        written.append((labels, pixels))
    img, lbl = data.read_cifar10_batch(tmp_path / "data_batch_2.bin")
    assert img.shape == (3, 3, 32, 32) and img.dtype == np.uint8
    np.testing.assert_array_equal(img.reshape(3, -1), written[1][1])
    np.testing.assert_array_equal(lbl, written[1][0])
    # channel-major layout: the first 1024 bytes are the red plane
    np.testing.assert_array_equal(img[:, 0].reshape(3, -1), written[1][1][:, :1024])
    train, test = data.cifar10(tmp_path)
    assert train.x.shape == (7, 3, 32, 32) and test.x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(train.y, np.concatenate([written[0][0], written[1][0]]))
    (tmp_path / "broken.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="record size"):
        data.read_cifar10_batch(tmp_path / "broken.bin")


def test_digits_split():
    train, test = fl.data.digits()
    assert (len(train), len(test)) == (1438, 359)
    assert train.x.shape == (1438, 64) and train.x.dtype == np.float32
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0 and train.x.max() == 1.0
    assert set(np.unique(test.y)) == set(range(10))
    train2, test2 = fl.data.digits()
    np.testing.assert_array_equal(test.x, test2.x)
    img, _ = fl.data.digits(flatten=False)
    assert img.x.shape == (1438, 1, 8, 8)


def test_array_dataset_batches():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    ds = data.ArrayDataset(x, y)
    assert len(ds) == 10 and ds.num_batches(4) == 3 and ds.num_batches(4, drop_last=True) == 2
    batches = list(ds.batches(4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    s1 = np.concatenate([b[1] for b in ds.batches(3, shuffle=True, seed=5)])
    s2 = np.concatenate([b[1] for b in ds.batches(3, shuffle=True, seed=5)])
    np.testing.assert_array_equal(s1, s2)
    assert sorted(s1) == list(range(10)) and not np.array_equal(s1, y)
    for xb, yb in ds.batches(3, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    assert [len(b[0]) for b in ds.batches(4, drop_last=True)] == [4, 4]
    a, b = ds.split(0.3)
    assert len(a) == 3 and len(b) == 7
    with pytest.raises(ValueError):
        data.ArrayDataset(x, y[:5])
    with pytest.raises(ValueError):
        list(ds.batches(0))
