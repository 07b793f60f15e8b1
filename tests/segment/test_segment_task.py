"""The trainer's view of segmentation (SegmentTask) and U-Net on zoo encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cnnkit.errors import CnnkitError
from cnnkit.models import create
from cnnkit.segment.metrics import IGNORE_INDEX
from cnnkit.segment.train import SegmentTask
from cnnkit.segment.unet import EncoderUNet


def _np_scores(pred: np.ndarray, true: np.ndarray, C: int) -> dict[str, float]:
    """Pixel accuracy, mean IoU and mean Dice by hand (numpy), 255 left out."""
    keep = true != IGNORE_INDEX
    p, t = pred[keep], true[keep]
    ious, dices = [], []
    for c in range(C):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
            dices.append(2 * tp / (2 * tp + fp + fn))
    return {
        "pixel_accuracy": float(np.mean(p == t)),
        "mean_iou": float(np.mean(ious)),
        "mean_dice": float(np.mean(dices)),
    }


def test_counting_batch_by_batch_gives_the_scores_of_the_whole_split():
    g = torch.Generator().manual_seed(0)
    C = 4
    task = SegmentTask(C, loss="ce")
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    preds, trues, losses, pixels = [], [], [], []
    for _ in range(3):
        logits = torch.randn(2, C, 9, 7, generator=g)
        y = torch.randint(0, C, (2, 9, 7), generator=g)
        y[0, :2] = IGNORE_INDEX
        loss = task.loss(logits, y)
        task.count(sums, logits, y, loss)
        preds.append(logits.argmax(1).numpy())
        trues.append(y.numpy())
        losses.append(float(loss))
        pixels.append(int((y != IGNORE_INDEX).sum()))
    got = task.summarize(sums)
    want = _np_scores(np.concatenate(preds), np.concatenate(trues), C)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12)
    # the loss is the per-pixel mean over the split: batch means weighed by their pixels
    assert got["loss"] == pytest.approx(np.dot(losses, pixels) / sum(pixels), rel=1e-6)


def test_binary_mode_scores_one_logit_per_pixel():
    g = torch.Generator().manual_seed(1)
    task = SegmentTask(2, mode="binary")
    z = torch.randn(3, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (3, 8, 8), generator=g)
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, z, y, task.loss(z, y))
    want = _np_scores((z[:, 0] > 0).long().numpy(), y.numpy(), 2)
    assert task.summarize(sums)["mean_iou"] == pytest.approx(want["mean_iou"], abs=1e-12)


@pytest.mark.parametrize("encoder", ["resnet18", "vgg11", "mobilenet_v2"])
def test_encoder_unet_gives_a_mask_of_any_size(encoder):
    net = EncoderUNet(encoder, in_channels=3, num_classes=5, width=8).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, 97, 131))
    assert y.shape == (1, 5, 97, 131)
    assert net.stride == 32  # five halvings in each of these encoders


def test_encoder_unet_trains_every_parameter():
    net = EncoderUNet("resnet18", in_channels=1, num_classes=3, width=8)
    y = net(torch.rand(2, 1, 32, 32))
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_encoder_weights_come_from_a_local_file(tmp_path):
    src = create("vgg11", num_classes=2, in_channels=3)
    torch.nn.init.normal_(src.features[0].weight)  # something no fresh build would draw
    path = tmp_path / "vgg11.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    net = EncoderUNet("vgg11", in_channels=3, num_classes=2, weights=str(path))
    for k, v in src.features.state_dict().items():
        assert torch.equal(net.encoder.state_dict()[k], v), k


def test_an_encoder_that_does_not_halve_is_refused_in_one_sentence():
    with pytest.raises(CnnkitError, match="halve the size"):
        EncoderUNet("lenet5", in_channels=1, num_classes=2)
