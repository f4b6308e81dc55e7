"""Importing PyTorch .pth weights without PyTorch.

The fixtures in tests/fixtures/ were written by PyTorch itself
(make_pth_fixture.py, run once); these tests need no PyTorch. Malicious
and malformed files are assembled here, opcode by opcode."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinydense as td
from tinydense import models
from tinydense import pth
from tinydense.pth import UnsafePickleError, load_pth

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = np.load(FIXTURES / "expected.npz")


def tiny_densenet():
    """The tinydense twin of the torch model in make_pth_fixture.py."""
    return models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=5)


# --- real files written by PyTorch ------------------------------------------------------

def test_tensors_with_offsets_strides_and_dtypes():
    tensors = load_pth(FIXTURES / "tensors.pth")
    assert list(tensors) == ["transposed", "rows", "columns", "shared", "int64", "int32", "uint8", "bool",
                             "half", "bfloat16", "scalar", "empty"]
    for name, array in tensors.items():
        expected = EXPECTED[f"tensors/{name}"]
        assert isinstance(array, np.ndarray) and array.dtype == expected.dtype and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)
    np.testing.assert_array_equal(tensors["transposed"], np.arange(12.0).reshape(3, 4).T)
    np.testing.assert_array_equal(tensors["columns"], np.arange(24.0).reshape(4, 6)[:, 2::3])
    assert tensors["int64"][0] == -(2 ** 40) and tensors["bfloat16"][2] == pytest.approx(1e30, rel=1e-2)
    assert tensors["scalar"].shape == () and int(tensors["scalar"]) == 7
    tensors["shared"][:] = -1                        # arrays are independent copies, not views of a file
    assert tensors["rows"].min() >= 0 and tensors["columns"].min() >= 0


def test_torch_densenet_weights_load_and_give_torch_s_outputs():
    state = load_pth(FIXTURES / "tiny_densenet.pth")
    model = tiny_densenet()
    assert list(state) == list(model.state_dict())            # torchvision's names, in its order
    for key, value in state.items():
        np.testing.assert_array_equal(value, EXPECTED[f"state/{key}"])
    assert model.load_state_dict(state) == td.nn.IncompatibleKeys([], [])
    assert int(model.features.norm5.num_batches_tracked) == 7
    model.eval()
    logits = model(td.tensor(EXPECTED["input"])).data
    np.testing.assert_allclose(logits, EXPECTED["logits"], rtol=1e-4, atol=1e-5)


def test_legacy_file_with_old_torchvision_key_names():
    """Like torchvision's published DenseNet weights: pre-1.6 format, "norm.1"-style keys,
    no num_batches_tracked (PyTorch < 0.4.1)."""
    raw = (FIXTURES / "tiny_densenet_legacy.pth").read_bytes()
    assert not raw.startswith(b"PK") and b"denselayer1.norm.1.weight" in raw
    assert b"num_batches_tracked" not in raw
    state = load_pth(FIXTURES / "tiny_densenet_legacy.pth")
    modern = load_pth(FIXTURES / "tiny_densenet.pth")
    assert list(state) == list(modern)
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert value.shape == () and value.dtype == np.int64 and value == 0
        else:
            np.testing.assert_array_equal(value, modern[key])
    model = tiny_densenet()
    model.load_state_dict(state)
    model.eval()
    np.testing.assert_allclose(model(td.tensor(EXPECTED["input"])).data, EXPECTED["logits"], rtol=1e-4, atol=1e-5)


def test_weights_for_a_different_model_are_refused_whole():
    model = models.DenseNet(growth_rate=6, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=5)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"features.denseblock1.denselayer1.conv1.weight: shape \(8, 8, 1, 1\) "
                                         r"in the state_dict, \(12, 8, 1, 1\) in the model"):
        model.load_state_dict(load_pth(FIXTURES / "tiny_densenet.pth"))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# --- hand-assembled pickles -------------------------------------------------------------------

def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    return b"V" + s.encode() + b"\n"


def op_tuple(*ints):
    return b"(" + b"".join(b"I%d\n" % i for i in ints) + b"t"


def op_tensor(key, offset, size, stride, numel, storage="FloatStorage", legacy=False):
    """_rebuild_tensor_v2(<persistent id ('storage', torch.<storage>, key, 'cpu', numel)>, offset, size, stride,
    False, None) in pickle opcodes (legacy files: the id ends with None, no view metadata)."""
    pid = (b"(" + op_str("storage") + op_global("torch", storage) + op_str(key) + op_str("cpu") + b"I%d\n" % numel
           + (b"N" if legacy else b"") + b"t")
    args = b"(" + pid + b"Q" + b"I%d\n" % offset + op_tuple(*size) + op_tuple(*stride) + b"I00\nNt"
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def op_dict(**entries):
    return b"}" + b"".join(op_str(k) + v + b"s" for k, v in entries.items())


def write_pth(path, pickle_bytes, storages=None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes)
        zf.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def test_the_assembler_makes_files_the_reader_accepts(tmp_path):
    data = np.arange(6, dtype=np.float32)
    path = write_pth(tmp_path / "ok.pth", b"\x80\x02" + op_dict(w=op_tensor("0", 1, (2, 2), (1, 2), 6)) + b".",
                     {"0": data.tobytes()})
    np.testing.assert_array_equal(load_pth(path)["w"], [[1, 3], [2, 4]])
    nested = op_dict(state_dict=op_dict(w=op_tensor("0", 0, (3,), (1,), 6)), epoch=b"I3\n")
    path = write_pth(tmp_path / "ckpt.pth", nested + b".", {"0": data.tobytes()})
    np.testing.assert_array_equal(load_pth(path)["w"], [0, 1, 2])        # {"state_dict": ...}: the inner dict


def evil_pickle(marker):
    return op_global("os", "system") + b"(" + op_str(f"touch {marker}") + b"tR."


@pytest.mark.parametrize("layout", ["zip", "raw pickle", "after a legacy header"])
def test_a_pickle_that_calls_os_system_is_refused_and_nothing_runs(tmp_path, layout):
    marker = tmp_path / "pwned"
    if layout == "zip":
        path = write_pth(tmp_path / "evil.pth", evil_pickle(marker))
    else:
        header = b""
        if layout == "after a legacy header":      # magic number, protocol, sys_info, then the payload
            header = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + b"I1001\n." + b"}."
        path = tmp_path / "evil.pth"
        path.write_bytes(header + evil_pickle(marker))
    with pytest.raises(UnsafePickleError, match=r"evil.pth: refused to load os.system: .*nothing in it was run"):
        load_pth(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("torch.storage", "_load_from_bytes"), ("builtins", "eval"),
                                          ("numpy.core.multiarray", "_reconstruct"), ("torch", "load")])
def test_every_other_global_is_refused(tmp_path, module, name):
    path = write_pth(tmp_path / "x.pth", op_global(module, name) + b"(" + op_str("x") + b"tR.")
    with pytest.raises(UnsafePickleError, match=f"refused to load {module}.{name}"):
        load_pth(path)


def test_out_of_bounds_tensors_are_refused(tmp_path):
    data = np.arange(6, dtype=np.float32).tobytes()
    past_end = write_pth(tmp_path / "a.pth", op_dict(w=op_tensor("0", 4, (2, 2), (2, 1), 6)) + b".", {"0": data})
    with pytest.raises(ValueError, match=r"tensor 'w' \(shape \(2, 2\)\) reads past the end of its storage"):
        load_pth(past_end)
    short = write_pth(tmp_path / "b.pth", op_dict(w=op_tensor("0", 0, (6,), (1,), 6)) + b".", {"0": data[:12]})
    with pytest.raises(ValueError, match="storage 0 has 12 bytes, expected 6 FloatStorage elements"):
        load_pth(short)
    missing = write_pth(tmp_path / "c.pth", op_dict(w=op_tensor("0", 0, (6,), (1,), 6)) + b".")
    with pytest.raises(ValueError, match="storage 0 is missing from the archive"):
        load_pth(missing)
    negative = write_pth(tmp_path / "d.pth", op_dict(w=op_tensor("0", 0, (2,), (1,), 6)).replace(b"I1\nt", b"I-1\nt")
                         + b".", {"0": data})
    with pytest.raises(ValueError, match="tensor 'w' has a malformed description"):
        load_pth(negative)


def test_a_529_byte_file_asking_for_terabytes_is_refused_before_anything_is_allocated(tmp_path):
    # issue 14: a stride-0 tensor of 2e12 float32 elements (7.28 TiB) over a 1-element storage;
    # load_pth used to build its index array and die in a raw MemoryError
    path = write_pth(tmp_path / "bomb.pth", op_dict(w=op_tensor("0", 0, (1000000, 2000000), (0, 0), 1)) + b".",
                     {"0": np.ones(1, np.float32).tobytes()})
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"bomb.pth .*tensor 'w' has 2000000000000 elements, more than its storage "
                                         r"holds \(shape \(1000000, 2000000\), strides \(0, 0\), offset 0; its "
                                         r"storage 0 holds 1 elements\)"):
        load_pth(path)


DATA6 = np.arange(6, dtype=np.float32).tobytes()


@pytest.mark.parametrize("offset, size, stride, message", [
    (0, (2 ** 32, 2 ** 32), (0, 0), r"has 18446744073709551616 elements, more than"),   # 0 in int64 arithmetic
    (0, (2 ** 70,), (1,), r"has 1180591620717411303424 elements, more than its storage holds"),
    (0, (7,), (1,), r"has 7 elements, more than its storage holds \(shape \(7,\), strides \(1,\)"),
    (0, (0, 2 ** 62), (1, 1), r"is empty but has a shape too large for any array \(shape \(0, 4611686018427387904\)"),
    (9, (0,), (1,), r"starts past the end of its storage \(shape \(0,\), strides \(1,\), offset 9; its "
                    r"storage 0 holds 6 elements\)"),
    (5, (2,), (1,), r"\(shape \(2,\)\) reads past the end of its storage \(strides \(1,\), offset 5: "
                    r"its last element is number 6; its storage 0 holds 6 elements\)"),
    (0, (1,) * 65, (1,) * 65, r"has 65 dimensions, more than the 64 NumPy supports"),
], ids=["numel-overflows-int64", "huge-dim", "more-than-storage", "empty-but-huge", "offset-past-end",
        "reads-past-end", "too-many-dims"])
def test_tensors_the_storage_cannot_hold_are_refused(tmp_path, offset, size, stride, message):
    path = write_pth(tmp_path / "x.pth", op_dict(w=op_tensor("0", offset, size, stride, 6)) + b".", {"0": DATA6})
    with pytest.raises(ValueError, match="x.pth is not a readable PyTorch .pth file .*tensor 'w' " + message):
        load_pth(path)


def test_the_stride_of_a_length_1_axis_may_be_anything(tmp_path):
    path = write_pth(tmp_path / "x.pth", op_dict(w=op_tensor("0", 2, (1, 3), (2 ** 70, 1), 6)) + b".", {"0": DATA6})
    np.testing.assert_array_equal(load_pth(path)["w"], [[2, 3, 4]])


def test_negative_sizes_are_refused_naming_them(tmp_path):
    pickled = op_dict(w=op_tensor("0", 0, (3, 2), (2, 1), 6)).replace(b"I3\nI2\nt", b"I-3\nI2\nt") + b"."
    path = write_pth(tmp_path / "neg.pth", pickled, {"0": DATA6})
    with pytest.raises(ValueError, match=r"tensor 'w' has a malformed description \(shape \(-3, 2\), "
                                         r"strides \(2, 1\)"):
        load_pth(path)


def test_every_tensor_is_checked_before_any_is_built(tmp_path, monkeypatch):
    from tinydense import pth
    built = []
    real = pth._materialize
    monkeypatch.setattr(pth, "_materialize", lambda *args: built.append(args) or real(*args))
    good, bad = op_tensor("0", 0, (2, 3), (3, 1), 6), op_tensor("0", 0, (10 ** 6,), (0,), 6)
    path = write_pth(tmp_path / "x.pth", op_dict(good=good, bad=bad) + b".", {"0": DATA6})
    with pytest.raises(ValueError, match="tensor 'bad' has 1000000 elements"):
        load_pth(path)
    assert built == []                       # 'good' came first, but nothing was materialised


def test_a_legacy_storage_larger_than_the_file_is_refused_before_it_is_read(tmp_path):
    header = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + b"I1001\n." + b"}."
    n = 2 ** 50                             # 4 PiB of float32 claimed, 8 bytes present
    body = op_dict(w=op_tensor("0", 0, (1,), (1,), n, legacy=True)) + b"." + b"(V0\nl."
    path = tmp_path / "legacy.pth"
    path.write_bytes(header + body + n.to_bytes(8, "little") + np.ones(2, np.float32).tobytes())
    with pytest.raises(ValueError, match=f"storage 0: {n} FloatStorage elements need {4 * n} bytes, "
                                         f"the file has 8 left"):
        load_pth(path)


def test_files_that_are_not_state_dicts(tmp_path):
    a_list = write_pth(tmp_path / "list.pth", b"].")
    with pytest.raises(ValueError, match="list.pth is not a readable PyTorch .pth file .*holds a list"):
        load_pth(a_list)
    mixed = write_pth(tmp_path / "mixed.pth", op_dict(epoch=b"I3\n") + b".")
    with pytest.raises(ValueError, match="entry 'epoch' is a int, not a tensor"):
        load_pth(mixed)


# --- damaged and foreign files ------------------------------------------------------------------

def test_truncated_and_corrupt_pth_files(tmp_path):
    for name in ("tiny_densenet.pth", "tiny_densenet_legacy.pth"):
        data = (FIXTURES / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[:len(data) * 2 // 3])
        with pytest.raises(ValueError, match=f"cut_{name} is not a readable PyTorch .pth file"):
            load_pth(cut)
    data = bytearray((FIXTURES / "tiny_densenet.pth").read_bytes())
    with zipfile.ZipFile(FIXTURES / "tiny_densenet.pth") as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/3"))
    name_len, extra_len = np.frombuffer(bytes(data[info.header_offset + 26:info.header_offset + 30]), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len) + 8      # inside the stored numbers
    data[start:start + 4] = bytes(255 - b for b in data[start:start + 4])
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.pth is not a readable PyTorch .pth file .*CRC"):
        load_pth(corrupt)


def test_foreign_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .pth file at .*nothing.pth"):
        load_pth(tmp_path / "nothing.pth")
    text = tmp_path / "readme.pth"
    text.write_text("these are not weights")
    with pytest.raises(ValueError, match="readme.pth is not a readable PyTorch .pth file"):
        load_pth(text)
    ckpt = tmp_path / "ours.npz"
    td.save({"w": np.ones(2)}, ckpt)
    with pytest.raises(ValueError, match="without the one data.pkl a PyTorch file has"):
        load_pth(ckpt)


def test_load_pth_is_exported():
    assert td.load_pth is load_pth


def test_a_zip_bomb_is_inflated_only_as_far_as_its_tensors_read(tmp_path, monkeypatch):
    # issue 18: a 2 MB archive inflated to 4.25 GB; every member is now bounded before it is read
    import tracemalloc
    numel = 10_000_000                                       # 40 MB of zeros, deflated to ~40 KB
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", op_dict(w=op_tensor("0", 1, (2,), (1,), numel)) + b".")
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", bytes(numel * 4))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        state = load_pth(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(state["w"], [0, 0])
    assert peak < 2_000_000, f"{peak} bytes allocated for a tensor of 2 elements"

    with zipfile.ZipFile(path := tmp_path / "pickle_bomb.pth", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", op_dict(w=op_tensor("0", 0, (1,), (1,), 1)) + b"." + bytes(5000))
        zf.writestr("archive/data/0", bytes(4))
    monkeypatch.setattr(pth, "PICKLE_LIMIT", 4096)
    with pytest.raises(ValueError, match=r"pickle_bomb.pth .*archive/data.pkl declares 5\d\d\d bytes uncompressed, "
                                         r"more than the 4096 it may have \(a zip bomb\?\)"):
        load_pth(path)
