"""Neural style transfer: find the image G that minimises J(G) by descent on its pixels.

``J(G) = alpha * J_content(C, G) + beta * J_style(S, G)`` (:mod:`cnnkit.style.costs`),
with the activations of a frozen feature network (:mod:`cnnkit.style.features`, VGG-19
by default). The network's weights never change: the only thing optimised is ``G``.

The loop:

1. read C and S, resize both to ``size x size`` (as the course exercise does);
2. compute the targets once: ``a_C`` at the content layer, ``a_S`` at the style layers;
3. start G from C plus uniform noise in ``[-noise, noise]`` (the course) or from noise;
4. per step: the costs, their gradient with respect to G's pixels, and an Adam (the
   course) or L-BFGS step.

The pixels stay in ``[0, 1]`` without touching the function the optimiser calls: the
well-known PyTorch tutorial clamps inside L-BFGS's closure, so the line search
evaluates one image and steps from another, and the loss can blow up. Here the
closure only evaluates ``J`` and its gradient. Adam's pixels are put back into
``[0, 1]`` after each step; L-BFGS optimises ``z`` with pixels ``sigmoid(z)``, always
valid, since a projection between its steps breaks the curvature pairs it keeps.

``preserve_color=True`` transfers on luminance only (Gatys et al. 2016, "Preserving
color in neural artistic style transfer"): C and S become their luminance Y (YIQ),
the style's Y matched to the content's mean and spread, the transfer runs on those
grey images, and G's Y is put back with C's own chroma (I, Q).
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.style.costs import (
    CONTENT_NORMALIZATIONS,
    _check_weight,
    content_cost,
    style_cost,
    total_variation,
)

__all__ = [
    "CONTENT_LAYER",
    "OPTIMIZERS",
    "STYLE_LAYERS",
    "StyleResult",
    "load_image",
    "save_image",
    "transfer",
]

#: The course's content layer: a deep one, so G keeps C's objects, not its pixels.
CONTENT_LAYER = "block5_conv4"
#: The course's style layers: the first convolution of each block, 0.2 each.
STYLE_LAYERS = {f"block{b}_conv1": 0.2 for b in range(1, 6)}
OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise")


def load_image(path: str | os.PathLike | np.ndarray, size: int) -> torch.Tensor:
    """An image file (or an ``(H, W, 3)`` uint8 array) as ``(1, 3, size, size)`` in ``[0, 1]``.

    Args:
        path: The image file, or the pixels.
        size: The side after resizing (bilinear, antialiased).

    Returns:
        The image tensor.

    Raises:
        CnnkitError: A missing or undecodable file.
    """
    from PIL import Image

    from cnnkit.data.images import ImageDecodeError, decode_image

    if isinstance(path, np.ndarray):
        img = Image.fromarray(np.asarray(path, np.uint8)).convert("RGB")
    else:
        p = Path(path)
        if not p.is_file():
            raise CnnkitError(f"image {str(p)!r} does not exist; give the path of an image file.")
        try:  # the project's one decoder: formats, size limit, EXIF, alpha, 16-bit
            img = Image.fromarray(decode_image(p, 3))
        except ImageDecodeError as e:
            raise CnnkitError(
                f"image {str(p)!r} cannot be decoded ({e.reason}); give a PNG or JPEG."
            ) from None
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0)  # (H, W, 3)
    return x.permute(2, 0, 1)[None].contiguous()  # (H, W, 3) -> (1, 3, H, W)


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``(1, 3, H, W)`` or ``(3, H, W)`` pixels in ``[0, 1]`` as a PNG.

    Args:
        x: The image.
        path: The file to write.

    Returns:
        The path.
    """
    from PIL import Image

    img = x.detach().reshape(3, *x.shape[-2:]).clamp(0, 1)  # (1, 3, H, W) -> (3, H, W)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (3, H, W) -> (H, W, 3)
    p = Path(path)
    Image.fromarray(arr).save(p, format="PNG")
    return p


# RGB <-> YIQ (NTSC): Y is the luminance, I and Q the chroma.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _YIQ, x)  # (1, 3, H, W) -> (1, 3, H, W)


def _from_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_YIQ), x)


def _luminance(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """``x``'s luminance as a 3-channel grey image (matched to ``like``'s mean and std)."""
    y = _to_yiq(x)[:, :1]  # (1, 1, H, W)
    if like is not None:
        ref = _to_yiq(like)[:, :1]
        y = (y - y.mean()) / y.std().clamp_min(1e-6) * ref.std() + ref.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()  # (1, 1, H, W) -> (1, 3, H, W)


@dataclass
class StyleResult:
    """What :func:`transfer` returns.

    Attributes:
        image: G, ``(1, 3, size, size)`` in ``[0, 1]``.
        history: One row per step: ``step``, ``J``, ``J_content``, ``J_style`` (and
            ``J_tv`` when used), the costs at the pixels before that step.
        content: C as used (resized).
        style: S as used (resized).
        seconds: Wall time of the optimisation.
        pretrained: Whether the feature network had real weights.
        files: The files written (final image, panel, intermediate images).
    """

    image: torch.Tensor
    history: list[dict[str, float]]
    content: torch.Tensor
    style: torch.Tensor
    seconds: float
    pretrained: bool
    files: list[Path] = field(default_factory=list)


def _positive(name: str, v: Any, integer: bool = False, zero_ok: bool = False) -> None:
    """Refuse ``v`` unless it is a finite number > 0 (>= 0 with ``zero_ok``).

    Args:
        name: The setting (for the message).
        v: Its value.
        integer: Require a whole number.
        zero_ok: Allow 0.

    Raises:
        CnnkitError: One sentence naming the setting.
    """
    bad = isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
    if integer:
        bad = bad or not isinstance(v, numbers.Integral)
    if bad or v < 0 or (v == 0 and not zero_ok):
        kind = "a whole number" if integer else "a number"
        bound = ">= 0" if zero_ok else "> 0"
        raise CnnkitError(f"{name} must be {kind} {bound}, got {v!r}.")


def _as_image(x: Any, name: str, size: int) -> torch.Tensor:
    """C or S as a float32 ``(1, 3, size, size)`` tensor in ``[0, 1]``.

    Args:
        x: A file, an ``(H, W, 3)`` uint8 array or a ``(1, 3, H, W)`` tensor in [0, 1].
        name: ``content`` or ``style`` (for messages).
        size: The side.

    Returns:
        The image.

    Raises:
        CnnkitError: A missing or undecodable file, or a tensor of another shape.
    """
    if not isinstance(x, torch.Tensor):
        return load_image(x, size)
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise CnnkitError(f"{name} must be a (1, 3, H, W) image, got {tuple(x.shape)}.")
    x = x.detach().float()
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.clamp(0, 1)


def transfer(
    content: str | os.PathLike | np.ndarray | torch.Tensor,
    style: str | os.PathLike | np.ndarray | torch.Tensor,
    *,
    size: int = 128,
    steps: int = 200,
    optimizer: str = "adam",
    lr: float | None = None,
    alpha: float = 10.0,
    beta: float = 40.0,
    content_layer: str = CONTENT_LAYER,
    style_layers: Mapping[str, float] | Sequence[str] | None = None,
    normalization: str = "exercise",
    model: str = "vgg19",
    weights: str | None = None,
    init: str = "content",
    noise: float = 0.25,
    tv: float = 0.0,
    preserve_color: bool = False,
    every: int = 0,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: int = 1,
    features: Any = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> StyleResult:
    """Generate G with the content of ``content`` and the style of ``style``.

    Args:
        content: C: an image file, an ``(H, W, 3)`` uint8 array, or a ``(1, 3, H, W)``
            tensor in ``[0, 1]``.
        style: S, the same forms.
        size: G is ``size x size`` (C and S are resized to it).
        steps: Optimiser steps (L-BFGS: iterations, each with its line search).
        optimizer: ``adam`` (the course) or ``lbfgs``.
        lr: Adam's step on ``[0, 1]`` pixels (default 0.02), L-BFGS's (default 1).
        alpha: Weight of the content cost (> 0).
        beta: Weight of the style cost (> 0).
        content_layer: The layer ``a_C`` and ``a_G`` are read from.
        style_layers: Layer -> lambda[l], or a list of layers (equal weights summing to
            1); default the first convolution of each of the five blocks, 0.2 each.
        normalization: The content cost's: ``exercise`` (``1/(4 n_H n_W n_C)``) or
            ``lecture`` (``1/2``).
        model: The feature network (a zoo model; VGG-19 by default).
        weights: Its weights: a ``.pth`` / ``.safetensors`` file in torchvision's format,
            or a torchvision weights name (online); None runs with random weights.
        init: ``content`` (C plus noise, the course) or ``noise``.
        noise: Half-width of the uniform noise added to C (``init=content``).
        tv: Weight of the total-variation term (0: none).
        preserve_color: Transfer on luminance only and keep C's colours.
        every: Write G every this many steps (0: never) next to ``out``.
        out: The final image's file (a PNG; the panel goes to ``<stem>_panel.png``);
            None writes nothing.
        seed: Seed of the noise and of random feature weights (when none are given).
        verbose: 0 silent, 1 a progress bar with J, J_content, J_style.
        features: A :class:`~cnnkit.style.features.StyleFeatures` to reuse (default:
            built from ``model`` and ``weights``).
        callback: ``callback(step, G)`` after every step.

    Returns:
        A :class:`StyleResult`.

    Raises:
        CnnkitError: On a bad setting, a missing or undecodable image, or an unknown
            layer (before any optimisation).
    """
    from cnnkit.style.features import build_features

    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", str(optimizer), OPTIMIZERS)
    if init not in INITS:
        raise unknown_name("init", str(init), INITS)
    _positive("alpha", alpha)
    _positive("beta", beta)
    _positive("size", size, integer=True)
    _positive("steps", steps, integer=True)
    _positive("noise", noise, zero_ok=True)
    _positive("tv", tv, zero_ok=True)
    _positive("every", every, integer=True, zero_ok=True)
    _positive("seed", seed, integer=True, zero_ok=True)
    if lr is not None:
        _positive("lr", lr)
    if size < 16:
        raise CnnkitError(f"size must be at least 16 pixels, got {size}; e.g. size=128.")
    if normalization not in CONTENT_NORMALIZATIONS:
        raise unknown_name("normalization", str(normalization), CONTENT_NORMALIZATIONS)
    if style_layers is None:
        style_layers = dict(STYLE_LAYERS)
    elif not isinstance(style_layers, Mapping):
        names = [style_layers] if isinstance(style_layers, str) else list(style_layers)
        if len(set(names)) != len(names):
            raise CnnkitError(f"style_layers names a layer twice ({names}); keep one of each.")
        style_layers = {str(n): 1.0 / len(names) for n in names} if names else {}
    style_layers = dict(style_layers)
    if not style_layers:
        raise CnnkitError("style_layers is empty; name at least one layer, e.g. block1_conv1.")
    for name, w in style_layers.items():
        _check_weight(f"the weight of style layer {name!r}", w, False, f"{name}:0.2")
    if not sum(style_layers.values()) > 0:
        raise CnnkitError("the style layers' weights are all 0; give one a weight above 0.")
    if out is not None:
        o = Path(out)
        if o.suffix.lower() != ".png":
            raise CnnkitError(f"out={str(out)!r} must be a .png file; e.g. out=styled.png.")
        if not o.parent.is_dir() or o.is_dir():
            raise CnnkitError(
                f"out={str(out)!r} is not a file in an existing folder; e.g. out=styled.png."
            )
    C, S = (_as_image(x, name, size) for name, x in (("content", content), ("style", style)))
    with torch.random.fork_rng():  # random weights drawn from the seed, the caller's RNG kept
        torch.manual_seed(seed)
        net = features if features is not None else build_features(model, weights)
    net.check([content_layer, *style_layers])  # unknown layers: one sentence, before any work
    if verbose and not net.pretrained:
        print(
            f"note: {net.model} has random weights (no weights= given): random multi-scale "
            "features give texture-like results; quality needs pretrained weights "
            "(weights=FILE.pth or .safetensors)."
        )
    original, style_in = C, S
    if preserve_color:
        C, S = _luminance(C), _luminance(S, like=C)

    with torch.no_grad():
        a_C = net(C, [content_layer])[content_layer]
        a_S = net(S, list(style_layers))

    g = torch.Generator().manual_seed(seed)
    if init == "content":
        G0 = C + (torch.rand(C.shape, generator=g) * 2 - 1) * noise
    else:
        G0 = torch.rand(C.shape, generator=g)
    # Adam (the course): the pixels themselves, put back into [0, 1] after each step.
    # L-BFGS: the pixels are sigmoid(z) and z is optimised, so they are always valid; a
    # projection after each step would break the curvature pairs L-BFGS keeps (measured:
    # its line search stops finding descent after a few steps)
    lbfgs = optimizer == "lbfgs"
    if lbfgs:
        z = torch.logit(G0.clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    else:
        z = G0.clamp(0, 1).requires_grad_(True)

    def pixels() -> torch.Tensor:
        return torch.sigmoid(z) if lbfgs else z

    layers = [content_layer, *[n for n in style_layers if n != content_layer]]

    def costs(x: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = net(x, layers)
        J_content = content_cost(a_C, acts[content_layer], normalization)
        J_style = style_cost(a_S, {n: acts[n] for n in style_layers}, style_layers)
        J = alpha * J_content + beta * J_style
        row = {"J_content": J_content, "J_style": J_style}
        if tv:
            J_tv = total_variation(x) / x.numel()
            J = J + tv * J_tv
            row["J_tv"] = J_tv
        row["J"] = J
        return row

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([z], lr=lr or 0.02)
    else:
        # no early stop: J is small (a mean over activations), so its pixel gradients fall
        # under torch's default tolerance_grad (1e-7) within a few steps and L-BFGS would
        # quietly stop moving; ``steps`` decides when to stop
        opt = torch.optim.LBFGS(
            [z],
            lr=lr or 1.0,
            max_iter=1,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )
    history: list[dict[str, float]] = []
    files: list[Path] = []
    stem = Path(out).with_suffix("") if out is not None else None
    bar = _Bar(steps, verbose)
    t0 = time.perf_counter()
    first: dict[str, float] = {}  # the costs at the pixels a step starts from
    with torch.no_grad():
        J0 = float(costs(pixels())["J"])
    # the optimiser sees J / J(G0): the same minimiser, gradients of order 1 (J itself is
    # a mean over activations, often 1e-2 or less, and L-BFGS's first step and line
    # search are not scale-free)
    scale = 1.0 / J0 if lbfgs and J0 > 0 and math.isfinite(J0) else 1.0

    last: dict[str, Any] = {}  # the latest evaluation: L-BFGS starts each step with one

    def closure() -> torch.Tensor:
        """J and its gradient at the current pixels (nothing else: no clamping here).

        L-BFGS (one iteration per step) begins each step by evaluating J where the
        previous step's line search ended: the same ``z``, so the stored value and
        gradient are given back instead of a second forward and backward pass.
        """
        if lbfgs and last and torch.equal(last["z"], z.detach()):
            z.grad = last["grad"].clone()
            if not first:
                first.update(last["row"])
            return last["J"]
        opt.zero_grad()
        row = costs(pixels())
        J = row["J"] * scale
        J.backward()
        values = {k: float(v.detach()) for k, v in row.items()}
        if not first:
            first.update(values)
        if lbfgs:
            last.update(z=z.detach().clone(), grad=z.grad.detach().clone(), row=values)
            last["J"] = J.detach()
        return J

    with bar:
        for step in range(steps):
            first.clear()
            opt.step(closure)
            if not lbfgs:
                with torch.no_grad():
                    z.clamp_(0, 1)  # after the step, never inside the closure
            history.append({"step": step, **first})
            if not math.isfinite(first["J"]):
                raise CnnkitError(
                    f"the cost became {first['J']} at step {step}; lower lr= (now "
                    f"{lr or (0.02 if optimizer == 'adam' else 1.0)})."
                )
            bar.update(first)
            if callback is not None:
                callback(step, _colour(pixels().detach(), original, preserve_color))
            if every and stem is not None and (step + 1) % every == 0:
                files.append(
                    save_image(
                        _colour(pixels().detach(), original, preserve_color),
                        f"{stem}_{step + 1:05d}.png",
                    )
                )
    seconds = time.perf_counter() - t0
    G = pixels().detach()
    final = _colour(G, original, preserve_color)
    with torch.no_grad():
        last = {k: float(v) for k, v in costs(G).items()}
    history.append({"step": steps, **last})
    result = StyleResult(final, history, original, style_in, seconds, net.pretrained, files)
    if out is not None:
        files.append(save_image(final, out))
        files.append(_panel(original, style_in, final, f"{stem}_panel.png"))
    return result


def _colour(G: torch.Tensor, C: torch.Tensor, preserve: bool) -> torch.Tensor:
    """G as delivered: with C's chroma when colours are preserved."""
    if not preserve:
        return G.clone()
    yiq = _to_yiq(C)
    yiq[:, :1] = _to_yiq(G)[:, :1]
    return _from_yiq(yiq).clamp(0, 1)


def _panel(C: torch.Tensor, S: torch.Tensor, G: torch.Tensor, path: str | os.PathLike) -> Path:
    """C / S / G side by side, titled, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.3), layout="constrained")
    for ax, img, title in zip(
        fig.subplots(1, 3), (C, S, G), ("content C", "style S", "generated G")
    ):
        ax.imshow(img.detach().reshape(3, *img.shape[-2:]).permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.savefig(path, dpi=100)
    return Path(path)


class _Bar:
    """A rich progress bar showing J, J_content and J_style (verbose=1, a terminal)."""

    def __init__(self, steps: int, verbose: int) -> None:
        self.steps, self.verbose = steps, verbose
        self._bar = None
        self._last = 0.0

    def __enter__(self) -> _Bar:
        import sys

        from rich.console import Console

        console = Console(file=sys.stdout, highlight=False)
        if self.verbose and (console.is_terminal or console.is_jupyter):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("[bold]style"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[text]}"),
                console=console,
                refresh_per_second=4,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=self.steps, text="")
        return self

    def update(self, row: Mapping[str, float]) -> None:
        text = "  ".join(f"{k} {v:.4g}" for k, v in row.items())
        if self._bar is not None:
            self._bar.update(self._task, advance=1, text=text)
        elif self.verbose and time.perf_counter() - self._last > 5:
            self._last = time.perf_counter()
            print(text, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
