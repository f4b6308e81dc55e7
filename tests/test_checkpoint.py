"""tinydense.save / tinydense.load: round trips, the pickle-free .npz format,
atomic writes, and clear errors for every kind of bad file."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import tinydense as td
from tinydense import cli, models


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_round_trip_of_a_training_state(tmp_path):
    td.manual_seed(0)
    model = models.densenet_bc(10, 4)
    model(td.tensor(rand(4, 3, 8, 8)))                       # non-trivial BN statistics
    state = {
        "model": model.state_dict(),
        "epoch": 7, "lr": 0.01, "best_acc": float("nan"), "note": "ünïcode", "done": False, "none": None,
        "history": [0.5, 0.25], "pair": (1, "a"),
        "extra": {"f64": np.linspace(0, 1, 5), "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
                  "flags": np.array([True, False]), "scalar": np.float32(2.5),
                  "tensor": td.tensor([1.0, 2.0]), "strided": np.arange(12.0).reshape(3, 4)[:, ::2]},
    }
    path = tmp_path / "ckpt.npz"
    td.save(state, path)
    back = td.load(path)
    assert set(back) == set(state)
    assert list(back["model"]) == list(state["model"])               # order kept
    for key, value in state["model"].items():
        assert back["model"][key].dtype == value.dtype and back["model"][key].shape == value.shape
        np.testing.assert_array_equal(back["model"][key], value)
    nbt = back["model"]["features.norm5.num_batches_tracked"]
    assert nbt.shape == () and nbt.dtype == np.int64 and int(nbt) == 1
    assert back["epoch"] == 7 and back["lr"] == 0.01 and np.isnan(back["best_acc"])
    assert back["note"] == "ünïcode" and back["done"] is False and back["none"] is None
    assert back["history"] == [0.5, 0.25] and back["pair"] == (1, "a")
    extra = back["extra"]
    np.testing.assert_array_equal(extra["f64"], np.linspace(0, 1, 5))
    assert extra["u8"].dtype == np.uint8 and extra["flags"].dtype == bool
    assert extra["scalar"] == 2.5 and isinstance(extra["scalar"], float)
    np.testing.assert_array_equal(extra["tensor"], [1.0, 2.0])
    np.testing.assert_array_equal(extra["strided"], np.arange(12.0).reshape(3, 4)[:, ::2])

    restored = models.densenet_bc(10, 4)
    restored.load_state_dict(back["model"])
    model.eval(), restored.eval()
    x = td.tensor(rand(2, 3, 8, 8, seed=1))
    np.testing.assert_array_equal(model(x).data, restored(x).data)


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    path = tmp_path / "m.npz"
    td.save({"model": {"w": np.ones((2, 2))}, "epoch": 1}, path)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["__tinydense__", "model/w"]
        manifest = json.loads(npz["__tinydense__"].tobytes())
    assert manifest["format"] == "tinydense-checkpoint" and manifest["version"] == 1
    assert manifest["tree"]["dict"]["epoch"] == {"value": 1}
    with zipfile.ZipFile(path) as zf:
        assert all(not n.endswith(".pkl") for n in zf.namelist())


def test_unsupported_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="save model.state_dict"):
        td.save({"model": models.densenet_bc(10, 4)}, path)
    with pytest.raises(TypeError, match="keys of opt must be strings, got 0"):
        td.save({"opt": {0: np.ones(2)}}, path)
    with pytest.raises(TypeError, match="a/b is an array of Python objects"):
        td.save({"a": {"b": np.array([object()])}}, path)
    with pytest.raises(TypeError, match="type set"):
        td.save({"s": {1, 2}}, path)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    td.save({"epoch": 1, "w": np.zeros(1000)}, path)
    size = path.stat().st_size
    real_write = np.lib.format.write_array
    calls = []

    def failing_write(fp, array, **kwargs):
        calls.append(1)
        if len(calls) == 3:                                   # partway through the second array
            fp.write(b"\x00" * 100)
            raise OSError("No space left on device")
        return real_write(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="No space left"):
        td.save({"epoch": 2, "w": np.ones(1000), "v": np.ones(1000)}, path)
    monkeypatch.undo()
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]      # no temporary file left behind
    assert path.stat().st_size == size
    back = td.load(path)
    assert back["epoch"] == 1 and not back["w"].any()
    td.save({"epoch": 3}, path)                                      # and a later save replaces it
    assert td.load(path) == {"epoch": 3}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*nope.npz"):
        td.load(tmp_path / "nope.npz")


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello, not a zip at all")
    with pytest.raises(ValueError, match="notes.npz is not a tinydense checkpoint"):
        td.load(text)
    single = tmp_path / "one.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="holds a single array"):
        td.load(single)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2), b=np.zeros(2))
    with pytest.raises(ValueError, match="plain.npz is an .npz file but not a tinydense checkpoint.*a, b"):
        td.load(plain)
    pickled = tmp_path / "pickled.npz"
    with open(pickled, "wb") as f:                       # an object array: loading it would unpickle
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled.npz is not a tinydense checkpoint: it holds a single array") as e:
        td.load(pickled)
    assert "pickle" not in str(e.value).replace("pickled.npz", "")   # never NumPy's advice to unpickle it
    sneaky = tmp_path / "sneaky.npz"                     # a manifest, and an object array beside it
    td.save({"w": np.ones(2)}, sneaky)
    with zipfile.ZipFile(sneaky, "a") as zf, zf.open("evil.npy", "w") as entry:
        np.lib.format.write_array(entry, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="sneaky.npz is not a valid tinydense checkpoint: its entry 'evil' is not a "
                                         "readable numeric array") as e:
        td.load(sneaky)
    assert "allow_pickle" not in str(e.value) and "pickle.load" not in str(e.value)


NOT_CHECKPOINTS = {   # name: (how to write it, what the message says it is)
    "object.npy": (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
                   "it holds a single array (an .npy file), not an .npz archive"),
    "objects.npz": (lambda p: np.savez(p, a=np.array([{"a": 1}], dtype=object), __tinydense__=np.zeros(1)),
                    "its entry 'a' is not a readable numeric array"),
    "random.bin": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(1000)),    # np.load: "pickled data"
                   "it is not a zip archive"),
    "a.pkl": (lambda p: p.write_bytes(pickle.dumps({"model": [1, 2]})), "it is not a zip archive"),
    "empty.npz": (lambda p: p.write_bytes(b""), "it is not a zip archive"),
}


@pytest.mark.parametrize("name", NOT_CHECKPOINTS)
def test_evaluate_on_a_file_that_is_not_a_checkpoint_says_so_in_tinydense_s_words(tmp_path, capsys, name):
    # issue 14: the message repeated NumPy's advice to "load it unsafely using pickle.load()"
    path = tmp_path / name
    write, what = NOT_CHECKPOINTS[name]
    write(path)
    assert cli.main(["evaluate", str(path), "--data-dir", str(tmp_path / "no-data")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"tinydense: error: {path} is not a readable tinydense training checkpoint")
    assert what in err and "a tinydense checkpoint is an .npz archive" in err      # what it is not, what one is
    assert "pickle.load" not in err and "allow_pickle" not in err and "unsafely" not in err
    assert not (tmp_path / "no-data").exists()


def test_truncated_and_corrupt_checkpoints(tmp_path):
    good = tmp_path / "good.npz"
    td.save({"model": models.densenet_bc(10, 4).state_dict(), "epoch": 4}, good)
    data = good.read_bytes()

    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz is not a readable tinydense checkpoint .*truncated"):
        td.load(cut)

    flipped = bytearray(data)
    start = data.index(b"model/features.conv0.weight.npy") + 200       # inside that array's numbers
    flipped[start:start + 8] = bytes(255 - b for b in flipped[start:start + 8])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="bad.npz is a damaged tinydense checkpoint .*CRC"):
        td.load(bad)

    old = tmp_path / "future.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(old, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "__tinydense__.npy":
                manifest = json.loads(np.load(good)["__tinydense__"].tobytes())
                manifest["version"] = 99
                raw = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
                with dst.open(name, "w") as entry:
                    np.lib.format.write_array(entry, raw)
                continue
            dst.writestr(name, content)
    with pytest.raises(ValueError, match="version 99; this tinydense reads version 1"):
        td.load(old)


def test_loading_into_the_wrong_model_lists_the_mismatches_and_changes_nothing(tmp_path):
    path = tmp_path / "bc10.npz"
    td.save(models.densenet_bc(10, 4).state_dict(), path)
    other = models.densenet_bc(10, 6)
    before = other.state_dict()
    with pytest.raises(ValueError) as info:
        other.load_state_dict(td.load(path))
    msg = str(info.value)
    assert "features.conv0.weight: shape (8, 3, 3, 3) in the state_dict, (12, 3, 3, 3) in the model" in msg
    assert "nothing was loaded" in msg
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(ValueError, match="missing keys .*features.denseblock1.denselayer2.norm1.weight"):
        models.densenet_bc(16, 4).load_state_dict(td.load(path))


def test_save_accepts_path_strings_and_writes_exactly_that_name(tmp_path):
    path = str(tmp_path / "weights.ckpt")
    td.save({"a": 1}, path)
    assert os.listdir(tmp_path) == ["weights.ckpt"] and td.load(path) == {"a": 1}
