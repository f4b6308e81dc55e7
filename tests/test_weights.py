"""Pretrained weights the torchvision way (models/weights.py), against an HTTP server
this test runs on 127.0.0.1: the download, its hash check, an interrupted download,
the cache reused without network, the one-line error without network, weights=PATH,
and fine-tuning with the rest of the model frozen."""
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import tinydense as td
from tinydense import models
from tinydense.data import DownloadError
from tinydense.models import weights as W
from tinydense.nn import init
from test_pth import op_dict, op_tensor, write_pth
from test_zoo import NARROW_GOOGLENET

FIXTURES = Path(__file__).parent / "fixtures"
NARROW_PTH = (FIXTURES / "narrow_resnet.pth").read_bytes()      # written by PyTorch (make_zoo_fixture.py)
NARROW_SHA = hashlib.sha256(NARROW_PTH).hexdigest()


def narrow_resnet(num_classes=10):
    """The torchvision ResNet that narrow_resnet.pth holds."""
    return models.ResNet("basic", [1, 1, 1, 1], num_classes=num_classes, widths=(4, 8, 16, 32))


class Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1; ``truncate``: announce the whole
    length, send half, and close (an interrupted download). ``requests`` counts the GETs."""

    def __init__(self, files, truncate=False):
        self.files, self.truncate, self.requests = files, truncate, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2] if outer.truncate else data)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty cache under tmp_path, and "narrow" published as narrow_resnet.pth under its real hash."""
    monkeypatch.setenv("TINYDENSE_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(W.TORCHVISION, "narrow_resnet",
                        {"IMAGENET1K_V1": (f"narrow_resnet-{NARROW_SHA[:8]}.pth", 0.1),
                         "IMAGENET1K_V2": ("narrow_resnet-00000000.pth", 0.1)})        # a wrong hash
    return tmp_path / "home" / "hub"


def closed_port_url():
    """A loopback URL nothing listens on: every request is refused (no network)."""
    with Server({}) as s:
        url = s.url
    return url


def test_download_is_checked_cached_and_reused_without_network(hub, monkeypatch):
    name = f"narrow_resnet-{NARROW_SHA[:8]}.pth"
    with Server({f"/{name}": NARROW_PTH}) as server:
        monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", server.url)
        path = W.download_weights("narrow_resnet", "IMAGENET1K_V1", progress=False)
        assert server.requests == 1
    assert path == hub / name and path.read_bytes() == NARROW_PTH
    assert sorted(p.name for p in hub.iterdir()) == [name]                # no .part file left
    monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", closed_port_url())
    assert W.download_weights("narrow_resnet", "IMAGENET1K_V1", progress=False) == path   # no network needed


def test_a_named_download_loads_into_the_model(hub, monkeypatch):
    """with_weights as the zoo's builders use it: the file's arrays end up in the model."""
    name = f"narrow_resnet-{NARROW_SHA[:8]}.pth"
    monkeypatch.setattr(W, "IMAGENET_CLASSES", 10)           # the fixture's classifier has 10 classes
    with Server({f"/{name}": NARROW_PTH}) as server:
        monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", server.url)
        model = W.with_weights(narrow_resnet)(weights="IMAGENET1K_V1", progress=False)
    expected = td.load_pth(FIXTURES / "narrow_resnet.pth")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[key])


def test_hash_mismatch_is_refused_and_leaves_nothing(hub, monkeypatch):
    with Server({"/narrow_resnet-00000000.pth": NARROW_PTH}) as server:
        monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", server.url)
        with pytest.raises(DownloadError, match=f"hash mismatch .*SHA-256 {NARROW_SHA[:16]}.*says 00000000"):
            W.download_weights("narrow_resnet", "IMAGENET1K_V2", progress=False)
    assert list(hub.iterdir()) == []


def test_interrupted_download_is_refused_and_leaves_nothing(hub, monkeypatch):
    name = f"narrow_resnet-{NARROW_SHA[:8]}.pth"
    with Server({f"/{name}": NARROW_PTH}, truncate=True) as server:
        monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", server.url)
        with pytest.raises(DownloadError, match=f"stopped after {len(NARROW_PTH) // 2} of {len(NARROW_PTH)} bytes"):
            W.download_weights("narrow_resnet", "IMAGENET1K_V1", progress=False)
    assert list(hub.iterdir()) == []


def test_without_network_one_line_says_what_to_download_and_where(hub, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", url)
    with pytest.raises(DownloadError) as error:
        models.densenet121(weights="IMAGENET1K_V1", progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert f"download {url}densenet121-a639ec97.pth (30.8 MB) by hand and save it as " \
           f"{hub / 'densenet121-a639ec97.pth'}" in message


def test_a_damaged_cached_file_is_refused_and_kept(hub):
    hub.mkdir(parents=True)
    target = hub / f"narrow_resnet-{NARROW_SHA[:8]}.pth"
    target.write_bytes(NARROW_PTH[:-1])
    with pytest.raises(DownloadError, match="is damaged: its SHA-256 starts .*delete it and try again"):
        W.download_weights("narrow_resnet", "IMAGENET1K_V1", progress=False)
    assert target.read_bytes() == NARROW_PTH[:-1]                       # nothing a user saved is lost


def test_plain_http_only_to_this_machine(hub, monkeypatch):
    monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", "http://example.com/models/")
    with pytest.raises(ValueError, match="refusing to download weights over 'http'"):
        W.download_weights("narrow_resnet", "IMAGENET1K_V1", progress=False)


# --- the zoo's builders ------------------------------------------------------------------------

def state_dict_pth(path, state):
    """``state`` (name -> array) as a PyTorch zip .pth, assembled by hand (test_pth.py)."""
    storages, entries = {}, {}
    kinds = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
    for i, (key, value) in enumerate(state.items()):
        value = np.array(value, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
        strides = tuple(s // value.itemsize for s in value.strides)
        entries[key] = op_tensor(str(i), 0, value.shape, strides, value.size, storage=kinds[value.dtype])
        storages[str(i)] = value.tobytes()
    return write_pth(path, b"\x80\x02" + op_dict(**entries) + b".", storages)


def test_densenet121_imagenet1k_v1_end_to_end(hub, monkeypatch, tmp_path):
    """models.densenet121(weights="IMAGENET1K_V1"): downloaded from the loopback server under
    the name that carries its hash, every array loaded; then again from the cache alone."""
    td.manual_seed(3)
    original = models.densenet121().state_dict()
    data = state_dict_pth(tmp_path / "w.pth", original).read_bytes()
    name = f"densenet121-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setitem(W.TORCHVISION, "densenet121", {"IMAGENET1K_V1": (name, 30.8)})
    with Server({f"/{name}": data}) as server:
        monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", server.url)
        model = models.densenet121(weights="IMAGENET1K_V1", progress=False)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, original[key])
    monkeypatch.setenv("TINYDENSE_WEIGHTS_URL", closed_port_url())
    again = models.densenet121(weights="DEFAULT", progress=False)
    np.testing.assert_array_equal(again.classifier.weight.numpy(), original["classifier.weight"])


def test_bad_weights_arguments():
    with pytest.raises(ValueError, match="resnet50: unknown weights 'IMAGENET1K_V3'; torchvision publishes "
                                         "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        models.resnet50(weights="IMAGENET1K_V3")
    with pytest.raises(ValueError, match="for the 1000 ImageNet classes, not num_classes=10; load them, then "
                                         "replace the classifier"):
        models.resnet18(num_classes=10, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="there is no file 'missing/w.pth'"):
        models.resnet18(weights="missing/w.pth")


def test_every_published_file():
    """Every model whose accuracy compare.py cites from torchvision's weights has weights here;
    each names a zoo builder that takes weights=, and a file whose name carries 8 hex digits
    of its SHA-256 (torchvision's naming, which torch.hub checks)."""
    from tinydense.tools.compare import ACCURACY, TORCHVISION
    assert set(W.TORCHVISION) == {n for n, a in ACCURACY.items() if a.source == TORCHVISION}
    assert len(W.TORCHVISION) == 24
    for model, published in W.TORCHVISION.items():
        assert getattr(models, model).__wrapped__.__name__ == model
        for weights, (file_name, megabytes) in published.items():
            assert weights in ("IMAGENET1K_V1", "IMAGENET1K_V2") and 20 < megabytes < 600
            assert len(W.hash_prefix(file_name)) == 8 and file_name.split("-")[0] == model


def test_weights_path_a_pth_or_npz_and_fine_tuning(tmp_path):
    """weights=PATH: a .pth or a tinydense .npz, for a model of any size. Then fine-tuning:
    a new 3-class classifier, everything else frozen: SGD (with momentum and weight decay)
    changes the classifier only."""
    build = W.with_weights(narrow_resnet)
    model = build(weights=FIXTURES / "narrow_resnet.pth")
    expected = td.load_pth(FIXTURES / "narrow_resnet.pth")
    np.testing.assert_array_equal(model.layer3[0].conv1.weight.numpy(), expected["layer3.0.conv1.weight"])
    td.save(model.state_dict(), tmp_path / "w.npz")
    np.testing.assert_array_equal(build(weights=str(tmp_path / "w.npz")).fc.bias.numpy(), expected["fc.bias"])

    for p in model.parameters():
        p.requires_grad_(False)
    td.manual_seed(0)
    model.fc = td.nn.Linear(32, 3)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == [model.fc.weight, model.fc.bias]
    before = {k: v.copy() for k, v in model.state_dict().items()}
    optimizer = td.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)   # all of them
    x = td.tensor(np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    for _ in range(2):
        loss = td.functional.cross_entropy(model(x), np.array([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in after if not np.array_equal(after[k], before[k])}
    assert {"fc.weight", "fc.bias"} <= changed
    assert not any(k.endswith(("weight", "bias")) for k in changed - {"fc.weight", "fc.bias"})  # only BN statistics


def test_googlenet_file_with_aux_heads_loads_without_them(tmp_path):
    """torchvision's GoogLeNet file holds the auxiliary classifiers; as torchvision does, the
    model is built with them for loading, then they are dropped unless aux_logits=True, and
    the input transform is on."""
    def googlenet(**kwargs):
        return models.GoogLeNet(config=NARROW_GOOGLENET, stem=(4, 4, 6), aux_widths=(3, 5), **kwargs)
    with init.skip_init():
        source = googlenet(aux_logits=True)
    td.save(source.state_dict(), tmp_path / "g.npz")
    build = W.with_weights(googlenet)
    plain = build(weights=tmp_path / "g.npz")
    assert not plain.aux_logits and plain.transform_input and not any(k.startswith("aux") for k in plain.state_dict())
    assert build(weights=tmp_path / "g.npz", aux_logits=True).aux1 is not None
