"""tinydense.utils.data (PyTorch's per-sample datasets and DataLoader) and tinydense.vision
(torchvision's CIFAR10 and transforms)."""
import numpy as np
import pytest

import tinydense as td
from tinydense import Tensor
from tinydense.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate, random_split
from tinydense.vision import datasets, transforms


def test_tensor_dataset_and_loader_batches_in_order():
    x, y = td.arange(20).reshape(10, 2).float(), td.arange(10)
    ds = TensorDataset(x, y)
    assert len(ds) == 10 and ds[3][0].tolist() == [6.0, 7.0] and ds[3][1].item() == 3
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(loader) == 3 and [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].shape == (4, 2) and batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    dropped = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(b[1]) for b in dropped] == [4, 4]
    with pytest.raises(ValueError, match="first dimensions differ"):
        TensorDataset(x, td.arange(3))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(ds, batch_size=0)


def test_shuffle_is_a_permutation_that_repeats_after_manual_seed():
    ds = TensorDataset(td.arange(50))
    td.manual_seed(7)
    first = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=8, shuffle=True)])
    td.manual_seed(7)
    again = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=8, shuffle=True)])
    np.testing.assert_array_equal(first, again)
    assert sorted(first.tolist()) == list(range(50)) and first.tolist() != list(range(50))
    own = np.random.default_rng(0)
    order = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=50, shuffle=True, generator=own)])
    np.testing.assert_array_equal(order, np.random.default_rng(0).permutation(50))


class Pairs(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"x": np.full(2, i, np.float32), "n": i, "w": 0.5 * i, "name": f"s{i}"}


def test_default_collate_keeps_structure_and_pytorchs_dtypes():
    batch = default_collate([Pairs()[i] for i in range(3)])
    assert batch["x"].shape == (3, 2) and batch["n"].dtype == np.int64 and batch["w"].dtype == np.float64
    assert batch["name"] == ["s0", "s1", "s2"]
    assert next(iter(DataLoader(Pairs(), batch_size=2, collate_fn=len))) == 2
    assert next(iter(DataLoader(Pairs(), batch_size=None)))["n"] == 0
    with pytest.raises(TypeError, match="cannot batch samples of type object"):
        default_collate([object()])


def test_random_split_and_subset():
    ds = TensorDataset(td.arange(10))
    td.manual_seed(1)
    a, b = random_split(ds, [7, 3])
    seen = sorted(int(a[i][0].item()) for i in range(7)) + sorted(int(b[i][0].item()) for i in range(3))
    assert len(a) == 7 and len(b) == 3 and sorted(seen) == list(range(10))
    parts = random_split(ds, [0.5, 0.3, 0.2])
    assert [len(p) for p in parts] == [5, 3, 2]
    assert [len(p) for p in random_split(TensorDataset(td.arange(7)), [0.5, 0.5])] == [4, 3]   # remainder first
    assert Subset(ds, [9, 0])[0][0].item() == 9
    with pytest.raises(ValueError, match="summing to the dataset's length 10"):
        random_split(ds, [5, 6])


def test_cifar10_samples_are_hwc_uint8_images_and_int_labels(cifar_dir):
    test = datasets.CIFAR10(root=cifar_dir, train=False, download=False)
    image, label = test[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and isinstance(label, int)
    assert test.data.shape == (len(test), 32, 32, 3) and len(test.targets) == len(test) and len(test.classes) == 10
    from tinydense.data import load_cifar
    raw = load_cifar("cifar10", cifar_dir, train=False)
    np.testing.assert_array_equal(image, raw.images[0].transpose(1, 2, 0))
    assert label == int(raw.labels[0])
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    x, _ = datasets.CIFAR10(cifar_dir, train=False, transform=pipeline, target_transform=str)[0]
    np.testing.assert_allclose(x.numpy(), (raw.images[0] / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    loader = DataLoader(datasets.CIFAR10(cifar_dir, train=False, transform=transforms.ToTensor()), batch_size=16)
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int64


def test_random_crop_is_a_window_of_the_zero_padded_image():
    image = np.random.default_rng(0).integers(1, 256, size=(6, 5, 3), dtype=np.uint8)
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)])
    crop = transforms.RandomCrop((6, 5), padding=2)
    td.manual_seed(0)
    windows = set()
    for _ in range(40):
        out = crop(image)
        hits = [(i, j) for i in range(5) for j in range(5) if np.array_equal(padded[i:i + 6, j:j + 5], out)]
        assert out.shape == (6, 5, 3) and len(hits) == 1
        windows.add(hits[0])
    assert len(windows) > 10                             # the offset varies
    tensor_crop = crop(transforms.ToTensor()(image))     # after ToTensor: (C, H, W)
    assert isinstance(tensor_crop, Tensor) and tensor_crop.shape == (3, 6, 5)
    with pytest.raises(ValueError, match="larger than the \\(padded\\) image"):
        transforms.RandomCrop(40)(image)


def test_horizontal_flip_and_to_tensor():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(transforms.RandomHorizontalFlip(p=1.0)(image), image[:, ::-1])
    assert transforms.RandomHorizontalFlip(p=0.0)(image) is image
    t = transforms.ToTensor()(image)
    assert t.shape == (3, 2, 3) and t.dtype == np.float32
    np.testing.assert_allclose(t.numpy(), image.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    flipped = transforms.RandomHorizontalFlip(p=1.0)(t)
    np.testing.assert_array_equal(flipped.numpy(), t.numpy()[:, :, ::-1])
    with pytest.raises(TypeError, match="put ToTensor\\(\\) before it"):
        transforms.Normalize((0.5,), (0.5,))(image)


def test_vision_models_is_the_zoo():
    import tinydense.models as zoo
    from tinydense.vision import models
    assert models.densenet121 is zoo.densenet121 and models.resnet18 is zoo.resnet18
