"""Transfer learning, checked on real weights, real runs and independent arithmetic.

- stages and freezing: parameter counts worked out by hand for LeNet-5;
- batch norm: ``freeze_stats`` leaves every running mean / variance bitwise unchanged
  after training with the trainer, ``train`` changes them, ``freeze_all`` also keeps
  gamma and beta;
- torchvision-format weights: a randomly initialised torchvision ResNet-18 and
  MobileNetV2, saved to a ``.pth``, give the same outputs in the cnnkit model;
- a real pretrained run (LeNet-5 on the digits 0-4) transferred to 5-9: the cached-
  feature head equals the uncached head with the backbone frozen, the backbone stays
  bitwise the pretrained one, the preprocessing travels with the weights, and a
  mismatch is one sentence;
- fine-tuning: a stage joins at its start epoch with its own learning rate.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from cnnkit import transfer
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.models import create
from cnnkit.train import fit
from cnnkit.train.classify import load_run_model, load_splits
from cnnkit.train.classify import train as plain_train
from cnnkit.train.config import TrainConfig


def test_lenet5_stages_and_frozen_counts_by_hand():
    m = create("lenet5", num_classes=5)
    assert [n for n, _ in transfer.stages(m)] == [
        "features.0",
        "features.3",
        "classifier.0",
        "classifier.2",
    ]
    conv = (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16)  # 156 + 2,416
    fc = (400 * 120 + 120) + (120 * 84 + 84)  # 48,120 + 10,164
    head = 84 * 5 + 5
    rep = transfer.apply_freeze(m, "backbone", "freeze_stats")
    assert (rep.trainable, rep.frozen) == (head, conv + fc)
    assert rep.line().startswith("transfer: the whole backbone frozen: trainable 425 / non-")
    m = create("lenet5", num_classes=5)
    rep = transfer.apply_freeze(m, 2, "train")
    assert (rep.trainable, rep.frozen) == (fc + head, conv)
    assert [p.requires_grad for p in m.features.parameters()] == [False] * 4
    with pytest.raises(CnnkitError, match="freeze=5, but LeNet5 has 4 stages"):
        transfer.apply_freeze(create("lenet5"), 5)
    # ResNet: the stem's batch norm joins the stem; the blocks are the stages
    r = [n for n, _ in transfer.stages(create("resnet18"))]
    assert r == ["conv1", *(f"layer{i}.{j}" for i in (1, 2, 3, 4) for j in (0, 1))]


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return create("resnet18", num_classes=3, small_input=True)


def _bn_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in m.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


@pytest.mark.parametrize("bn", ["train", "freeze_stats", "freeze_all"])
def test_batch_norm_policy_after_training_with_the_trainer(bn):
    m = _bn_net()
    transfer.apply_freeze(m, "none", bn)
    before = _bn_state(m)
    gamma = {k: v.clone() for k, v in m.state_dict().items() if k.endswith("bn1.weight")}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 16, 16, generator=g) * 2 + 1, torch.randint(0, 3, (16,), generator=g)
    fit(
        m,
        TensorDataset(x, y),
        epochs=1,
        batch=8,
        verbose=0,
        workers=0,
        precision="fp32",
        memory_format="contiguous",
        compile=False,
        warmup_epochs=0,
        aug="none",
    )
    after = _bn_state(m)
    if bn == "train":
        assert any(not torch.equal(before[k], after[k]) for k in before if "running" in k)
    else:  # every running mean, variance and count bitwise as it was
        assert all(torch.equal(before[k], after[k]) for k in before), bn
    changed = [not torch.equal(v, m.state_dict()[k]) for k, v in gamma.items()]
    assert all(changed) if bn != "freeze_all" else not any(changed)


@pytest.mark.parametrize(
    ("name", "tv"), [("resnet18", "resnet18"), ("mobilenet_v2", "mobilenet_v2")]
)
def test_torchvision_weights_give_torchvision_outputs(tmp_path, name, tv):
    torch.manual_seed(3)
    ref = getattr(torchvision.models, tv)(weights=None).eval()
    with torch.no_grad():  # randomly initialised running statistics, so they matter
        for mod in ref.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{tv}.pth"
    torch.save(ref.state_dict(), path)
    src = transfer.load_source(path, model=name)
    got = src.model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(got(x), ref(x), rtol=0, atol=1e-5)
    # torchvision's preprocessing for those weights travels with them
    assert src.preprocess is not None
    assert src.preprocess.size == (224, 224) and src.preprocess.channels == 3
    assert src.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert src.preprocess.std == pytest.approx((0.229, 0.224, 0.225))


# --- a real pretrained run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    r = plain_train(
        model="lenet5",
        data="digits",
        classes=[0, 1, 2, 3, 4],
        epochs=3,
        verbose=0,
        project=str(root),
        name="pre",
    )
    return r.run_dir


FAST = {"precision": "fp32", "memory_format": "contiguous", "compile": False, "verbose": 0}


def test_cached_features_train_the_same_head(pretrained, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    common = dict(
        data="digits",
        classes=[5, 6, 7, 8, 9],
        per_class=10,
        pretrained=str(pretrained),
        freeze="backbone",
        aug="none",
        epochs=4,
        project=str(tmp_path),
        **FAST,
    )
    plain = transfer.train(cache_features=False, name="plain", **common)
    cached = transfer.train(cache_features=True, name="cached", **common)
    assert any("computed once and stored in" in n for n in cached.notes)
    assert not any("cached features" in n for n in plain.notes)
    files = list((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(files) == 1
    pre_model, pre_meta = load_run_model(pretrained)
    a, _ = load_run_model(plain.run_dir)
    b, meta = load_run_model(cached.run_dir)
    for k, v in pre_model.state_dict().items():
        if k.startswith("classifier.4"):
            continue  # the new head
        assert torch.equal(a.state_dict()[k], v) and torch.equal(b.state_dict()[k], v), k
    for k in ("classifier.4.weight", "classifier.4.bias"):
        torch.testing.assert_close(a.state_dict()[k], b.state_dict()[k], rtol=0, atol=1e-5)
        assert not torch.equal(a.state_dict()[k], torch.zeros_like(a.state_dict()[k]))
    assert meta["preprocess"] == pre_meta["preprocess"]  # the weights' mean and std
    assert meta["classes"] == ["5", "6", "7", "8", "9"]
    assert cached.scores["test"]["accuracy"] == pytest.approx(
        plain.scores["test"]["accuracy"], abs=1.01 / 179
    )
    again = transfer.train(cache_features=True, name="again", **common)
    assert any("read from" in n for n in again.notes)


def test_preprocessing_mismatch_is_one_sentence(pretrained, tmp_path, capsys):
    with pytest.raises(CnnkitError, match=r"expects 32x32 inputs, size=16 was given; drop size="):
        transfer.train(data="digits", pretrained=str(pretrained), size=16, project=str(tmp_path))
    pre = transfer.load_source(pretrained).preprocess
    d = load_splits(TrainConfig(), (32, 32), 3)
    with pytest.raises(CnnkitError, match="expect 1-channel inputs, the data has 3; load it with"):
        transfer.check_preprocess(pre, d.info.preprocess, "the weights")
    args = ["train", "data=digits", f"pretrained={pretrained}", "size=16", f"project={tmp_path}"]
    args.append("report=false")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnkit: error: pretrained=") and "\n" not in err
    assert not (tmp_path / "classify").exists()


def test_fine_tune_stage_joins_at_its_epoch(pretrained, tmp_path):
    common = dict(
        data="digits",
        classes=[5, 6, 7, 8, 9],
        per_class=10,
        pretrained=str(pretrained),
        fine_tune=True,
        unfreeze=1,
        lr_mult=0.5,
        epochs=2,
        project=str(tmp_path),
        **FAST,
    )
    pre_model, _ = load_run_model(pretrained)
    never = transfer.train(head_epochs=2, name="never", **common)  # the stage never joins
    joined = transfer.train(head_epochs=1, name="joined", **common)
    note = next(n for n in joined.notes if n.startswith("fine_tune:"))
    assert "then the last 1 stage(s) at lower learning rates (classifier.2 x0.5)" in note
    a, _ = load_run_model(never.run_dir)
    b, _ = load_run_model(joined.run_dir)
    for k, v in pre_model.state_dict().items():
        if k.startswith("classifier.4"):
            continue
        assert torch.equal(a.state_dict()[k], v), k  # frozen throughout
        if k.startswith("classifier.2"):
            assert not torch.equal(b.state_dict()[k], v), k  # trained in epoch 2
        else:
            assert torch.equal(b.state_dict()[k], v), k
    groups, _ = transfer.fine_tune_groups(create("lenet5"), 3, 4, 0.1)
    assert [g["lr_mult"] for g in groups] == pytest.approx([1.0, 0.1, 0.01, 0.001])
    assert [g.get("start_epoch", 0) for g in groups] == [0, 4, 4, 4]
    assert transfer.auto_unfreeze(50, 5, 4)[0] == 1
    assert transfer.auto_unfreeze(2500, 5, 4)[0] == 2
    assert transfer.auto_unfreeze(50_000, 5, 4)[0] == 4


def test_class_subsets_and_few_examples_per_class():
    d = load_splits(TrainConfig(classes=[5, 6, 7, 8, 9], per_class=10), (32, 32))
    assert d.info.classes == ["5", "6", "7", "8", "9"]
    assert d.train.labels.bincount().tolist() == [10] * 5
    full = load_splits(TrainConfig(), (32, 32))
    want = int(sum((full.test.labels == c).sum() for c in (5, 6, 7, 8, 9)))
    assert len(d.test) == want  # dev and test keep every image of those classes
    with pytest.raises(CnnkitError, match="unknown class '12'"):
        load_splits(TrainConfig(classes=[5, 12]), (32, 32))
    with pytest.raises(CnnkitError, match="has fewer training images; pass a smaller per_class"):
        load_splits(TrainConfig(per_class=5000), (32, 32))


def test_plain_training_refuses_transfer_settings(tmp_path):
    with pytest.raises(CnnkitError, match=r"^freeze=, bn= are applied by cnnkit\.transfer"):
        plain_train(freeze=2, bn="freeze_all", project=str(tmp_path))


def test_the_run_records_the_pretrained_architecture(tmp_path):
    """model= left at its default: the run is of the weights' architecture and options."""
    pre = plain_train(
        model="mlp",
        model_args={"layers": 1, "units": 16},
        data="digits",
        classes=[0, 1, 2],
        epochs=1,
        verbose=0,
        project=str(tmp_path),
        name="p",
    )
    r = transfer.train(
        pretrained=str(pre.run_dir),
        data="digits",
        classes=[3, 4],
        epochs=1,
        aug="none",
        project=str(tmp_path),
        name="t",
        **FAST,
    )
    model, meta = load_run_model(r.run_dir)
    assert (meta["model"], meta["model_args"]) == ("mlp", {"layers": 1, "units": 16})
    # 1024 -> 16 hidden, then a new head: two classes, one sigmoid output (16 + 1)
    assert sum(p.numel() for p in model.parameters()) == 1024 * 16 + 16 + 16 + 1
    assert (r.run_dir / "config.yaml").read_text().count("model: mlp") == 1
