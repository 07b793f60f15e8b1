"""Loading weights: safetensors, torchvision .pth (never unpickled), new heads, adapted stems.

Nothing here downloads: a torchvision weights name is tried with an empty TORCH_HOME
(offline it must fail with one sentence), and its cache path is exercised with a file
written into that empty TORCH_HOME.
"""

from __future__ import annotations

import pathlib
import re
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cnnkit.errors import CnnkitError
from cnnkit.models import create, load_weights, read_state_dict


def _seeded(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create(name, **kw)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.startswith(skip):
            assert torch.equal(sa[k], sb[k]), k


# --- files that load --------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    src = _seeded("lenet5", seed=1).eval()
    path = _save(src.state_dict(), tmp_path / "lenet5.safetensors")
    got = create("lenet5", weights=str(path)).eval()
    _assert_same_state(src, got)
    fresh = _seeded("lenet5", seed=2)
    assert not torch.equal(fresh.features[0].weight, got.features[0].weight)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(src(x), got(x))
    sd = read_state_dict(path)
    assert sd.keys() == src.state_dict().keys()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model_state_dict"])
def test_torchvision_style_pth_loads(tmp_path, wrap):
    src = _seeded("lenet5", seed=3).eval()
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / "lenet5.pth"
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3}, path)
    got = create("lenet5", weights=str(path)).eval()
    _assert_same_state(src, got)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(src(x), got(x))


def test_yaml_network_loads_weights(tmp_path):
    yaml_path = Path(__file__).resolve().parents[2] / "examples" / "models" / "lenet5.yaml"
    torch.manual_seed(4)
    src = create(str(yaml_path))
    path = _save(src.state_dict(), tmp_path / "net.pth")
    got = create(str(yaml_path), weights=str(path))
    _assert_same_state(src, got)


class _Payload:
    """Unpickling this object would call ``Path.touch(sentinel)``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def test_pickle_payload_is_never_run(tmp_path):
    # control: the payload is live (an unsafe load really would create the file)
    control = tmp_path / "control-ran"
    torch.save({"fc.weight": _Payload(control)}, tmp_path / "control.pth")
    torch.load(tmp_path / "control.pth", weights_only=False)
    assert control.exists()

    sentinel = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": _Payload(sentinel)}, path)
    with pytest.raises(CnnkitError) as info:
        create("lenet5", weights=str(path))
    assert "evil.pth" in str(info.value)
    with pytest.raises(CnnkitError):
        read_state_dict(path)
    assert not sentinel.exists()


def test_pth_without_tensors_is_refused(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CnnkitError, match="state dict"):
        read_state_dict(path)


# --- transfer: new head, adapted stem ---------------------------------------------------------


@pytest.fixture(params=["safetensors", "pth"])
def resnet18_file(request, tmp_path):
    """A resnet18 (1000 classes, 3 channels) saved in each supported format."""
    model = _seeded("resnet18", seed=5, num_classes=1000).eval()
    path = _save(model.state_dict(), tmp_path / f"resnet18.{request.param}")
    return model, path


def test_weights_for_other_num_classes_keep_a_new_head(resnet18_file):
    src, path = resnet18_file
    got = create("resnet18", num_classes=7, weights=str(path))
    assert got.fc.out_features == 7
    assert got.fc.in_features == 512
    _assert_same_state(src, got, skip=("fc.",))
    assert got.fc.weight.shape == (7, 512)
    with torch.no_grad():
        assert got.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    # load_weights reports the keys it left at their initial values
    skipped = load_weights(create("resnet18", num_classes=7), str(path))
    assert sorted(skipped) == ["fc.bias", "fc.weight"]


def test_three_channel_stem_into_one_channel(resnet18_file):
    src, path = resnet18_file
    got = create("resnet18", in_channels=1, weights=str(path)).eval()
    assert got.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(got.conv1.weight, src.conv1.weight.sum(dim=1, keepdim=True))
    _assert_same_state(src, got, skip=("conv1.",))
    # a grey image through the adapted net == the same grey image as RGB through the original
    g = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(got(g), src(g.repeat(1, 3, 1, 1)), atol=1e-4)


@pytest.mark.parametrize("other", ["resnet34", "mobilenet_v2"])
def test_weights_for_another_architecture(resnet18_file, other):
    _, path = resnet18_file
    with pytest.raises(CnnkitError, match="another architecture"):
        create(other, weights=str(path))


# --- files that do not load -------------------------------------------------------------------


def test_truncated_safetensors(tmp_path):
    full = _save(_seeded("lenet5").state_dict(), tmp_path / "full.safetensors")
    data = full.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnkitError) as info:
        create("lenet5", weights=str(cut))
    assert str(cut) in str(info.value)


@pytest.mark.parametrize("name", ["missing.safetensors", "missing.pth"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(CnnkitError, match=re.escape(name)):
        create("lenet5", weights=str(path))
    with pytest.raises(CnnkitError):
        read_state_dict(path)


def test_unknown_format(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CnnkitError, match=re.escape("weights.npz")):
        create("lenet5", weights=str(path))


# --- torchvision weights names (offline) ------------------------------------------------------


def test_weights_name_offline_fails_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert Path(torch.hub.get_dir()).is_relative_to(tmp_path)
    with pytest.raises(CnnkitError) as info:
        create("resnet18", weights="IMAGENET1K_V1")
    msg = str(info.value)
    assert "download" in msg
    assert "\n" not in msg


def test_weights_name_reads_the_hub_cache(tmp_path, monkeypatch):
    """A file already in torch.hub's checkpoint folder is used without any download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    cache.parent.mkdir(parents=True)
    src = _seeded("resnet18", seed=6)
    _save(src.state_dict(), cache)
    got = create("resnet18", weights="IMAGENET1K_V1")
    _assert_same_state(src, got)


def test_unknown_weights_name_suggests():
    with pytest.raises(CnnkitError) as info:
        create("resnet18", weights="IMAGENET9K")
    msg = str(info.value)
    assert "'IMAGENET9K'" in msg
    assert "did you mean" in msg
    assert "IMAGENET1K_V1" in msg


def test_weights_name_for_a_model_without_torchvision_weights():
    with pytest.raises(CnnkitError, match="mobilenet_v1"):
        create("mobilenet_v1", weights="IMAGENET1K_V1")


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_weights_load_into_models_without_convolutions(tmp_path, name):
    """The fully connected models have no stem conv: loading must not look for one."""
    torch.manual_seed(0)
    src = create(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(src.state_dict(), str(path))
    loaded = create(name, weights=str(path))
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
