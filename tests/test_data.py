"""tinydense.data: official-format files, safe unpickling, download, augmentation, loader."""
import codecs
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tinydense import data
from tinydense.data import DataLoader, DataNotFoundError, DownloadError, download_cifar
from tinydense.safe_pickle import load_numpy_pickle

from train_helpers import write_cifar


# --- reading the official layout -------------------------------------------

def test_reads_official_layout_with_1017_images_per_file(tmp_path):
    written = write_cifar(tmp_path, per_file=1017, test_size=1017)
    train, test = data.CIFAR10(tmp_path), data.CIFAR10(tmp_path, train=False)
    assert len(train) == 5 * 1017 and len(test) == 1017
    assert train.images.shape == (5085, 3, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, written["train"][0])
    np.testing.assert_array_equal(train.labels, written["train"][1])
    np.testing.assert_array_equal(test.images, written["test"][0])
    assert train.classes == tuple(f"class{i}" for i in range(10))


def test_pixel_layout_is_red_then_green_then_blue_row_major(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(tmp_path, per_file=2)
    row = np.zeros(3072, np.uint8)
    row[0], row[1024 + 33], row[2048 + 1023] = 10, 20, 30    # R(0,0), G(1,1), B(31,31)
    batch = {b"data": np.stack([row, row]), b"labels": [3, 4]}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    test = data.CIFAR10(tmp_path, train=False)
    assert test.images[0, 0, 0, 0] == 10 and test.images[0, 1, 1, 1] == 20 and test.images[0, 2, 31, 31] == 30
    assert test.images.sum() == 2 * 60 and list(test.labels) == [3, 4]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    written = write_cifar(tmp_path, name="cifar100", per_file=50, test_size=20)
    fine = data.CIFAR100(tmp_path)
    coarse = data.CIFAR100(tmp_path, train=False, coarse=True)
    np.testing.assert_array_equal(fine.labels, written["train"][1])
    np.testing.assert_array_equal(coarse.labels, written["test"][1] // 5)
    assert fine.num_classes == 100 and coarse.num_classes == 20 and coarse.classes[3] == "coarse3"


def test_label_and_data_count_mismatch_is_an_error(tmp_path):
    write_cifar(tmp_path, per_file=10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}, f)
    with pytest.raises(ValueError, match=r"data_batch_3: 10 images but 9 labels"):
        data.CIFAR10(tmp_path)


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, "shape \\(n, 3072\\)"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "uint8"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, r"labels must lie in \[0, 10\)"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, "no 'labels' key"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_malformed_batch_files_are_errors(tmp_path, batch, message):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match=message):
        data.read_batch(path)


class _RunsCode:
    """Unpickling this would call os.system (a classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_malicious_batch_file(tmp_path):
    write_cifar(tmp_path, per_file=4)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="refused to load posix.system|refused to load os.system"):
        data.CIFAR10(tmp_path)
    assert not marker.exists()


def cifar_like_batch(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n - 1)] + [b""],
            b"extra": {"fortran": np.asfortranarray(rng.standard_normal((3, 2))), "scalar": np.float32(1.5),
                       "empty": np.zeros((0, 4), np.int16)}}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_batch_files_pickled_with_any_protocol_are_read(tmp_path, protocol):
    # protocols 0-2 store bytes as _codecs.encode(text, "latin1") (b"" as bytes()), protocol 5 stores
    # contiguous arrays as numpy's _frombuffer(bytes, dtype, shape, order): issue 14 found 0, 1, 2 and 5 refused
    batch = cifar_like_batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    back = load_numpy_pickle(path)
    assert back.keys() == batch.keys() and back[b"extra"].keys() == batch[b"extra"].keys()
    for key in (b"batch_label", b"labels", b"filenames"):
        assert back[key] == batch[key]
    for got, want in [(back[b"data"], batch[b"data"])] + [(back[b"extra"][k], v) for k, v in batch[b"extra"].items()]:
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert back[b"extra"]["fortran"].flags.f_contiguous
    images, labels = data.read_batch(path)
    np.testing.assert_array_equal(images, batch[b"data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(labels, batch[b"labels"])


class _Calls:
    """Pickles as a call of ``fn(*args)``: how a crafted file would use an allowed name."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:                                   # NumPy 1
        from numpy.core.numeric import _frombuffer
    return _frombuffer


@pytest.mark.parametrize("payload, message", [
    (_Calls(codecs.encode, "x", "rot13"), r"refused _codecs.encode\(str, 'rot13'"),
    (_Calls(codecs.encode, "x" * 50, "utf-16"), r"refused _codecs.encode\(str, 'utf-16'"),
    (_Calls(codecs.encode, b"x\x9c", "zlib_codec"), r"refused _codecs.encode\(bytes, 'zlib_codec'"),
    (_Calls(codecs.encode, "x"), r"refused _codecs.encode\(str, 'utf-8'"),
    (_Calls(bytes, 10 ** 12), r"refused bytes\(1000000000000,\)"),
    (_Calls(_numpy_frombuffer(), b"\0" * 8, np.dtype(object), (1,), "C"),
     r"refused _frombuffer with dtype dtype\(.O.\): numeric dtypes only"),
    (_Calls(_numpy_frombuffer(), b"\0" * 8, np.dtype(np.uint8), (10 ** 6,), "C"),
     r"refused _frombuffer: shape \(1000000,\) of uint8 needs 1000000 bytes, the file has 8"),
    (_Calls(_numpy_frombuffer(), b"\0" * 8, np.dtype(np.uint8), (8,), "K"), "refused _frombuffer with shape"),
    (_Calls(_numpy_frombuffer(), "text", np.dtype(np.uint8), (4,), "C"), "refused _frombuffer of a str"),
], ids=["rot13", "utf-16", "zlib", "default-codec", "bytes(n)", "object-dtype", "shape-vs-bytes", "order", "str"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_the_admitted_names_refuse_every_other_use(tmp_path, payload, message, protocol):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match=message):
        load_numpy_pickle(path)
    with pytest.raises(ValueError, match="is not a readable CIFAR batch file: " + message):
        data.read_batch(path)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_malicious_file_is_refused_under_every_protocol(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=protocol))
    with pytest.raises(ValueError, match="refused to load posix.system|refused to load os.system"):
        data.read_batch(path)
    assert not marker.exists()


def test_missing_data_says_what_to_download_and_where(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        data.CIFAR10(tmp_path / "empty")
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg
    assert "https://www.cs.toronto.edu/~kriz/" in msg and str((tmp_path / "empty").resolve()) in msg


def test_default_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYDENSE_DATA", str(tmp_path))
    assert data.default_data_dir("elsewhere") == Path("elsewhere")
    assert data.default_data_dir() == tmp_path
    monkeypatch.delenv("TINYDENSE_DATA")
    assert str(data.default_data_dir()) == "data"


def test_head_and_channel_stats(tmp_path):
    write_cifar(tmp_path, per_file=30)
    train = data.CIFAR10(tmp_path)
    head = train.head(7)
    assert len(head) == 7 and np.array_equal(head.images, train.images[:7])
    mean, std = train.channel_stats()
    x = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="positive integer"):
        train.head(0)


# --- download ---------------------------------------------------------------

def _archive(tmp_path, members=None):
    """A tar.gz holding a small cifar-10-batches-py/ (or the given (name, bytes) members)."""
    src = tmp_path / "src"
    write_cifar(src, per_file=3)
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        if members is None:
            tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for name, payload in members or []:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_md5_and_places_the_folder(tmp_path):
    archive, md5 = _archive(tmp_path)
    root = tmp_path / "root"
    folder = download_cifar("cifar10", root, url=archive.as_uri(), md5=md5, progress=False)
    assert folder == root / "cifar-10-batches-py"
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py"]          # no temporary left
    assert len(data.CIFAR10(root)) == 15


def test_download_with_bad_md5_raises_and_leaves_nothing(tmp_path):
    archive, md5 = _archive(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="checksum mismatch.*c58f30108f718f92721af3b95e74349a"):
        download_cifar("cifar10", root, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert not root.exists()                    # not even the directory it made for the download
    with pytest.raises(DataNotFoundError):
        data.CIFAR10(root)


def test_download_refuses_paths_outside_the_target(tmp_path):
    archive, md5 = _archive(tmp_path, members=[("cifar-10-batches-py/data_batch_1", b"x"),
                                               ("../escaped", b"evil")])
    root = tmp_path / "a" / "root"
    with pytest.raises(DownloadError, match="'../escaped' would be written outside"):
        download_cifar("cifar10", root, url=archive.as_uri(), md5=md5, progress=False)
    assert not (tmp_path / "a" / "escaped").exists() and not root.exists()


def test_safe_extract_refuses_links(tmp_path):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DownloadError, match="not a plain file"):
        data.safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out" / "cifar-10-batches-py" / "link").exists()


class _FakeResponse(io.BytesIO):
    """A urlopen response that claims ``length`` bytes and may stop early or raise."""

    def __init__(self, payload, length, fail=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(length)}
        self.fail = fail

    def read(self, n=-1):
        chunk = super().read(n)
        if not chunk and self.fail:
            raise self.fail
        return chunk


@pytest.mark.parametrize("fail, error", [(None, DownloadError), (ConnectionResetError("reset"), DownloadError),
                                         (KeyboardInterrupt(), KeyboardInterrupt)])
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, fail, error):
    archive, md5 = _archive(tmp_path)
    payload = archive.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: _FakeResponse(payload[:100], len(payload), fail))
    root = tmp_path / "root"
    with pytest.raises(error):
        download_cifar("cifar10", root, md5=md5, progress=False)
    assert not root.exists()                    # not even the directory it made for the download


def test_offline_download_error_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "root"
    with pytest.raises(DownloadError) as e:
        data.CIFAR10(root, download=True)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(e.value)
    assert "by hand" in str(e.value) and str(root.resolve()) in str(e.value)
    assert not root.exists()                    # not even the directory it made for the download


def test_download_refuses_plain_http(tmp_path):
    with pytest.raises(ValueError, match="https"):
        download_cifar("cifar10", tmp_path, url="http://example.com/cifar.tar.gz")


# --- preprocessing ----------------------------------------------------------

def test_normalize_by_hand():
    images = np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1)
    out = data.normalize(images, mean=[0.0, 0.1, 0.5], std=[1.0, 0.5, 0.25])
    np.testing.assert_allclose(out.ravel(), [0.0, (0.2 - 0.1) / 0.5, (1.0 - 0.5) / 0.25], rtol=1e-6)
    assert out.dtype == np.float32


def _crop_flip_loop(x, offsets, flips, p):
    """Reference: pad, cut and mirror one image at a time."""
    out = np.empty_like(x)
    for i in range(len(x)):
        padded = np.pad(x[i], ((0, 0), (p, p), (p, p)))
        top, left = offsets[i]
        window = padded[:, top:top + x.shape[2], left:left + x.shape[3]]
        out[i] = window[:, :, ::-1] if flips[i] else window
    return out


def test_crop_flip_matches_a_per_image_loop():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    offsets, flips = data.draw_crop_flip(np.random.default_rng(0), 16, padding=4)
    out = data.crop_flip(x, offsets, flips, padding=4)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, _crop_flip_loop(x, offsets, flips, 4))
    assert offsets.min() >= 0 and offsets.max() <= 8 and 0 < flips.sum() < 16


def test_flip_is_a_mirror_image_and_centre_crop_is_identity():
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    centre = np.full((2, 2), 4)
    np.testing.assert_array_equal(data.crop_flip(x, centre, np.array([False, False])), x)
    np.testing.assert_array_equal(data.crop_flip(x, centre, np.array([True, True])), x[:, :, :, ::-1])


def test_crops_stay_within_the_padding():
    x = np.ones((2, 1, 32, 32), np.float32)
    out = data.crop_flip(x, np.array([[0, 0], [8, 8]]), np.array([False, False]))
    # top-left corner crop: 4 zero rows and columns, then the image; bottom-right: the mirror case
    assert out[0, 0, :4].sum() == 0 and out[0, 0, :, :4].sum() == 0 and out[0, 0, 4:, 4:].min() == 1
    assert out[1, 0, 28:].sum() == 0 and out[1, 0, :, 28:].sum() == 0 and out[1, 0, :28, :28].min() == 1
    # any crop keeps between 24*24 and 32*32 of the image's pixels
    rnd = data.random_crop_flip(np.ones((64, 1, 32, 32), np.float32), np.random.default_rng(0))
    kept = rnd.sum(axis=(1, 2, 3))
    assert kept.min() >= 24 * 24 and kept.max() <= 32 * 32 and len(np.unique(kept)) > 3


def test_augmentation_is_seeded():
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32)
    a = data.random_crop_flip(x, np.random.default_rng(5))
    b = data.random_crop_flip(x, np.random.default_rng(5))
    c = data.random_crop_flip(x, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- the loader ---------------------------------------------------------------

def _dataset(n=10):
    images = np.arange(n, dtype=np.uint8).repeat(3 * 4 * 4).reshape(n, 3, 4, 4)
    return data.ImageDataset(images, np.arange(n, dtype=np.int64) % 3, ["a", "b", "c"])


def test_loader_batches_in_order_with_a_last_partial_batch():
    loader = DataLoader(_dataset(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[2]
    assert x.dtype == np.float32 and y.data.dtype == np.int64 and x.device == "cpu"
    np.testing.assert_allclose(x.data[:, 0, 0, 0], np.array([8, 9]) / 255, rtol=1e-6)
    assert list(y.data) == [2, 0]


def test_loader_shuffles_every_epoch_and_sees_every_image_once():
    loader = DataLoader(_dataset(10), batch_size=3, shuffle=True, seed=0)
    orders = [np.concatenate([np.rint(x.data[:, 0, 0, 0] * 255) for x, _ in loader]) for _ in range(2)]
    for order in orders:
        assert sorted(order) == list(range(10))
    assert not np.array_equal(orders[0], orders[1])


def test_loader_replays_an_epoch_from_its_state():
    ds = _dataset(10)
    loader = DataLoader(ds, batch_size=4, shuffle=True, augment=True, padding=1, seed=7)
    list(loader)
    state = loader.state_dict()
    epoch = [(x.data, y.data) for x, y in loader]
    after = loader.state_dict()
    replay = DataLoader(ds, batch_size=4, shuffle=True, augment=True, padding=1, seed=123)
    replay.load_state_dict(state)
    tail = [(x.data, y.data) for x, y in replay.iterate(start_batch=1)]
    assert len(tail) == 2
    for (xa, ya), (xb, yb) in zip(epoch[1:], tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert replay.state_dict() == after        # the generator ends where the full epoch left it


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(_dataset(), batch_size=0)
    with pytest.raises(ValueError, match="unknown device"):
        DataLoader(_dataset(), device="tpu")
