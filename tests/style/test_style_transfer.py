"""Style transfer end to end: the feature network against torchvision, the optimisation
on scikit-learn's bundled photos, colour preservation, and the command line."""

from __future__ import annotations

import itertools

import pytest
import torch

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.style.features import IMAGENET_MEAN, IMAGENET_STD, build_features
from cnnkit.style.transfer import _to_yiq, load_image, transfer

# torchvision's VGG-19 features: the ReLU after each convolution, and the max-pools
VGG19 = {"block1_conv1": 1, "block2_conv2": 8, "block3_conv4": 17, "block4_pool": 27}
VGG19["block5_conv4"] = 35


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    """torchvision's randomly initialised VGG-19, saved as .pth and .safetensors."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tv = torchvision.models.vgg19().eval()
    root = tmp_path_factory.mktemp("vgg")
    torch.save(tv.state_dict(), root / "vgg19.pth")
    feats = {k: v.contiguous() for k, v in tv.state_dict().items() if k.startswith("features.")}
    save_file(feats, str(root / "vgg19.safetensors"))
    return tv, root


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_features_are_torchvisions_vgg19_with_those_weights(vgg19_file, suffix):
    tv, root = vgg19_file
    net = build_features("vgg19", str(root / f"vgg19{suffix}"))
    assert net.pretrained
    x = torch.rand(2, 3, 48, 48)
    got = net(x, list(VGG19))
    z = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        for name, i in VGG19.items():
            want = tv.features[: i + 1](z)
            assert got[name].shape == want.shape and torch.equal(got[name], want), name
    assert not any(p.requires_grad for p in net.parameters())


def test_vgg19_layer_names_and_an_unknown_layer():
    net = build_features("vgg19")
    convs = [n for n in net.names if "_conv" in n]
    assert len(convs) == 16 and convs[-1] == "block5_conv4" and "block3_pool" in net.names
    assert [convs.count(f"block{b}_conv1") for b in range(1, 6)] == [1] * 5
    with pytest.raises(CnnkitError, match=r"no layer 'block5_conv5'.*block5_conv4") as e:
        net.check(["block5_conv5"])
    assert "\n" not in str(e.value)


def _photos(size):
    from sklearn.datasets import load_sample_image

    return load_image(load_sample_image("china.jpg"), size), load_image(
        load_sample_image("flower.jpg"), size
    )


def test_colour_preservation_keeps_the_contents_chroma():
    C, S = _photos(32)
    torch.manual_seed(0)
    net = build_features("vgg19")
    res = transfer(C, S, size=32, steps=4, preserve_color=True, features=net, verbose=0)
    yiq_G, yiq_C = _to_yiq(res.image), _to_yiq(C)
    inside = ((res.image > 0.01) & (res.image < 0.99)).all(1, keepdim=True)  # not clipped
    inside = inside.expand(-1, 2, -1, -1)  # (1, 1, H, W) -> (1, 2, H, W)
    assert torch.allclose(yiq_G[:, 1:][inside], yiq_C[:, 1:][inside], atol=1e-4)
    assert (yiq_G[:, :1] - yiq_C[:, :1]).abs().mean() > 0.01  # the luminance did change
    assert torch.equal(res.style, S) and torch.equal(res.content, C)


def test_cli_writes_the_image_the_panel_and_the_steps(tmp_path, capsys):
    from PIL import Image

    C, S = _photos(40)
    from cnnkit.style.transfer import save_image

    save_image(C, tmp_path / "c.png")
    save_image(S, tmp_path / "s.png")
    out = tmp_path / "g.png"
    args = ["style", f"content={tmp_path / 'c.png'}", f"style={tmp_path / 's.png'}"]
    args += [f"out={out}", "size=32", "steps=4", "every=2", "verbose=0"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert f"image saved in {out}" in said
    for f in ("g.png", "g_panel.png", "g_00002.png", "g_00004.png"):
        with Image.open(tmp_path / f) as im:
            assert im.size[0] >= 32, f
    with Image.open(out) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["content=nope.jpg"], "'nope.jpg' does not exist"),
        (["content=BAD"], "cannot be decoded"),
        (["content_layer=block5_conv9"], "no layer 'block5_conv9'"),
        (["style_layers=block1_conv1,blok2_conv1"], "did you mean 'block2_conv1'"),
        (["alpha=0"], "alpha must be a number > 0"),
        (["beta=-1"], "beta must be a number > 0"),
        (["optimizer=lbgfs"], "did you mean 'lbfgs'"),
        (["stepz=3"], "did you mean steps="),
        (["out=none"], "out= must name the image"),
        (["out=g.jpg"], "must be a .png file"),
        (["seed=1.5"], "seed must be a whole number"),
        (["style_layers=block1_conv1:-1"], "weight of style layer 'block1_conv1'"),
        (["normalization=lectur"], "did you mean 'lecture'"),
    ],
)
def test_cli_mistakes_are_one_sentence(tmp_path, capsys, extra, words):
    from cnnkit.style.transfer import save_image

    save_image(torch.rand(1, 3, 16, 16), tmp_path / "c.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    opts = {"content": str(tmp_path / "c.png"), "style": str(tmp_path / "c.png")}
    for e in extra:
        k, _, v = e.partition("=")
        opts[k] = {"BAD": str(tmp_path / "bad.jpg")}.get(v, v)
    opts.setdefault("out", str(tmp_path / "g.png"))
    args = ["style", *(f"{k}={v}" for k, v in opts.items())]
    assert main([*args, "size=16", "steps=1", "verbose=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "g.png").exists()


def test_a_real_run_on_the_bundled_photos(tmp_path):
    """china.jpg as C, flower.jpg as S at 128x128, Adam, 100 steps, random VGG-19."""
    from PIL import Image

    from cnnkit.style.costs import content_cost, style_cost
    from cnnkit.style.transfer import CONTENT_LAYER, STYLE_LAYERS

    C, S = _photos(128)
    torch.manual_seed(0)
    net = build_features("vgg19")
    out = tmp_path / "g.png"
    res = transfer(C, S, size=128, steps=100, features=net, verbose=0, out=out)
    first, last = res.history[0], res.history[-1]
    assert last["J"] <= 0.1 * first["J"]  # the total cost falls by at least 90%
    layers = list(STYLE_LAYERS)
    with torch.no_grad():
        a_S, a_C = net(S, layers), net(C, [*layers, CONTENT_LAYER])
        style_of_C = float(style_cost(a_S, {k: a_C[k] for k in layers}, STYLE_LAYERS))
        noise = torch.rand(C.shape, generator=torch.Generator().manual_seed(1))
        content_of_noise = float(
            content_cost(a_C[CONTENT_LAYER], net(noise, [CONTENT_LAYER])[CONTENT_LAYER])
        )
        a_G = net(res.image, [*layers, CONTENT_LAYER])
        J_style = float(style_cost(a_S, {k: a_G[k] for k in layers}, STYLE_LAYERS))
        J_content = float(content_cost(a_C[CONTENT_LAYER], a_G[CONTENT_LAYER]))
    assert J_style == pytest.approx(last["J_style"], rel=1e-4)  # the history tells the truth
    assert J_style < 0.1 * style_of_C  # G has S's style far more than C has
    assert J_content < 0.05 * content_of_noise  # and keeps C's content: the stated bound
    assert res.image.min() >= 0 and res.image.max() <= 1
    with Image.open(out) as im:
        assert im.size == (128, 128)
    with Image.open(tmp_path / "g_panel.png") as im:
        assert im.size[0] > 3 * 128


def test_lbfgs_descends_without_clamping_in_its_closure():
    C, S = _photos(64)
    torch.manual_seed(0)
    res = transfer(C, S, size=64, steps=15, optimizer="lbfgs", verbose=0)
    J = [h["J"] for h in res.history]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(J))  # every step is a descent
    assert J[-1] < 0.5 * J[0]
    assert res.image.min() >= 0 and res.image.max() <= 1


def test_random_weights_are_said_plainly(capsys):
    C, S = _photos(16)
    res = transfer(C, S, size=16, steps=1, verbose=1)
    said = capsys.readouterr().out
    assert not res.pretrained and "quality needs pretrained weights" in said


def test_other_zoo_models_are_read_by_module_path():
    """ResNet-18: a block's output, and a ReLU its block calls twice read at its first call."""
    torch.manual_seed(0)
    net = build_features("resnet18")
    assert {"4", "4.0", "4.0.relu", "4.0.bn1"} <= set(net.names)
    x = torch.rand(1, 3, 32, 32)
    got = net(x, ["4.0", "4.0.relu", "4.0.bn1"])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
    with torch.no_grad():
        h = net.net[:4]((x - mean) / std)  # stem: conv, bn, relu, max-pool
        block = net.net[4][0]
        bn1 = block.bn1(block.conv1(h))
        assert torch.allclose(got["4.0.bn1"], bn1)  # not rewritten by a later in-place op
        assert torch.allclose(got["4.0.relu"], torch.relu(bn1))  # the first call
        assert torch.allclose(got["4.0"], block(h))


def test_the_seed_fixes_random_weights_and_noise():
    C, S = _photos(16)
    runs = [transfer(C, S, size=16, steps=2, verbose=0, seed=3).history for _ in range(2)]
    assert runs[0] == runs[1]
    assert transfer(C, S, size=16, steps=2, verbose=0, seed=4).history != runs[0]
