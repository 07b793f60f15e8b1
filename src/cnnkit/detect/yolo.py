"""YOLO (v2-style, anchor boxes) as the course teaches it.

The image is cut into an ``S x S`` grid; each cell has ``B`` anchor boxes and predicts,
for each, ``5 + C`` numbers: ``t_x, t_y`` (the box centre inside the cell, through a
sigmoid), ``t_w, t_h`` (the size, ``anchor * exp(t)``), the objectness ``p_c`` (through
a sigmoid) and ``C`` class scores (a softmax). The output volume is
``S x S x B x (5 + C)`` (the course's 19 x 19 x 5 x 85).

Training targets follow the course's rule: an object belongs to the cell holding its
midpoint, and to the anchor whose *shape* has the highest IoU with the object's box.
Anchors come from k-means over the training boxes' widths and heights with the
distance ``1 - IoU`` (YOLOv2, Redmon and Farhadi 2017), so big boxes do not dominate.

Sizes are fractions of the image (``0..1``) in this module; :func:`decode` returns
centres and sizes in those units for :func:`cnnkit.detect.postprocess.yolo_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.blocks.conv import ConvBNAct
from cnnkit.errors import CnnkitError

__all__ = [
    "YOLO",
    "YoloLoss",
    "decode",
    "encode_targets",
    "kmeans_anchors",
    "shape_iou",
    "tiny_backbone",
]


def shape_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of box shapes placed at the same centre: the anchor-matching IoU.

    Args:
        wh1: ``(N, 2)`` widths and heights.
        wh2: ``(M, 2)`` widths and heights.

    Returns:
        ``(N, M)``: ``min(w) * min(h) / (w1 h1 + w2 h2 - min(w) * min(h))``.
    """
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(
        wh1[:, None, 1], wh2[None, :, 1]
    )
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter
    return inter / union.clamp_min(1e-12)


def kmeans_anchors(
    wh: torch.Tensor, k: int = 5, *, seed: int = 0, iters: int = 100
) -> torch.Tensor:
    """Anchor shapes by k-means over box widths and heights with distance ``1 - IoU``.

    Args:
        wh: ``(N, 2)`` box widths and heights (any unit; the anchors come in the same).
        k: Number of anchors ``B``.
        seed: Seed of the initial centres (k-means++ on the ``1 - IoU`` distance).
        iters: Most Lloyd iterations (stops earlier once the assignment is stable).

    Returns:
        ``(k, 2)`` anchors, sorted by area (smallest first). Each centre is the median of
        its cluster's widths and heights (robust to a few huge boxes).

    Raises:
        CnnkitError: With fewer boxes than anchors, or non-positive sizes.
    """
    wh = torch.as_tensor(wh, dtype=torch.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise CnnkitError(f"kmeans_anchors wants (N, 2) widths and heights, got {tuple(wh.shape)}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CnnkitError(f"the number of anchors must be a positive integer, got {k!r}.")
    if len(wh) < k:
        raise CnnkitError(f"{len(wh)} boxes cannot make {k} anchors; use anchors <= {len(wh)}.")
    if not bool((wh > 0).all()):
        raise CnnkitError("every box needs a positive width and height to cluster anchors.")
    g = torch.Generator().manual_seed(int(seed))
    centres = wh[torch.randint(len(wh), (1,), generator=g)]
    while len(centres) < k:  # k-means++: far boxes (in 1 - IoU) are likelier next centres
        d = (1 - shape_iou(wh, centres)).min(1).values
        p = d / d.sum() if float(d.sum()) > 0 else torch.full_like(d, 1 / len(d))
        centres = torch.cat([centres, wh[torch.multinomial(p, 1, generator=g)]])
    assign = None
    for _ in range(int(iters)):
        new = shape_iou(wh, centres).argmax(1)  # nearest = highest IoU
        if assign is not None and bool((new == assign).all()):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = members.median(0).values
    order = torch.argsort(centres[:, 0] * centres[:, 1])
    return centres[order].float()


def encode_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    S: int,
    anchors: torch.Tensor,
    num_classes: int,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """One image's training target volume ``(S, S, B, 5 + C)``.

    For each object: the cell ``(i, j)`` holding its midpoint, the anchor ``b`` whose
    shape has the highest IoU with the box; that slot gets ``t_x, t_y`` (the midpoint's
    offset inside the cell, 0..1), ``log(w / anchor_w), log(h / anchor_h)``, ``p_c = 1``
    and the one-hot class. Two objects in one slot: the later one (in file order) wins,
    as in the course's encoding. Every other slot is background (all zeros).

    Args:
        boxes: ``(K, 4)`` absolute ``xyxy`` boxes.
        labels: ``(K,)`` class indices.
        S: Grid size.
        anchors: ``(B, 2)`` anchor widths and heights as fractions of the image.
        num_classes: ``C``.
        image_size: ``(n_H, n_W)`` of the image the boxes are in.

    Returns:
        float32 ``(S, S, B, 5 + C)``: channels ``t_x, t_y, t_w, t_h, p_c, c_1..c_C``.
    """
    B = len(anchors)
    n_H, n_W = image_size
    y = torch.zeros(S, S, B, 5 + num_classes)
    if len(boxes) == 0:
        return y
    b = boxes.float()
    cx = (b[:, 0] + b[:, 2]) / 2 / n_W
    cy = (b[:, 1] + b[:, 3]) / 2 / n_H
    w = ((b[:, 2] - b[:, 0]) / n_W).clamp_min(1e-6)
    h = ((b[:, 3] - b[:, 1]) / n_H).clamp_min(1e-6)
    col = (cx * S).floor().clamp(0, S - 1).long()
    row = (cy * S).floor().clamp(0, S - 1).long()
    best = shape_iou(torch.stack([w, h], 1), anchors.float()).argmax(1)
    for k in range(len(b)):
        i, j, a = int(row[k]), int(col[k]), int(best[k])
        y[i, j, a, :] = 0
        y[i, j, a, 0] = cx[k] * S - j
        y[i, j, a, 1] = cy[k] * S - i
        y[i, j, a, 2] = torch.log(w[k] / anchors[a, 0])
        y[i, j, a, 3] = torch.log(h[k] / anchors[a, 1])
        y[i, j, a, 4] = 1.0
        y[i, j, a, 5 + int(labels[k])] = 1.0
    return y


def decode(
    outputs: torch.Tensor, anchors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs to the course's ``(box_xy, box_wh, box_confidence, box_class_probs)``.

    ``b_x = (j + sigmoid(t_x)) / S``, ``b_y = (i + sigmoid(t_y)) / S``,
    ``b_w = anchor_w * exp(t_w)``, ``b_h = anchor_h * exp(t_h)``,
    ``p_c = sigmoid(t_o)``, class probabilities ``softmax(t_c)``.

    Args:
        outputs: ``(N, S, S, B, 5 + C)``.
        anchors: ``(B, 2)`` as fractions of the image.

    Returns:
        ``box_xy (N, S, S, B, 2)`` and ``box_wh (N, S, S, B, 2)`` in fractions of the
        image, ``box_confidence (N, S, S, B, 1)``, ``box_class_probs (N, S, S, B, C)``.
    """
    _, S, S2, _, _ = outputs.shape  # (N, S, S, B, 5 + C)
    j = torch.arange(S2, dtype=outputs.dtype, device=outputs.device).view(1, 1, S2, 1)
    i = torch.arange(S, dtype=outputs.dtype, device=outputs.device).view(1, S, 1, 1)
    bx = (j + torch.sigmoid(outputs[..., 0])) / S2
    by = (i + torch.sigmoid(outputs[..., 1])) / S
    a = anchors.to(outputs.dtype).to(outputs.device)
    bw = a[:, 0] * torch.exp(outputs[..., 2].clamp(max=10))
    bh = a[:, 1] * torch.exp(outputs[..., 3].clamp(max=10))
    box_xy = torch.stack([bx, by], -1)
    box_wh = torch.stack([bw, bh], -1)
    conf = torch.sigmoid(outputs[..., 4:5])
    probs = torch.softmax(outputs[..., 5:], -1)
    return box_xy, box_wh, conf, probs


@dataclass
class YoloLoss:
    """The YOLO loss over the grid, summed over slots and averaged over images.

    ``lambda_coord * [(sigmoid(t_xy) - xy)^2 + (t_wh - wh)^2]`` and the class
    cross-entropy for the slots holding an object; the objectness logistic loss for
    every slot, weighted ``lambda_noobj`` for the empty ones.

    Attributes:
        lambda_coord: Weight of the box terms (5 in YOLO).
        lambda_noobj: Weight of the objectness loss of empty slots (0.5 in YOLO).
    """

    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the summed loss.

        Args:
            outputs: ``(N, S, S, B, 5 + C)`` raw outputs.
            targets: ``(N, S, S, B, 5 + C)`` from :func:`encode_targets`.

        Returns:
            A scalar.
        """
        out, t = outputs.float(), targets.float()
        obj = t[..., 4] > 0.5  # (N, S, S, B)
        n = max(out.shape[0], 1)
        xy = (torch.sigmoid(out[..., 0:2]) - t[..., 0:2]).pow(2).sum(-1)
        wh = (out[..., 2:4] - t[..., 2:4]).pow(2).sum(-1)
        coord = self.lambda_coord * (xy + wh)[obj].sum()
        bce = F.binary_cross_entropy_with_logits(out[..., 4], t[..., 4], reduction="none")
        objness = bce[obj].sum() + self.lambda_noobj * bce[~obj].sum()
        cls = torch.zeros((), device=out.device)
        if bool(obj.any()):
            cls = F.cross_entropy(out[obj][:, 5:], t[obj][:, 5:].argmax(-1), reduction="sum")
        return (coord + objness + cls) / n


def tiny_backbone(in_channels: int = 3, width: int = 16, stride: int = 8) -> nn.Sequential:
    """A small Darknet-like backbone: 3x3 conv-BN-leaky ReLU, max-pool halving, repeated.

    Args:
        in_channels: ``n_C`` of the images.
        width: Filters of the first conv (doubled after every pool, at most 16x).
        stride: Total down-sampling (a power of two): the grid is ``n_H / stride``.

    Returns:
        The backbone; its ``out_channels`` attribute holds its last ``n_C``.
    """
    if stride < 1 or stride & (stride - 1):
        raise CnnkitError(f"stride must be a power of two, got {stride!r}; e.g. stride=8.")
    layers: list[nn.Module] = []
    c_in, c = in_channels, width
    for _ in range(stride.bit_length() - 1):
        layers += [ConvBNAct(c_in, c, 3, act="leaky_relu"), nn.MaxPool2d(2)]
        c_in, c = c, min(2 * c, 16 * width)
    layers += [ConvBNAct(c_in, c, 3, act="leaky_relu"), ConvBNAct(c, c, 3, act="leaky_relu")]
    net = nn.Sequential(*layers)
    net.out_channels = c  # type: ignore[assignment]
    return net


class YOLO(nn.Module):
    """A backbone and a 1x1 convolution giving ``S x S x B x (5 + C)``.

    Args:
        num_classes: ``C``.
        anchors: ``(B, 2)`` anchor widths and heights as fractions of the image.
        backbone: Any module mapping images to ``(N, n_C, S, S)`` with an
            ``out_channels`` attribute (default :func:`tiny_backbone`).
        in_channels: ``n_C`` of the images (for the default backbone).
    """

    def __init__(
        self,
        num_classes: int,
        anchors: torch.Tensor | Sequence[Sequence[float]],
        backbone: nn.Module | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        a = torch.as_tensor(anchors, dtype=torch.float32)
        if a.ndim != 2 or a.shape[1] != 2 or not bool((a > 0).all()):
            raise CnnkitError(f"anchors must be (B, 2) positive sizes, got {tuple(a.shape)}.")
        self.num_classes = int(num_classes)
        self.register_buffer("anchors", a)
        self.backbone = backbone if backbone is not None else tiny_backbone(in_channels)
        c = int(getattr(self.backbone, "out_channels", 0))
        if c <= 0:
            raise CnnkitError("the backbone needs an out_channels attribute (its last n_C).")
        self.head = nn.Conv2d(c, len(a) * (5 + self.num_classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, n_C, n_H, n_W)`` -> raw outputs ``(N, S, S, B, 5 + C)``."""
        z = self.head(self.backbone(x))  # (N, B*(5+C), S, S)
        N, _, S, S2 = z.shape
        B = len(self.anchors)
        z = z.view(N, B, 5 + self.num_classes, S, S2)  # (N, B*(5+C), S, S) -> (N, B, 5+C, S, S)
        return z.permute(0, 3, 4, 1, 2)  # -> (N, S, S, B, 5+C)
