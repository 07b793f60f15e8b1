"""Batched augmentation on in-memory tensors, and the batch iterator the trainer uses.

torchvision's ``transforms.v2`` draws one set of parameters per call, so a whole batch
would get the same rotation; calling it per image costs a Python loop per sample. Here
every image of a batch gets its own parameters, drawn at once from a dedicated
``torch.Generator`` whose state is saved in checkpoints (so a resumed run draws the same
augmentations it would have drawn), and each op runs once on the whole batch:

1. ``resized_crop``: a random sub-rectangle resized (bilinear) back to the input size;
2. ``crop``: a random ``n_H x n_W`` window of the image zero-padded on every side;
3. ``degrees``, ``shear``, ``scale``, ``translate``, ``fliplr`` and ``elastic``: one
   sampling grid (the affine map, plus the elastic displacement carried through it) and
   one ``grid_sample``;
4. ``color_shift`` and ``pca_color``: one constant added per image and channel, then the
   pixels are clipped to ``[0, 1]``;
5. ``erase``: a random rectangle set to 0.

Every op is checked against its torchvision ``transforms.v2`` counterpart in the tests
(``affine``, ``resized_crop``, ``elastic``, ``erase``, ``hflip``). Images are float
``(N, n_C, n_H, n_W)`` in ``[0, 1]``, before normalization; nothing augmented is stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data.datasets import ImageSet
from cnnkit.errors import CnnkitError

if TYPE_CHECKING:  # data may not import train at runtime (floors)
    from cnnkit.train.config import TrainConfig

__all__ = [
    "Augment",
    "TensorBatches",
    "elastic_sigma",
    "epoch_order",
    "fit_pca",
    "gaussian_blur",
    "preview_grid",
    "shard_batch",
]

#: Random erasing: erased area as a fraction of the image, and its aspect-ratio range
#: (torchvision's ``RandomErasing`` defaults).
ERASE_AREA = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
#: Random-resized crop: aspect-ratio range (torchvision's ``RandomResizedCrop``).
CROP_RATIO = (3 / 4, 4 / 3)
#: Attempts at a rectangle that fits before giving up (torchvision's 10).
ATTEMPTS = 10
#: The settings :meth:`Augment.from_config` reads, in the order of the dataclass.
OPS = (
    "degrees",
    "translate",
    "scale",
    "fliplr",
    "shear",
    "crop",
    "resized_crop",
    "elastic",
    "color_shift",
    "pca_color",
    "erase",
)


def elastic_sigma(n_H: int, n_W: int) -> float:
    """Smoothness of the elastic field: torchvision's sigma 5, smaller on small images.

    A Gaussian kernel of ``int(8 sigma + 1)`` pixels must fit the image (reflect
    padding), so sigma is ``min(5, min(n_H, n_W) / 8)``: 4 at 32x32, 1 at 8x8.

    Args:
        n_H: Image height.
        n_W: Image width.

    Returns:
        The standard deviation of the Gaussian blur, in pixels.
    """
    return min(5.0, min(n_H, n_W) / 8)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` with ElasticTransform's kernel, as two 1-D passes.

    The kernel has ``int(8 sigma + 1)`` taps (made odd) and the borders are reflected,
    as in torchvision's ``ElasticTransform``; the 2-D Gaussian is separable, so a row
    pass and a column pass give the same result (to float rounding) at a fraction of
    the cost (66 instead of 1089 multiplications per pixel at 32x32).

    Args:
        x: Float ``(N, n_C, n_H, n_W)``.
        sigma: Standard deviation in pixels.

    Returns:
        The blurred images, same shape.
    """
    ks = int(8 * sigma + 1)
    ks += 1 - ks % 2  # odd
    t = torch.linspace(-(ks - 1) / 2, (ks - 1) / 2, ks, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, n_C, n_H, n_W = x.shape
    r = ks // 2
    y = F.pad(x.reshape(n * n_C, 1, n_H, n_W), (r, r, r, r), mode="reflect")  # (N*n_C, 1, ...)
    y = F.conv2d(y, k.view(1, 1, 1, ks))  # rows
    y = F.conv2d(y, k.view(1, 1, ks, 1))  # columns
    return y.reshape(n, n_C, n_H, n_W)  # (N*n_C, 1, n_H, n_W) -> (N, n_C, n_H, n_W)


def fit_pca(images: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the 3x3 covariance of RGB pixels, for AlexNet's PCA colour.

    Every pixel of every image is one sample (a 3-vector in ``[0, 1]``); the covariance
    is accumulated in float64 over chunks of images, so any training set fits in memory.

    Args:
        images: uint8 ``(N, 3, n_H, n_W)`` (0-255) or float in ``[0, 1]``.
        chunk: Images per accumulation step.

    Returns:
        ``(eigvals, eigvecs)``: float64 ``(3,)`` largest first, and ``(3, 3)`` whose
        column ``k`` is the eigenvector of ``eigvals[k]``, with its largest-magnitude
        entry positive (a fixed sign).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise CnnkitError(
            f"PCA colour needs RGB images (N, 3, n_H, n_W), got {tuple(images.shape)}; "
            "load the data with channels=3 or set pca_color=0."
        )
    if len(images) == 0:
        raise CnnkitError("PCA colour needs training images to fit, got none.")
    scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
    total = torch.zeros(3, dtype=torch.float64)
    outer = torch.zeros(3, 3, dtype=torch.float64)
    m = 0
    for s in range(0, len(images), chunk):
        part = images[s : s + chunk].to(torch.float64) * scale
        px = part.permute(1, 0, 2, 3).reshape(3, -1)  # (B, 3, n_H, n_W) -> (3, B*n_H*n_W)
        total += px.sum(1)
        outer += px @ px.T
        m += px.shape[1]
    if m < 2:
        raise CnnkitError("PCA colour needs at least 2 training pixels to fit.")
    mean = total / m
    cov = (outer - m * torch.outer(mean, mean)) / (m - 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
    idx = vecs.abs().argmax(0)  # (3,): the largest entry of each column
    sign = torch.sign(vecs[idx, torch.arange(3)])
    return vals, vecs * torch.where(sign == 0, 1.0, sign).to(vecs.dtype)


def _box(
    u: torch.Tensor,
    n_H: int,
    n_W: int,
    area: tuple[float, float],
    ratio: tuple[float, float],
    strict: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random rectangles as torchvision draws them: ``ATTEMPTS`` tries, the first that fits.

    Args:
        u: Uniform ``[0, 1)`` numbers ``(N, ATTEMPTS, 4)``: area, log-ratio, top, left.
        n_H: Image height.
        n_W: Image width.
        area: Range of the area, a fraction of ``n_H * n_W``.
        ratio: Range of the aspect ratio ``w / h`` (drawn uniformly on a log scale).
        strict: The rectangle must be smaller than the image (erasing) rather than at
            most as large (cropping).

    Returns:
        ``(top, left, h, w, ok)``, int64 ``(N,)`` each, and bool ``ok`` (a try fitted).
    """
    a = (area[0] + u[..., 0] * (area[1] - area[0])) * (n_H * n_W)  # (N, ATTEMPTS)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + u[..., 1] * (hi - lo))
    h = torch.round(torch.sqrt(a / r)).long()
    w = torch.round(torch.sqrt(a * r)).long()
    fits = (h >= 1) & (w >= 1) & ((h < n_H) & (w < n_W) if strict else (h <= n_H) & (w <= n_W))
    first = torch.argmax(fits.long(), 1)  # (N,): first fitting try (0 when none)
    pick = first[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    ut, ul = u[..., 2].gather(1, pick)[:, 0], u[..., 3].gather(1, pick)[:, 0]
    top = torch.floor(ut * (n_H - h + 1)).long().clamp(min=0)
    left = torch.floor(ul * (n_W - w + 1)).long().clamp(min=0)
    return top, left, h, w, fits.any(1)


def _vec(v: Any, shape: tuple[int, ...], name: str) -> tuple | None:
    """A tensor, array or nested sequence as nested tuples of floats (hashable, frozen)."""
    if v is None:
        return None
    a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    if a.shape != shape or not np.isfinite(a).all():
        raise CnnkitError(f"{name} must be finite numbers of shape {shape}, got {a.shape}.")
    return tuple(float(t) for t in a) if a.ndim == 1 else tuple(tuple(map(float, r)) for r in a)


@dataclass(frozen=True)
class Augment:
    """Random augmentation, drawn independently for every image of a batch.

    Every field is one op's setting (0: off); their meanings are those of the same keys of
    :class:`cnnkit.train.TrainConfig` and its ``aug=`` presets.

    Attributes:
        degrees: Rotation drawn from ``[-degrees, degrees]``.
        translate: Shift drawn from ``[-translate, translate]`` of the width / height.
        scale: Zoom drawn from ``[1 - scale, 1 + scale]``.
        fliplr: Probability of a left-right mirror (0 for digits and text).
        shear: x-shear angle drawn from ``[-shear, shear]`` degrees: a point ``(x, y)``
            (from the centre, y down) moves to ``(x - tan(angle) y, y)``, as torchvision's
            ``affine(shear=[angle, 0])``.
        crop: Random crop: the image is zero-padded by ``round(crop * n_H)`` rows and
            ``round(crop * n_W)`` columns on each side and an ``n_H x n_W`` window is cut
            at a uniform random integer offset (an exact shift, no interpolation).
        resized_crop: Random-resized crop: a rectangle of area ``[resized_crop, 1]`` of the
            image and aspect ratio ``3/4..4/3`` (log-uniform) is resized back to
            ``n_H x n_W`` (bilinear); 0: off.
        elastic: Local warping: a smooth random displacement field (torchvision's
            ``ElasticTransform``: uniform noise blurred by a Gaussian of
            :func:`elastic_sigma`) rescaled so the largest displacement is ``elastic``
            pixels; 0: off.
        color_shift: Colour shifting: ``uniform(-color_shift, color_shift)`` added to each
            channel of an image (pixels in ``[0, 1]``, clipped afterwards); RGB only.
        pca_color: AlexNet's PCA colour augmentation: ``x += eigvecs @ (alpha * eigvals)``
            with ``alpha ~ N(0, pca_color)`` per image (3 numbers), clipped to ``[0, 1]``.
        erase: Random erasing: probability per image of setting a rectangle (area
            ``0.02..0.33`` of the image, aspect ratio ``0.3..3.3``, torchvision's
            ``RandomErasing``) to 0, i.e. black (it runs before normalization).
        pca_eigvals: The fitted eigenvalues ``(3,)``, largest first (:func:`fit_pca`).
        pca_eigvecs: The fitted eigenvectors ``(3, 3)``, one per column.
    """

    degrees: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    fliplr: float = 0.0
    shear: float = 0.0
    crop: float = 0.0
    resized_crop: float = 0.0
    elastic: float = 0.0
    color_shift: float = 0.0
    pca_color: float = 0.0
    erase: float = 0.0
    pca_eigvals: tuple[float, ...] | None = None
    pca_eigvecs: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        for k in OPS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise CnnkitError(f"{k} must be a number >= 0, got {v!r}.")
        if self.translate > 1 or self.scale >= 1 or self.fliplr > 1:
            raise CnnkitError("translate and fliplr must be <= 1 and scale < 1.")
        if self.shear >= 90:
            raise CnnkitError(f"shear must be below 90 degrees, got {self.shear!r}.")
        for k in ("crop", "resized_crop", "color_shift", "erase"):
            if getattr(self, k) > 1:
                raise CnnkitError(f"{k} must be <= 1, got {getattr(self, k)!r}.")
        object.__setattr__(self, "pca_eigvals", _vec(self.pca_eigvals, (3,), "pca_eigvals"))
        object.__setattr__(self, "pca_eigvecs", _vec(self.pca_eigvecs, (3, 3), "pca_eigvecs"))
        if self.pca_color > 0 and (self.pca_eigvals is None or self.pca_eigvecs is None):
            raise CnnkitError(
                "pca_color needs the eigenvalues and eigenvectors of the training pixels: "
                "build it with Augment.from_config(cfg, train) or pass fit_pca(images)."
            )

    @classmethod
    def from_config(cls, cfg: TrainConfig, train: ImageSet | None = None) -> Augment:
        """The augmentation a training config asks for (``aug=`` preset and op overrides).

        Args:
            cfg: The settings; each op is ``cfg.resolved(op)`` (the given value or the
                preset's).
            train: The in-memory training set: its images fit ``pca_color`` and tell the
                number of channels. None (or any other Dataset): nothing in memory.

        Returns:
            The augmentation (possibly all off: check :attr:`active`).
        """
        ops = {k: float(cfg.resolved(k)) for k in OPS}
        if not isinstance(train, ImageSet):  # a generic Dataset: no images in memory
            train = None
        colour = [k for k in ("pca_color", "color_shift") if ops[k] > 0]
        if colour and train is not None and train.images.shape[1] != 3:
            raise CnnkitError(
                f"{colour[0]}={ops[colour[0]]:g} shifts RGB colours but the images have "
                f"{train.images.shape[1]} channel(s): set {colour[0]}=0 or use aug=none, "
                "default, light or strong."
            )
        if ops["pca_color"] > 0:
            if train is None:
                raise CnnkitError(
                    f"pca_color={ops['pca_color']:g} fits its eigenvectors on training images "
                    "held in memory, and this training set is not an ImageSet: set "
                    "pca_color=0 or load the data with cnnkit.data.load."
                )
            vals, vecs = fit_pca(train.images)
            return cls(**ops, pca_eigvals=vals, pca_eigvecs=vecs)
        return cls(**ops)

    @property
    def active(self) -> bool:
        """Whether any transform is switched on."""
        return any(getattr(self, k) for k in OPS)

    @property
    def _affine(self) -> bool:
        return any((self.degrees, self.translate, self.scale, self.fliplr, self.shear))

    def params(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> dict:
        """Draw every image's parameters for a batch of this shape (only for active ops).

        Args:
            shape: ``(N, n_C, n_H, n_W)``.
            generator: Source of all randomness (its state is part of the checkpoint).

        Returns:
            A dict of per-image tensors, the keys of the active ops:
            ``theta`` ``(N, 2, 3)`` (the affine sampling matrix in ``affine_grid``'s
            coordinates) with ``angle`` and ``shear`` (degrees; the ``angle`` and
            ``shear[0]`` of torchvision's ``affine``), ``zoom``, ``flip`` (bool), ``tx``,
            ``ty`` (grid units, which span 2); ``resized_crop`` and ``erase_box`` ``(N, 4)``
            ``(top, left, h, w)`` (``erase_on`` bool ``(N,)``); ``crop`` ``(N, 2)`` the
            shift ``(dy, dx)``: output pixel ``(y, x)`` is input pixel ``(y + dy, x + dx)``
            (0 outside); ``elastic`` ``(N, n_H, n_W, 2)`` the displacement ``(dx, dy)`` in
            pixels; ``color_shift`` ``(N, n_C)``; ``pca_alpha`` and ``pca_shift`` ``(N, 3)``.
        """
        n, n_C, n_H, n_W = (int(s) for s in shape)
        g = generator
        p: dict[str, torch.Tensor] = {}
        if self._affine:  # the first draw, as before shear existed (bitwise-stable streams)
            u = torch.rand(n, 5, generator=g) * 2 - 1  # (N, 5) in [-1, 1)
            angle = u[:, 0] * (self.degrees * math.pi / 180)
            zoom = 1 + u[:, 1] * self.scale
            flip = torch.where(u[:, 2] * 0.5 + 0.5 < self.fliplr, -1.0, 1.0)
            tx, ty = u[:, 3] * self.translate * 2, u[:, 4] * self.translate * 2  # grid spans 2
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            r = n_H / n_W  # a rotation in pixels, written in affine_grid's [-1, 1] coordinates
            if self.shear:
                sh = (torch.rand(n, generator=g) * 2 - 1) * (self.shear * math.pi / 180)
                k = torch.tan(sh)
                # sampling matrix in pixels: R(angle) @ [[1, k], [0, 1]] @ diag(flip, 1) / zoom
                row0 = [cos * flip, (cos * k - sin) * r, tx]
                row1 = [sin / r * flip, sin * k + cos, ty]
            else:
                sh = torch.zeros(n)
                row0, row1 = [cos * flip, -sin * r, tx], [sin / r * flip, cos, ty]
            p["theta"] = torch.stack([torch.stack(row0, 1), torch.stack(row1, 1)], 1)  # (N, 2, 3)
            # angle counter-clockwise (torchvision's sign), shear as torchvision's shear[0]
            p.update(angle=-angle * 180 / math.pi, shear=sh * 180 / math.pi, zoom=zoom)
            p.update(flip=flip < 0, tx=tx, ty=ty)
        if self.resized_crop:
            u = torch.rand(n, ATTEMPTS, 4, generator=g)
            top, left, h, w, ok = _box(
                u, n_H, n_W, (self.resized_crop, 1.0), CROP_RATIO, strict=False
            )
            whole = torch.tensor([0, 0, n_H, n_W])
            box = torch.stack([top, left, h, w], 1)  # (N, 4)
            p["resized_crop"] = torch.where(ok[:, None], box, whole)
        if self.crop:
            pad = torch.tensor([round(self.crop * n_H), round(self.crop * n_W)])
            u = torch.rand(n, 2, generator=g)
            p["crop"] = torch.floor(u * (2 * pad + 1)).long() - pad  # (N, 2) in [-pad, pad]
        if self.elastic and min(n_H, n_W) >= 2:
            noise = torch.rand(n, 2, n_H, n_W, generator=g) * 2 - 1
            field = gaussian_blur(noise, elastic_sigma(n_H, n_W))  # (N, 2, n_H, n_W)
            longest = field.norm(dim=1).amax(dim=(1, 2)).clamp_min(1e-12)  # (N,)
            d = field * (self.elastic / longest)[:, None, None, None]
            p["elastic"] = d.permute(0, 2, 3, 1)  # (N, 2, n_H, n_W) -> (N, n_H, n_W, 2)
        if self.color_shift:
            p["color_shift"] = (torch.rand(n, n_C, generator=g) * 2 - 1) * self.color_shift
        if self.pca_color:
            alpha = torch.randn(n, 3, generator=g, dtype=torch.float64) * self.pca_color
            vals = torch.tensor(self.pca_eigvals, dtype=torch.float64)
            vecs = torch.tensor(self.pca_eigvecs, dtype=torch.float64)
            p["pca_alpha"] = alpha
            p["pca_shift"] = (alpha * vals) @ vecs.T  # (N, 3): sum_k alpha_k eigval_k eigvec_k
        if self.erase:
            u = torch.rand(n, ATTEMPTS + 1, 4, generator=g)
            top, left, h, w, ok = _box(u[:, 1:], n_H, n_W, ERASE_AREA, ERASE_RATIO, strict=True)
            p["erase_box"] = torch.stack([top, left, h, w], 1)  # (N, 4)
            p["erase_on"] = ok & (u[:, 0, 0] < self.erase)
        return p

    def apply(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """Apply drawn parameters (:meth:`params`) to a float batch ``(N, n_C, n_H, n_W)``.

        Args:
            x: Images in ``[0, 1]`` (float, before normalization).
            p: The parameters, drawn for ``x.shape``.

        Returns:
            The augmented batch, same shape and dtype.
        """
        n, n_C, n_H, n_W = x.shape
        if "resized_crop" in p:
            x = _resized_crop(x, p["resized_crop"].to(x.device))
        if "crop" in p:
            x = _shift(x, p["crop"].to(x.device))
        if "theta" in p or "elastic" in p:
            if "theta" in p:
                theta = p["theta"].to(x.device, x.dtype)
            else:
                theta = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(n, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, n_H, n_W, 2)
            if "elastic" in p:  # out(q) = affine(q + d(q)): d carried through the linear part
                unit = torch.tensor([2 / n_W, 2 / n_H], dtype=x.dtype, device=x.device)
                d = p["elastic"].to(x.device, x.dtype) * unit  # pixels -> grid units
                grid = grid + torch.einsum("nij,nhwj->nhwi", theta[:, :, :2], d)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if "color_shift" in p or "pca_shift" in p:
            if n_C != 3:
                raise CnnkitError(
                    f"color_shift and pca_color shift RGB colours but the images have {n_C} "
                    "channel(s): set them to 0."
                )
            shift = torch.zeros(n, n_C, dtype=torch.float64)
            for k in ("color_shift", "pca_shift"):
                if k in p:
                    shift = shift + p[k].to(torch.float64)
            x = (x + shift.to(x.device, x.dtype)[:, :, None, None]).clamp_(0.0, 1.0)
        if "erase_box" in p:
            box, on = p["erase_box"].to(x.device), p["erase_on"].to(x.device)
            rows = torch.arange(n_H, device=x.device)[None, :]  # (1, n_H)
            cols = torch.arange(n_W, device=x.device)[None, :]
            top, left, h, w = box.unbind(1)
            in_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (N, n_H)
            in_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (N, n_W)
            mask = in_r[:, :, None] & in_c[:, None, :] & on[:, None, None]  # (N, n_H, n_W)
            x = x.masked_fill(mask[:, None], 0.0)  # (N, n_H, n_W) -> (N, 1, n_H, n_W)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a float batch ``(N, n_C, n_H, n_W)``; borders are filled with 0.

        Args:
            x: Images in ``[0, 1]`` (float, before normalization).
            generator: Source of randomness (its state is part of the checkpoint); the
                global RNG is never used.

        Returns:
            The augmented batch, same shape and dtype.
        """
        if not self.active:
            return x
        return self.apply(x, self.params(x.shape, generator))


def _shift(x: torch.Tensor, dyx: torch.Tensor) -> torch.Tensor:
    """Shift every image by whole pixels: ``out[y, x] = in[y + dy, x + dx]``, 0 outside."""
    n, _, n_H, n_W = x.shape
    pad_H, pad_W = int(dyx[:, 0].abs().max()), int(dyx[:, 1].abs().max())
    padded = F.pad(x, (pad_W, pad_W, pad_H, pad_H))
    rows = pad_H + dyx[:, :1] + torch.arange(n_H, device=x.device)  # (N, n_H)
    cols = pad_W + dyx[:, 1:] + torch.arange(n_W, device=x.device)  # (N, n_W)
    b = torch.arange(n, device=x.device)[:, None, None]
    out = padded[b, :, rows[:, :, None], cols[:, None, :]]  # (N, n_H, n_W, n_C)
    return out.permute(0, 3, 1, 2).contiguous()  # (N, n_H, n_W, n_C) -> (N, n_C, n_H, n_W)


def _axis(start: torch.Tensor, size: torch.Tensor, n_out: int) -> tuple:
    """Bilinear source indices and weights of resizing ``[start, start + size)`` to ``n_out``.

    The rule of ``F.interpolate(mode="bilinear", align_corners=False)`` (and of
    torchvision's ``resized_crop``, which only upsamples here), per image.

    Returns:
        ``(i0, i1, w1)``, each ``(N, n_out)``: the two source indices and the weight of ``i1``.
    """
    scale = size.float() / n_out  # (N,)
    o = torch.arange(n_out, dtype=torch.float32, device=size.device)
    src = ((o[None, :] + 0.5) * scale[:, None] - 0.5).clamp_min(0)  # (N, n_out), crop-relative
    i0 = src.floor().long()
    w1 = src - i0
    i1 = torch.minimum(i0 + 1, (size - 1)[:, None])
    i0 = torch.minimum(i0, (size - 1)[:, None])
    return start[:, None] + i0, start[:, None] + i1, w1


def _resized_crop(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Resize each image's ``(top, left, h, w)`` rectangle to the full size (bilinear)."""
    n, n_C, n_H, n_W = x.shape
    top, left, h, w = box.unbind(1)
    c0, c1, wc = _axis(left, w, n_W)  # (N, n_W)
    r0, r1, wr = _axis(top, h, n_H)  # (N, n_H)
    wc, wr = wc.to(x.dtype), wr.to(x.dtype)

    def cols(i: torch.Tensor) -> torch.Tensor:
        return x.gather(3, i[:, None, None, :].expand(n, n_C, n_H, n_W))

    xc = cols(c0) * (1 - wc)[:, None, None, :] + cols(c1) * wc[:, None, None, :]

    def rows(i: torch.Tensor) -> torch.Tensor:
        return xc.gather(2, i[:, None, :, None].expand(n, n_C, n_H, n_W))

    return rows(r0) * (1 - wr)[:, None, :, None] + rows(r1) * wr[:, None, :, None]


def preview_grid(
    images: torch.Tensor, augment: Augment, k: int = 5, seed: int = 0, zoom: int | None = None
) -> np.ndarray:
    """A picture of augmentation: one row per image, the original then ``k`` augmented copies.

    Column ``j`` augments all the rows at once with a generator seeded by ``seed``, so
    the same seed gives the same picture, byte for byte.

    Args:
        images: uint8 ``(n, n_C, n_H, n_W)``, ``n_C`` 1 or 3.
        augment: The augmentation.
        k: Augmented copies per image.
        seed: Seed of the augmentation.
        zoom: Integer upscale of every tile (nearest); None: up to about 64 pixels.

    Returns:
        uint8 ``(height, width, 3)``: tiles separated by 2-pixel grey lines.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CnnkitError(
            f"preview_grid wants uint8 (n, 1 or 3, n_H, n_W) images, got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    n, _, n_H, n_W = images.shape
    z = zoom or max(1, math.ceil(64 / max(n_H, n_W)))
    g = torch.Generator().manual_seed(int(seed))
    x = images.float() / 255
    cols = [x] + [augment(x, g) for _ in range(int(k))]
    tiles = torch.stack(cols, 1)  # (n, 1 + k, n_C, n_H, n_W)
    tiles = (tiles.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, -1, 3, -1, -1)
    tiles = tiles.repeat_interleave(z, 3).repeat_interleave(z, 4)  # nearest upscale
    gap = 2
    t_H, t_W = n_H * z + gap, n_W * z + gap
    out = torch.full((n * t_H + gap, (1 + int(k)) * t_W + gap, 3), 128, dtype=torch.uint8)
    for i in range(n):
        for j in range(1 + int(k)):
            y, xx = gap + i * t_H, gap + j * t_W
            out[y : y + n_H * z, xx : xx + n_W * z] = tiles[i, j].permute(1, 2, 0)  # CHW -> HWC
    return out.numpy()


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The order of the examples in one epoch: a permutation fixed by ``(seed, epoch)``.

    Deriving it from the epoch (instead of a running generator) lets a resumed run
    rebuild any epoch's order, and skip the batches it already trained on.

    Args:
        n: Number of examples.
        seed: Run seed.
        epoch: Epoch index (0-based).
        shuffle: False gives ``0..n-1``.

    Returns:
        int64 indices ``(n,)``.
    """
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return torch.randperm(n, generator=g)


def shard_batch(idx: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s part of a global mini-batch: examples ``rank, rank + N, rank + 2N, ...``.

    Over an epoch every process sees a disjoint part of the same seeded permutation (what
    ``DistributedSampler`` with ``set_epoch`` gives), and together the processes train on
    exactly the mini-batches one process would, with no padding by repeated examples. A
    part that would be empty (a last batch with fewer examples than processes) holds the
    batch's first example instead; the trainer weights it 0.

    Args:
        idx: Indices of the global mini-batch.
        rank: This process (0-based).
        world_size: Number of processes.

    Returns:
        The indices process ``rank`` trains on (``idx`` itself for one process).
    """
    if world_size == 1:
        return idx
    part = idx[rank::world_size]
    return part if len(part) else idx[:1]


class TensorBatches:
    """Batches straight from an :class:`ImageSet` in memory: no per-sample Python work.

    Args:
        data: The images.
        batch: Batch size.
        shuffle: Shuffle each epoch (train) or keep the order (evaluation).
        seed: Seed of the order.
        augment: Augmentation for training, or None.
        drop_last: Drop a last, smaller batch.
        rank: With several processes: this one (each takes its :func:`shard_batch`).
        world_size: Number of processes; ``batch`` is the global mini-batch of all of them.
    """

    def __init__(
        self,
        data: ImageSet,
        batch: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.batch = int(batch)
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment if augment is not None and augment.active else None
        self.drop_last = drop_last and len(data) > self.batch
        p = data.preprocess
        self._mean = torch.tensor(p.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(p.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch if self.drop_last else math.ceil(n / self.batch)

    def epoch(
        self, epoch: int = 0, start: int = 0, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of one epoch, from batch ``start`` on.

        Args:
            epoch: Epoch index (fixes the order).
            start: Batches to skip (already trained on before a resume).
            generator: Augmentation randomness.

        Yields:
            Normalized float32 ``(B, n_C, n_H, n_W)`` images and their labels.
        """
        order = epoch_order(len(self.data), self.seed, epoch, self.shuffle)
        images, labels = self.data.images, self.data.labels
        for b in range(start, len(self)):
            idx = shard_batch(
                order[b * self.batch : (b + 1) * self.batch], self.rank, self.world_size
            )
            x = images[idx].float().mul_(1.0 / 255.0)
            if self.augment is not None:
                x = self.augment(x, generator if generator is not None else torch.default_generator)
            yield x.sub_(self._mean).mul_(self._inv_std), labels[idx]
