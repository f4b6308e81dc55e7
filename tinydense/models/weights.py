"""Pretrained weights, the way torchvision gives them:

    model = tinydense.models.densenet121(weights="IMAGENET1K_V1")

downloads torchvision's published file (``densenet121-a639ec97.pth``) once into
the cache folder, checks it, and loads it through the restricted ``.pth``
reader (pth.py: nothing in the file can run). The steps:

1. the cache: ``$TINYDENSE_HOME/hub`` (default ``~/.cache/tinydense/hub``). A file
   already there is used without any network.
2. otherwise stream it from ``download.pytorch.org/models/`` (or the mirror
   ``$TINYDENSE_WEIGHTS_URL``) into a hidden ``.part`` file beside the target,
   hashing it on the way (SHA-256), and refuse it if it stopped early;
3. check the hash: torchvision writes the first hex digits of each file's SHA-256
   into its name (``a639ec97``), and ``torch.hub`` checks exactly those; so do we,
   for a download and for a file found in the cache;
4. move it into place with one ``os.replace``; on any failure the ``.part`` file
   is removed, so a later run never finds a half-written file.

Without network the error is one line: what to download and where to put it.
``weights=PATH`` loads a file you have (a ``.pth`` state_dict, or a tinydense
``.npz`` of a state_dict or of a training run) into a model of the given size
(e.g. ``num_classes=10`` for your fine-tuned CIFAR model); a name, like
``"IMAGENET1K_V1"``, is one of torchvision's and needs the 1000 ImageNet classes.

Fine-tuning, e.g. on CIFAR-10: load, then replace the classifier and freeze
the rest; SGD skips a parameter without a gradient, and backward gives none to a
tensor with ``requires_grad=False``:

    model = tinydense.models.resnet18(weights="IMAGENET1K_V1")
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc = tinydense.nn.Linear(512, 10)       # new, trainable
    optimizer = tinydense.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
from http.client import HTTPException
from pathlib import Path

from ..checkpoint import load as load_npz
from ..data.download import DownloadError, _fetch
from ..nn import init
from ..pth import load_pth

BASE_URL = "https://download.pytorch.org/models/"
IMAGENET_CLASSES = 1000

# torchvision's published weights, from the <Model>_Weights enums in torchvision/models/*.py:
# model -> {weights name: (file name, size in MB)}. "DEFAULT" is torchvision's DEFAULT (the
# newer recipe's IMAGENET1K_V2 where there is one).
TORCHVISION = {
    "alexnet": {"IMAGENET1K_V1": ("alexnet-owt-7be5be79.pth", 233.1)},
    "vgg11": {"IMAGENET1K_V1": ("vgg11-8a719046.pth", 506.8)},
    "vgg11_bn": {"IMAGENET1K_V1": ("vgg11_bn-6002323d.pth", 506.9)},
    "vgg13": {"IMAGENET1K_V1": ("vgg13-19584684.pth", 507.5)},
    "vgg13_bn": {"IMAGENET1K_V1": ("vgg13_bn-abd245e5.pth", 507.6)},
    "vgg16": {"IMAGENET1K_V1": ("vgg16-397923af.pth", 527.8)},
    "vgg16_bn": {"IMAGENET1K_V1": ("vgg16_bn-6c64b313.pth", 527.9)},
    "vgg19": {"IMAGENET1K_V1": ("vgg19-dcbb9e9d.pth", 548.1)},
    "vgg19_bn": {"IMAGENET1K_V1": ("vgg19_bn-c79401a0.pth", 548.1)},
    "googlenet": {"IMAGENET1K_V1": ("googlenet-1378be20.pth", 49.7)},
    "resnet18": {"IMAGENET1K_V1": ("resnet18-f37072fd.pth", 44.7)},
    "resnet34": {"IMAGENET1K_V1": ("resnet34-b627a593.pth", 83.3)},
    "resnet50": {"IMAGENET1K_V1": ("resnet50-0676ba61.pth", 97.8), "IMAGENET1K_V2": ("resnet50-11ad3fa6.pth", 97.8)},
    "resnet101": {"IMAGENET1K_V1": ("resnet101-63fe2227.pth", 170.5),
                  "IMAGENET1K_V2": ("resnet101-cd907fc2.pth", 170.5)},
    "resnet152": {"IMAGENET1K_V1": ("resnet152-394f9c45.pth", 230.4),
                  "IMAGENET1K_V2": ("resnet152-f82ba261.pth", 230.5)},
    "resnext50_32x4d": {"IMAGENET1K_V1": ("resnext50_32x4d-7cdf4587.pth", 95.8),
                        "IMAGENET1K_V2": ("resnext50_32x4d-1a0047aa.pth", 95.8)},
    "resnext101_32x8d": {"IMAGENET1K_V1": ("resnext101_32x8d-8ba56ff5.pth", 339.6),
                         "IMAGENET1K_V2": ("resnext101_32x8d-110c445d.pth", 339.7)},
    "resnext101_64x4d": {"IMAGENET1K_V1": ("resnext101_64x4d-173b62eb.pth", 319.3)},
    "wide_resnet50_2": {"IMAGENET1K_V1": ("wide_resnet50_2-95faca4d.pth", 131.8),
                        "IMAGENET1K_V2": ("wide_resnet50_2-9ba9bcbe.pth", 263.1)},
    "wide_resnet101_2": {"IMAGENET1K_V1": ("wide_resnet101_2-32ee1156.pth", 242.9),
                         "IMAGENET1K_V2": ("wide_resnet101_2-d733dc28.pth", 484.7)},
    "densenet121": {"IMAGENET1K_V1": ("densenet121-a639ec97.pth", 30.8)},
    "densenet161": {"IMAGENET1K_V1": ("densenet161-8d451a50.pth", 110.4)},
    "densenet169": {"IMAGENET1K_V1": ("densenet169-b2777c0a.pth", 54.7)},
    "densenet201": {"IMAGENET1K_V1": ("densenet201-c1103571.pth", 77.4)},
}


def hub_dir() -> Path:
    """Where downloaded weights are kept: ``$TINYDENSE_HOME/hub``, default ``~/.cache/tinydense/hub``."""
    home = os.environ.get("TINYDENSE_HOME") or Path.home() / ".cache" / "tinydense"
    return Path(home) / "hub"


def hash_prefix(file_name) -> str:
    """The SHA-256 prefix a torchvision file name carries: ``densenet121-a639ec97.pth`` -> ``a639ec97``."""
    match = re.search(r"-([0-9a-f]{6,})\.", file_name)
    if not match:
        raise ValueError(f"{file_name!r} carries no hash prefix (name-<hex digits>.pth)")
    return match.group(1)


def _choices(model) -> list:
    """The weights names torchvision publishes for ``model`` (none: [])."""
    return list(TORCHVISION[model]) + ["DEFAULT"] if model in TORCHVISION else []


def _file_name(model, weights):
    """(file name, MB) of torchvision's ``weights`` for ``model``; ValueError naming the choices."""
    if weights not in _choices(model):
        raise ValueError(f"{model}: unknown weights {weights!r}; torchvision publishes "
                         f"{', '.join(_choices(model)) or 'none for it'} (or pass the path of a weights file you have)")
    published = TORCHVISION[model]
    if weights == "DEFAULT":
        weights = "IMAGENET1K_V2" if "IMAGENET1K_V2" in published else "IMAGENET1K_V1"
    return published[weights]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_url(url):
    """https (or file://) only; plain http only to this machine (a local mirror, the tests)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("https", "file") or (parsed.scheme == "http"
                                             and parsed.hostname in ("127.0.0.1", "localhost", "::1")):
        return
    raise ValueError(f"refusing to download weights over {parsed.scheme or 'no scheme'!r}: use an https:// URL, "
                     f"got {url!r}")


def download_weights(model, weights="IMAGENET1K_V1", progress=True) -> Path:
    """The path of torchvision's ``weights`` file for ``model`` in the cache (:func:`hub_dir`),
    downloaded and checked first if it is not there yet. DownloadError (one line: what to fetch,
    and where to put it) without network or for a file whose hash is wrong."""
    file_name, megabytes = _file_name(model, weights)
    url = urllib.parse.urljoin(os.environ.get("TINYDENSE_WEIGHTS_URL") or BASE_URL, file_name)
    _check_url(url)
    folder = hub_dir()
    target, prefix = folder / file_name, hash_prefix(file_name)
    by_hand = f"download {url} ({megabytes:g} MB) by hand and save it as {target}"
    if target.is_file():
        digest = _sha256(target)
        if not digest.startswith(prefix):
            raise DownloadError(f"{target} is damaged: its SHA-256 starts {digest[:len(prefix)]}, not {prefix}; "
                                f"delete it and try again, or {by_hand}")
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".part")
    except OSError as e:
        raise DownloadError(f"cannot write to the weights cache {folder} ({e}): set $TINYDENSE_HOME to a folder "
                            f"you can write, or {by_hand}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            digest = _fetch(url, f, progress, file_name, "sha256")
        if not digest.startswith(prefix):
            raise DownloadError(f"hash mismatch for {url}: SHA-256 {digest[:16]}..., the file name says {prefix} "
                                f"(a corrupt or tampered download)")
        os.replace(part, target)
        return target
    except DownloadError as e:
        raise DownloadError(f"could not download {model} weights {weights}: {e}; {by_hand}") from None
    except (urllib.error.URLError, OSError, HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {model} weights {weights} ({type(e).__name__}: {reason}); "
                            f"{by_hand}") from e
    finally:
        if os.path.exists(part):
            os.unlink(part)


def read_weights(path) -> dict:
    """A state_dict from a file: a PyTorch ``.pth`` (through the restricted reader), or a
    tinydense ``.npz`` holding a state_dict or a training run (its ``model`` entry)."""
    path = Path(path)
    if path.suffix == ".npz":
        state = load_npz(path)
        return state["model"] if isinstance(state.get("model"), dict) else state
    return load_pth(path)


def _state_for(name, weights, kwargs, args, progress):
    """The state_dict ``weights`` names for the model ``name`` (see :func:`with_weights`)."""
    if isinstance(weights, str) and weights in _choices(name):
        classes = kwargs.get("num_classes", args[0] if args else IMAGENET_CLASSES)
        if classes != IMAGENET_CLASSES:
            raise ValueError(f"{name}: torchvision's {weights} weights are for the {IMAGENET_CLASSES} ImageNet "
                             f"classes, not num_classes={classes}; load them, then replace the classifier "
                             f"(fine-tuning: models/weights.py)")
        return read_weights(download_weights(name, weights, progress))
    if isinstance(weights, (str, os.PathLike)) and Path(weights).is_file():
        return read_weights(weights)
    if isinstance(weights, str) and not re.search(r"[./\\]", weights):        # a name, not a path
        _file_name(name, weights)                  # raises: unknown weights, naming the published ones
    raise ValueError(f"{name}: weights must be None, a name torchvision publishes "
                     f"({', '.join(_choices(name)) or 'none for it'}) or the path of a weights file; "
                     f"there is no file {weights!r}")


def with_weights(builder):
    """``builder`` (e.g. ``densenet121``) with torchvision's ``weights=`` and ``progress=``
    arguments: ``weights`` None (random initialisation, as before), a name torchvision
    publishes (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``, ``"DEFAULT"``) or the path of a
    weights file. The file is fetched and read before the model is built (without random
    draws: every weight is then overwritten), and loaded strictly: every name must match."""
    name = builder.__name__

    @functools.wraps(builder)
    def build(*args, weights=None, progress=True, **kwargs):
        if weights is None:
            return builder(*args, **kwargs)
        state = _state_for(name, weights, kwargs, args, progress)
        aux = None
        if name == "googlenet":          # torchvision's file holds the auxiliary heads, and its weights
            kwargs.setdefault("transform_input", True)      # expect its input transform (as torchvision)
            aux = kwargs.pop("aux_logits", False)
            kwargs["aux_logits"] = aux or "aux1.fc2.weight" in state
        with init.skip_init():
            model = builder(*args, **kwargs)
        model.load_state_dict(state)
        if aux is False and model.aux_logits:                # drop the heads, as torchvision does
            model.aux_logits, model.aux1, model.aux2 = False, None, None
        return model

    build.__doc__ = (build.__doc__ or "") + (
        "\n\n    weights: None, torchvision's " + " / ".join(_choices(name)) + " (downloaded once, checked, "
        "models/weights.py), or the path of a weights file; progress: show the download's progress bar.")
    return build
