"""Run and prediction plots: each figure holds exactly the numbers it claims to draw."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.utils import draw_bounding_boxes

from cnnkit.data.augment import Augment, preview_grid
from cnnkit.errors import CnnkitError
from cnnkit.report.plots import (
    class_color,
    draw_boxes,
    learning_curve_data,
    overlay_mask,
    plot_augmentation,
    plot_boxes,
    plot_confusion,
    plot_gallery,
    plot_learning_curves,
    plot_masks,
    plot_saliency,
    plot_top_losses,
    saliency,
    top_loss_order,
)
from cnnkit.train.config import TrainConfig

HISTORY = [
    {
        "epoch": 1,
        "train_loss": 1.2,
        "train_accuracy": 0.60,
        "dev_loss": 1.3,
        "dev_accuracy": 0.55,
        "lr": 0.1,
        "seconds": 2.0,
        "img_per_s": 500.0,
        "data_s": 0.1,
    },
    {
        "epoch": 2,
        "train_loss": 0.7,
        "train_accuracy": 0.80,
        "dev_loss": 0.9,
        "dev_accuracy": 0.71,
        "lr": 0.1,
        "seconds": 2.0,
        "img_per_s": 510.0,
        "data_s": 0.1,
    },
    {
        "epoch": 3,
        "train_loss": 0.4,
        "train_accuracy": 0.92,
        "dev_loss": 0.8,
        "dev_accuracy": 0.83,
        "lr": 0.01,
        "seconds": 2.0,
        "img_per_s": 505.0,
        "data_s": 0.1,
    },
]


def lines(ax) -> dict[str, np.ndarray]:
    """The y-data of an axes' lines by label."""
    return {ln.get_label(): np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()}


def check_curves(fig, history, human) -> None:
    loss, err = fig.axes[0], fig.axes[1]
    got = lines(loss)
    np.testing.assert_allclose(got["train"], [r["train_loss"] for r in history])
    np.testing.assert_allclose(got["dev"], [r["dev_loss"] for r in history])
    x = np.asarray(loss.get_lines()[0].get_xdata(), dtype=float)
    np.testing.assert_array_equal(x, [1, 2, 3])
    got = lines(err)
    np.testing.assert_allclose(got["dev"], [100 * (1 - r["dev_accuracy"]) for r in history])
    np.testing.assert_allclose(got["train"], [100 * (1 - r["train_accuracy"]) for r in history])
    label = f"human-level {100 * human:.1f}%"
    assert label == "human-level 2.0%"
    np.testing.assert_allclose(got[label], [100 * human, 100 * human])
    assert err.get_ylabel() == "error (%)" and loss.get_ylabel() == "loss"
    assert err.get_xlabel() == "epoch"
    assert err.get_title() == "error"


def test_learning_curves_from_rows():
    fig = plot_learning_curves(HISTORY, human=0.02, title="run")
    assert len(fig.axes) == 2  # loss and error: lr, seconds... are not train_/dev_ pairs
    check_curves(fig, HISTORY, 0.02)
    assert fig.get_suptitle() == "run"


def test_learning_curves_from_csv_with_extra_metric_and_missing_dev(tmp_path):
    path = tmp_path / "results.csv"
    rows = [dict(r, train_iou=0.1 * r["epoch"], dev_iou=0.05 * r["epoch"]) for r in HISTORY]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig = plot_learning_curves(path, human=0.02)
    assert len(fig.axes) == 3
    check_curves(fig, HISTORY, 0.02)
    iou = lines(fig.axes[2])
    np.testing.assert_allclose(iou["train"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(iou["dev"], [0.05, 0.10, 0.15])
    # no dev split: empty cells read as NaN, and no dev line is drawn
    with open(path, "w", newline="") as f:
        f.write(
            "epoch,train_loss,train_accuracy,dev_loss,dev_accuracy\n1,0.5,0.9,,\n2,0.3,0.95,,\n"
        )
    data = learning_curve_data(path)
    assert math.isnan(data["dev_loss"][0]) and data["train_accuracy"] == [0.9, 0.95]
    fig = plot_learning_curves(str(path))
    assert set(lines(fig.axes[1])) == {"train"}
    np.testing.assert_allclose(lines(fig.axes[1])["train"], [10.0, 5.0])


def test_learning_curves_errors(tmp_path):
    with pytest.raises(CnnkitError, match="train_loss"):
        plot_learning_curves([{"epoch": 1, "dev_loss": 0.3}])
    with pytest.raises(CnnkitError, match="no epochs"):
        plot_learning_curves([])
    with pytest.raises(CnnkitError, match=r"results\.csv"):
        plot_learning_curves(tmp_path / "missing.csv")
    with pytest.raises(CnnkitError, match="human"):
        plot_learning_curves(HISTORY, human=2)


def cell_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_confusion_small_holds_shares_and_counts():
    c = torch.tensor([[5, 1, 0], [2, 6, 2], [0, 0, 4]])
    fig = plot_confusion(c, ["cat", "dog", "cow"], title="dev")
    ax = fig.axes[0]
    share = c.double() / c.sum(1, keepdim=True)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), share.numpy())
    assert cell_texts(ax) == [str(v) for v in c.flatten().tolist()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "cow"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "75.0%" in ax.get_title()  # 15 right of 20
    # dark cells get white text: 6/10 in the middle, 4/4 in the corner
    colours = [t.get_color() for t in ax.texts]
    assert colours[4] == "white" and colours[8] == "white" and colours[1] == "black"
    raw = plot_confusion(c.numpy(), None, normalize=False).axes[0]
    np.testing.assert_allclose(np.asarray(raw.images[0].get_array()), c.numpy())
    with pytest.raises(CnnkitError, match="square"):
        plot_confusion(torch.zeros(2, 3), None)
    with pytest.raises(CnnkitError, match="names"):
        plot_confusion(c, ["a", "b"])


def test_confusion_hundred_classes_is_readable_and_nan_free():
    K = 100
    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 5, (K, K), generator=g)
    c[7] = 0  # a class without examples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_confusion(c, [f"class{i}" for i in range(K)])
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    assert np.isfinite(shown).all()
    np.testing.assert_array_equal(shown[7], np.zeros(K))
    np.testing.assert_allclose(shown.sum(1)[np.arange(K) != 7], 1.0)
    assert cell_texts(ax) == []
    assert len(ax.get_xticklabels()) == K and len(ax.get_yticklabels()) == K
    assert ax.get_xticklabels()[99].get_text() == "class99"
    assert fig.get_size_inches()[0] <= 12.5
    assert 4 <= ax.get_xticklabels()[0].get_fontsize() < 6
    assert ax.get_xticklabels()[0].get_rotation() == 90
    # a 4% confusion gets 20% of the colour scale (square root), not 4%
    norm = ax.images[0].norm
    assert abs(float(norm(0.04)) - 0.2) < 1e-9 and abs(float(norm(1.0)) - 1.0) < 1e-9


def test_top_losses_order_and_titles():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(12, 4, generator=g) * 2, 1)
    labels = torch.randint(0, 4, (12,), generator=g)
    loss = -np.log(probs.numpy()[np.arange(12), labels.numpy()])
    order = top_loss_order(probs, labels)
    assert order.dtype == torch.int64
    np.testing.assert_array_equal(order.numpy(), np.argsort(-loss, kind="stable"))
    # ties keep their order
    tied = top_loss_order(torch.full((4, 2), 0.5), torch.tensor([0, 1, 0, 1]))
    assert tied.tolist() == [0, 1, 2, 3]

    images = torch.randint(0, 256, (12, 1, 6, 6), dtype=torch.uint8)
    classes = ["zero", "one", "two", "three"]
    preds = probs.argmax(1)
    fig = plot_top_losses(images, labels, preds, probs, classes, k=5)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5
    for ax, i in zip(shown, order[:5].tolist()):
        t, p = int(labels[i]), int(preds[i])
        title = ax.get_title()
        assert title.startswith(f"true {classes[t]}\npred {classes[p]} (")
        assert f"({100 * float(probs[i, p]):.0f}%)" in title
        assert title.endswith(f"loss {loss[i]:.2f}")
        assert ax.title.get_color() == ("green" if t == p else "red")
        np.testing.assert_allclose(ax.images[0].get_array(), images[i, 0].numpy() / 255)
    with pytest.raises(CnnkitError, match="class indices"):
        top_loss_order(probs, torch.full((12,), 4))


def test_gallery_shows_each_image():
    x = torch.rand(5, 3, 4, 4)
    fig = plot_gallery(x, [f"#{i}" for i in range(5)], cols=3, title="five")
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["#0", "#1", "#2", "#3", "#4"]
    for i, ax in enumerate(shown):
        np.testing.assert_allclose(ax.images[0].get_array(), x[i].permute(1, 2, 0).numpy())
    with pytest.raises(CnnkitError, match="one title"):
        plot_gallery(x, ["a"])
    with pytest.raises(CnnkitError, match="1 or 3"):
        plot_gallery(torch.rand(5, 4, 4), ["a"] * 5)


def linear_model(n_C: int = 2, n_H: int = 3, n_W: int = 4, K: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_C * n_H * n_W, K))


def test_saliency_of_a_linear_model_is_its_weights():
    model = linear_model()
    model.train()
    x = torch.randn(2, 3, 4)
    W = model[1].weight.detach()  # (K, n_C*n_H*n_W)
    for target in (0, 3):
        sal = saliency(model, x, target)
        want = W[target].abs().reshape(2, 3, 4).amax(0)  # (n_C*n_H*n_W,) -> (n_C, n_H, n_W)
        assert sal.shape == (3, 4)
        assert torch.allclose(sal, want)
    pred = int(model(x.unsqueeze(0)).argmax())
    want = W[pred].abs().reshape(2, 3, 4).amax(0)  # (n_C*n_H*n_W,) -> (n_C, n_H, n_W)
    assert torch.allclose(saliency(model, x.unsqueeze(0)), want)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model[1].training
    model.eval()
    saliency(model, x, np.int64(1))
    assert not model.training
    for bad in (5, -1, 1.5):
        with pytest.raises(CnnkitError, match="target"):
            saliency(model, x, bad)
    assert not model.training  # restored after an error too
    with pytest.raises(CnnkitError, match="one image"):
        saliency(model, torch.randn(2, 2, 3, 4))

    fig = plot_saliency(x, sal, title="saliency")
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), sal.numpy())
    assert len([ax for ax in fig.axes if ax.images]) == 3


def test_plot_augmentation_shows_preview_grid():
    images = torch.randint(0, 256, (2, 1, 12, 12), dtype=torch.uint8)
    aug = Augment.from_config(TrainConfig(aug="strong"))
    fig = plot_augmentation(images, aug, k=3, seed=7)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), preview_grid(images, aug, 3, 7))
    assert not np.array_equal(ax.images[0].get_array(), preview_grid(images, aug, 3, 8))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["original", "aug 1", "aug 2", "aug 3"]


def test_draw_boxes_edges_and_labels():
    image = torch.full((1, 40, 50), 0.2)  # grey, float in [0, 1]
    boxes = torch.tensor([[5.0, 5.0, 30.0, 25.0], [10.0, 28.0, 45.0, 38.0]])
    out = draw_boxes(image, boxes, labels=[2, 1], scores=[0.87, 0.5], classes=["bg", "cat", "car"])
    assert out.dtype == torch.uint8 and out.shape == (3, 40, 50)
    assert out[:, 5, 15].tolist() == list(class_color(2))  # top edge of box 0
    assert out[:, 15, 30].tolist() == list(class_color(2))  # right edge of box 0
    assert out[:, 33, 10].tolist() == list(class_color(1))  # left edge of box 1
    assert out[:, 18, 20].tolist() == [51, 51, 51]  # inside, not filled: round(0.2*255)
    assert out[:, 2, 45].tolist() == [51, 51, 51]  # outside every box
    rgb = (image.expand(3, -1, -1) * 255).round().to(torch.uint8)
    direct = draw_bounding_boxes(
        rgb, boxes, ["car 0.87", "cat 0.50"], colors=[class_color(2), class_color(1)], width=2
    )
    assert torch.equal(out, direct)
    fig = plot_boxes(image, boxes, [2, 1], classes=["bg", "cat", "car"], title="boxes")
    assert fig.axes[0].images[0].get_array().shape == (40, 50, 3)
    with pytest.raises(CnnkitError, match="x2 < x1"):
        draw_boxes(image, torch.tensor([[30.0, 5.0, 10.0, 25.0]]))
    with pytest.raises(CnnkitError, match=r"\(N, 4\)"):
        draw_boxes(image, torch.tensor([[1.0, 2.0, 3.0]]))
    with pytest.raises(CnnkitError, match="one per box"):
        draw_boxes(image, boxes, labels=[1])


def test_overlay_mask_blends_classes_and_keeps_background():
    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (3, 6, 7), dtype=torch.uint8, generator=g)
    mask = torch.zeros(6, 7, dtype=torch.long)
    mask[1:3, 1:4] = 1
    mask[4:, 5:] = 3
    alpha = 0.3
    out = overlay_mask(image, mask, num_classes=4, alpha=alpha)
    assert out.dtype == torch.uint8 and out.shape == (3, 6, 7)
    bg = mask == 0
    assert torch.equal(out[:, bg], image[:, bg])
    for k in (1, 3):
        colour = torch.tensor(class_color(k), dtype=torch.float64)[:, None]
        want = ((1 - alpha) * image[:, mask == k].double() + alpha * colour).round()
        assert (out[:, mask == k].double() - want).abs().max() <= 1
    fig = plot_masks(image, mask, 4, classes=["bg", "road", "car", "sky"], alpha=alpha)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), out.permute(1, 2, 0).numpy())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["road", "sky"]
    with pytest.raises(CnnkitError, match="shape"):
        overlay_mask(image, torch.zeros(5, 7, dtype=torch.long))
    with pytest.raises(CnnkitError, match="num_classes"):
        overlay_mask(image, mask, num_classes=2)


def test_dollar_signs_in_class_names_are_text_not_mathtext(tmp_path):
    """A folder named like 'a$b' or '$_x$' must not break (or change) a plot's labels."""
    c = torch.tensor([[2, 1], [0, 3]])
    names = ["cost$", "$_{x}^{"]  # an unbalanced, invalid mathtext if read as math
    fig = plot_confusion(c, names)
    fig.savefig(tmp_path / "c.png")  # would raise ValueError with mathtext
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [r"cost\$", r"\$_{x}^{"]


def test_pr_curves_draw_each_class_without_cocos_missing_points():
    from cnnkit.report.plots import plot_pr_curves

    r = np.linspace(0, 1, 5)
    fig = plot_pr_curves(r, {"cat": [1, 1, 0.5, 0.5, -1], "dog": [1, 0.8, 0.6, 0.4, 0.2]})
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"cat (AP 0.750)", "dog (AP 0.600)"}
    np.testing.assert_allclose(lines["cat (AP 0.750)"].get_xdata(), r[:4])
    np.testing.assert_allclose(lines["dog (AP 0.600)"].get_ydata(), [1, 0.8, 0.6, 0.4, 0.2])
