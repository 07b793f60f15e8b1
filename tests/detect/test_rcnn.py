"""torchvision's Faster R-CNN through cnnkit's one trainer (``model=fasterrcnn_mobilenet_v3``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.cli import main
from cnnkit.detect.rcnn import (
    LOSS_KEYS,
    RcnnTask,
    build_fasterrcnn,
    pad_targets,
    unpad_targets,
)


def _batch(seed: int = 0, B: int = 3, side: int = 48):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, side, side, generator=g)
    rows = []
    for i in range(B):
        K = i  # 0, 1, 2 objects: the first image has none
        xy = torch.rand(K, 2, generator=g) * side / 2
        wh = 8 + torch.rand(K, 2, generator=g) * side / 3
        rows.append(pad_targets(torch.cat([xy, xy + wh], 1), torch.arange(K) % 2, 4))
    return x, torch.stack(rows)  # (B, 3, side, side), (B, 4, 5)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_fasterrcnn("fasterrcnn_mobilenet_v3", 2, rcnn_size=64)


def test_padded_targets_round_trip_with_torchvisions_class_shift():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 9.0], [3.0, 3.0, 4.0, 8.0]])
    none = pad_targets(boxes[:0], torch.zeros(0), 3)  # an image without objects
    y = torch.stack([pad_targets(boxes, torch.tensor([0, 2]), 3), none])
    assert y.shape == (2, 3, 5) and y[0, 2, 4] == -1 and (y[1, :, 4] == -1).all()
    a, b = unpad_targets(y)
    assert torch.equal(a["boxes"], boxes) and a["labels"].tolist() == [1, 3]  # 0 = background
    assert a["labels"].dtype == torch.int64
    assert b["boxes"].shape == (0, 4) and b["labels"].shape == (0,)


def test_the_training_loss_is_torchvisions_loss_dict_summed():
    x, y = _batch()
    net = _net().train()
    task = RcnnTask()
    torch.manual_seed(5)
    out = task.forward(net, x, y)
    torch.manual_seed(5)  # the same region samples
    d = net(list(x), unpad_targets(y))
    assert out.shape == (4,)
    assert torch.allclose(out, torch.stack([d[k] for k in LOSS_KEYS]))
    assert torch.allclose(task.loss(out, y), sum(d.values()))
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, out.detach(), y, task.loss(out, y).detach())
    s = task.summarize(sums)  # per image: n = 3 weighs and divides out again
    assert s["loss"] == pytest.approx(float(sum(d.values()).detach()), rel=1e-6)
    assert s["loss_objectness"] == pytest.approx(float(d["loss_objectness"].detach()), rel=1e-6)


def test_the_dev_loss_leaves_batch_norm_alone_and_is_repeatable():
    x, y = _batch(1)
    net = _net(1)
    net.train()
    net(list(x), unpad_targets(y))  # one training pass: running stats move off 0 / 1
    net.eval()
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    task = RcnnTask()
    with torch.no_grad():
        a = task.eval_forward(net, x, y)
        b = task.eval_forward(net, x, y)
    assert torch.equal(a, b)  # seeded region sampling: the same number every time
    assert all(torch.equal(m.running_mean, r) for m, r in zip(bn, before))
    assert not any(m.training for m in net.modules())  # left in eval mode
    # independently: batch-norm in eval mode, heads in training mode, sampler seeded 0
    for m in (net, net.transform, net.rpn, net.roi_heads):
        m.training = True
    torch.manual_seed(0)
    with torch.no_grad():
        d = net(list(x), unpad_targets(y))
    assert torch.allclose(a, torch.stack([d[k] for k in LOSS_KEYS]))
    # and it differs from the loss with batch statistics (what a plain train() would give)
    net.train()
    torch.manual_seed(0)
    with torch.no_grad():
        t = net(list(x), unpad_targets(y))
    assert not torch.allclose(a, torch.stack([t[k] for k in LOSS_KEYS]))


@pytest.fixture(scope="module")
def rcnn_run(tmp_path_factory):
    """One epoch of Faster R-CNN on 30 synthetic 32x32 images, through the command line."""
    from cnnkit.detect.data import synth_shapes

    root = tmp_path_factory.mktemp("rcnn")
    yaml_path = synth_shapes(root / "shapes", 30, size=32, seed=4)
    args = ["detect", "train", f"data={yaml_path}", "size=32", "epochs=1", "batch=8"]
    args += ["model=fasterrcnn_mobilenet_v3", "rcnn_size=64", f"project={root / 'runs'}"]
    args += ["verbose=0", "workers=0"]
    assert main(args) == 0
    return root / "runs" / "detect" / "train", yaml_path


def test_rcnn_run_scores_the_same_after_reloading_and_agrees_with_pycocotools(
    rcnn_run, capsys, cocoeval_stats
):
    folder, _ = rcnn_run
    header = (folder / "results.csv").read_text().splitlines()[0].split(",")
    assert {"dev_loss", *(f"dev_{k}" for k in LOSS_KEYS)} <= set(header)
    trained = (folder / "summary.txt").read_text().splitlines()[1]  # "mAP@0.5 ... " line
    capsys.readouterr()
    assert main(["detect", "val", f"run={folder}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == trained  # reloaded weights: the same detections
    stats = cocoeval_stats(folder / "val_ground_truth.json", folder / "val_predictions.json")
    assert abs(float(out.split()[1]) - stats[1]) < 1e-4
    assert abs(float(out.split()[3]) - stats[0]) < 1e-4
    from cnnkit.detect.train import val

    s = val(folder)
    assert abs(s.map50 - stats[1]) < 1e-6 and abs(s.map - stats[0]) < 1e-6


def test_rcnn_summary_and_predict(rcnn_run, capsys):
    import json

    folder, yaml_path = rcnn_run
    assert main(["detect", "summary", f"run={folder}"]) == 0
    text = capsys.readouterr().out
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in text and "resized inside to 64x64" in text
    n = sum(p.numel() for p in build_fasterrcnn("fasterrcnn_mobilenet_v3", 3).parameters())
    assert f"parameters {n:,}" in text
    src = yaml_path.parent / "images" / "val"
    assert main(["detect", "predict", f"run={folder}", f"source={src}", "conf=0"]) == 0
    preds = json.loads((folder / "predictions.json").read_text())
    stems = {int(p.stem) for p in src.glob("*.png")}
    assert preds and {p["image_id"] for p in preds} <= stems
    for p in preds:  # xywh inside the 32x32 image, classes 0..2 as in data.yaml
        x, y, w, h = p["bbox"]
        assert min(x, y) >= -1e-3 and max(x + w, y + h) <= 32 + 1e-3
        assert p["category_id"] in (0, 1, 2)


@pytest.mark.parametrize(
    "args, words",
    [
        (["model=fasterrcnn_mobilenet"], "did you mean 'fasterrcnn_mobilenet_v3'"),
        (["model=fasterrcnn_mobilenet_v3", "backbone=vgg11"], "drop backbone="),
        (["rcnn_size=0"], "rcnn_size must be a positive integer"),
    ],
)
def test_rcnn_settings_are_checked_first(capsys, args, words):
    assert main(["detect", "train", "data=d.yaml", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
