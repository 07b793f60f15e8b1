"""Sliding windows, crop by crop and convolutionally (OverFeat, Sermanet et al. 2014).

The course's example: a classifier trained on 14x14x3 crops,

    14x14x3 -> conv 5x5, 16 -> 10x10x16 -> max-pool f=2 s=2 -> 5x5x16
    -> FC 400 -> FC 400 -> FC 4 (softmax),

becomes *fully convolutional* by turning its FC layers into convolutions: FC 400 on the
5x5x16 volume is 400 filters of 5x5x16 (output 1x1x400), and every later FC is a 1x1
convolution. The converted network computes the same numbers on a 14x14x3 window,
and on a bigger image it slides the window by itself: on 16x16x3 it outputs 2x2x4
(the 4 windows at stride 2), on 28x28x3 8x8x4, in one forward pass that shares the
computation of overlapping windows.

- :func:`fc_to_conv` converts a classifier (the weights copied exactly);
- :func:`sliding_windows_conv` runs the converted network once on the whole image;
- :func:`sliding_windows_naive` crops every window and classifies the crops;
- :func:`effective_stride` is the stride of the windows the conv version slides: the
  product of the strides of the convolutions and poolings (2 for the course's
  network, from its max-pool; 4 for LeNet-5, from its two pools);
- :func:`window_grid` is the number of windows, ``floor((n - f)/s) + 1`` per axis.

Both ways give the same ``(n_rows, n_cols, K)`` scores when the network has no
padding (with padding, a window of the conv version sees its real neighbours where
the crop saw zeros, so the scores differ near the window borders).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.errors import CnnkitError

__all__ = [
    "effective_stride",
    "fc_to_conv",
    "sliding_windows_conv",
    "sliding_windows_naive",
    "window_grid",
]

# element-wise layers: the same on (B, N) vectors and on (B, N, n_H, n_W) volumes
_ELEMENTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Threshold,
    nn.Dropout,
    nn.AlphaDropout,
)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    """An int or an ``(n_H, n_W)`` pair of positive ints."""
    if isinstance(v, int) and not isinstance(v, bool):
        vals: tuple = (v, v)
    else:
        vals = tuple(v) if isinstance(v, (tuple, list, torch.Size)) else (v,)
    if len(vals) != 2 or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in vals
    ):
        raise CnnkitError(
            f"{what} must be a positive int or an (n_H, n_W) pair of them, got {v!r}; e.g. 14."
        )
    return vals  # type: ignore[return-value]


def _shape(t: torch.Size | Sequence[int]) -> str:
    """Torch shape without the batch axis, in course order: ``(1, C, H, W)`` -> ``HxWxC``."""
    s = tuple(t)[1:]
    if len(s) >= 2:
        s = (*s[1:], s[0])
    return "x".join(map(str, s))


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` in running order, nested ``nn.Sequential`` flattened."""
    out: list[tuple[str, nn.Module]] = []

    def expand(prefix: str, m: nn.Module, top: bool) -> None:
        children = list(m.named_children())
        if top and not children:
            out.append((type(m).__name__, m))
            return
        if top or isinstance(m, nn.Sequential):
            for n, c in children:
                expand(f"{prefix}.{n}" if prefix else n, c, False)
            return
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            raise CnnkitError(
                f"fc_to_conv cannot tell in which order {type(m).__name__} {prefix!r} runs its "
                "layers; give it an nn.Sequential of the layers in running order."
            )
        if not isinstance(m, nn.Linear) and any(isinstance(s, nn.Linear) for s in m.modules()):
            raise CnnkitError(
                f"fc_to_conv cannot convert the nn.Linear inside {type(m).__name__} {prefix!r} "
                "(a container that is not an nn.Sequential); rebuild it as an nn.Sequential."
            )
        out.append((prefix, m))

    expand("", model, True)
    return out


def _linear_to_conv(lin: nn.Linear, n_C: int, kernel: tuple[int, int]) -> nn.Conv2d:
    """An FC layer as ``out_features`` filters of ``f_H x f_W x n_C``, weights copied."""
    w = lin.weight.detach()
    conv = nn.Conv2d(
        n_C,
        lin.out_features,
        kernel_size=kernel,
        bias=lin.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    with torch.no_grad():
        # nn.Flatten orders the features C, H, W: (out, C*H*W) -> (out, C, H, W)
        conv.weight.copy_(w.reshape(lin.out_features, n_C, *kernel))
        if lin.bias is not None:
            conv.bias.copy_(lin.bias.detach())
    conv.weight.requires_grad_(lin.weight.requires_grad)
    if lin.bias is not None:
        conv.bias.requires_grad_(lin.bias.requires_grad)
    return conv


def _bn1d_to_2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    """Batch norm over FC features as batch norm over the channels of a 1x1 conv."""
    new = nn.BatchNorm2d(
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )
    state = bn.state_dict()
    like = next((t for t in state.values() if t.is_floating_point()), None)
    if like is not None:
        new = new.to(device=like.device, dtype=like.dtype)
    new.load_state_dict(state)
    return new


def fc_to_conv(model: nn.Module, input_size: tuple[int, int, int] | Sequence[int]) -> nn.Sequential:
    """Turn a classifier into a fully convolutional network (OverFeat, as the course does).

    The layers are walked in order (nested ``nn.Sequential`` flattened), tracking the
    shape of a window of ``input_size`` through them. The first ``nn.Linear`` after an
    ``nn.Flatten`` of an ``n_H x n_W x n_C`` volume becomes an ``nn.Conv2d`` with
    ``n_H x n_W`` filters of depth ``n_C`` (its ``(out, n_C*n_H*n_W)`` weights reshaped to
    ``(out, n_C, n_H, n_W)``, PyTorch's flatten order), and that ``nn.Flatten`` is dropped.
    Every later ``nn.Linear`` becomes a 1x1 convolution, ``nn.BatchNorm1d`` a
    ``nn.BatchNorm2d``, ``nn.Softmax``/``nn.LogSoftmax`` act over the channels (``dim=1``).
    Element-wise layers (activations, dropout) are kept, and so is every layer before
    the flatten. An adaptive pool that is the identity at the window size (VGG's 7x7
    on 224x224) is dropped, and a global one (output 1x1) becomes a fixed pool over the
    window's feature map with stride 1.

    ``model`` may be an ``nn.Sequential`` or any module whose children run one after
    another in the order they were registered (cnnkit's LeNet-5: ``features``,
    ``flatten``, ``classifier``); the result is checked against ``model`` on a random
    window, so a model whose ``forward`` does something else is refused.

    Args:
        model: The classifier, trained on windows of ``input_size``; not modified.
        input_size: The window in course order ``(n_H, n_W, n_C)``, e.g. ``(14, 14, 3)``.

    Returns:
        A new ``nn.Sequential`` in eval mode, with copies of the weights: on a window it
        outputs ``(B, K, 1, 1)`` (the classifier's ``(B, K)``), on a bigger image
        ``(B, K, n_rows, n_cols)``, one score vector per window at stride
        :func:`effective_stride`.

    Raises:
        CnnkitError: If ``input_size`` is not three positive ints, the model cannot
            take such a window, or a layer cannot be converted (an ``nn.Linear`` on an
            input that no ``nn.Flatten`` flattened, a non-``nn.Sequential`` container
            holding an ``nn.Linear``, a layer after the flatten that is not element-wise).
    """
    size = tuple(input_size)
    if len(size) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size
    ):
        raise CnnkitError(
            f"input_size must be the window as three positive ints (n_H, n_W, n_C), "
            f"got {input_size!r}; e.g. (14, 14, 3)."
        )
    n_H, n_W, n_C = size
    label = type(model).__name__
    src = copy.deepcopy(model).eval()
    param = next(iter(src.parameters()), None)
    gen = torch.Generator().manual_seed(0)
    window = torch.randn(1, n_C, n_H, n_W, generator=gen)
    if param is not None and param.is_floating_point():
        window = window.to(device=param.device, dtype=param.dtype)

    new: list[nn.Module] = []
    state = "volume"  # "volume": before the flatten; "pending": flattened, no FC yet; "flat"
    volume: tuple[int, int, int] = (0, 0, 0)  # (n_C, n_H, n_W) that the flatten flattened
    x = window
    with torch.no_grad():
        for name, layer in _layers(src):
            where = f"{type(layer).__name__} {name!r}"
            shape = _shape(x.shape)
            try:
                y = layer(x)
            except CnnkitError:
                raise
            except (RuntimeError, ValueError, IndexError) as e:
                if isinstance(layer, nn.Linear) and state == "volume":
                    y = x  # the structural error below says more
                else:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise CnnkitError(
                        f"{label} cannot take a {n_H}x{n_W}x{n_C} window: {where} fails on its "
                        f"{shape} input ({first}); pass the input_size the model was built "
                        f"for{_built_for(model)}."
                    ) from None
            if isinstance(layer, nn.Flatten):
                if layer.start_dim != 1 or layer.end_dim != -1:
                    raise CnnkitError(
                        f"fc_to_conv handles nn.Flatten(start_dim=1, end_dim=-1) only, but "
                        f"{where} flattens dims {layer.start_dim}..{layer.end_dim}; use "
                        "nn.Flatten()."
                    )
                if state == "volume":
                    if x.dim() != 4:
                        raise CnnkitError(
                            f"{where} flattens a {shape} input, not an n_H x n_W x n_C volume; "
                            "fc_to_conv needs the flatten to follow convolutional layers."
                        )
                    volume = (x.shape[1], x.shape[2], x.shape[3])
                    state = "pending"
                # on a flat (B, N) input a flatten does nothing: dropped either way
            elif isinstance(layer, nn.Linear):
                if state == "volume":
                    raise CnnkitError(
                        f"{where} reads a {shape} input that no nn.Flatten flattened; put an "
                        "nn.Flatten() layer before the first nn.Linear."
                    )
                if state == "pending":
                    new.append(_linear_to_conv(layer, volume[0], (volume[1], volume[2])))
                    state = "flat"
                else:
                    new.append(_linear_to_conv(layer, layer.in_features, (1, 1)))
            elif state == "volume":
                if isinstance(layer, _ADAPTIVE) and x.dim() == 4:
                    new.append(_adaptive(layer, where, x.shape[2], x.shape[3]))
                else:
                    new.append(layer)
            elif isinstance(layer, _ELEMENTWISE) or (
                isinstance(layer, nn.PReLU) and (state == "flat" or layer.num_parameters == 1)
            ):
                new.append(layer)
            elif state == "flat" and isinstance(layer, (nn.Softmax, nn.LogSoftmax)):
                if layer.dim not in (None, 1, -1):
                    raise CnnkitError(
                        f"{where} is over dim {layer.dim} of the class scores; use dim=1 "
                        "(the classes)."
                    )
                new.append(type(layer)(dim=1))
            elif state == "flat" and isinstance(layer, nn.BatchNorm1d):
                new.append(_bn1d_to_2d(layer))
            else:
                after = "flattened features" if state == "pending" else "FC outputs"
                raise CnnkitError(
                    f"fc_to_conv cannot convert {where} on {after} (only nn.Linear, "
                    "activations, dropout, BatchNorm1d and softmax); move it before the "
                    "nn.Flatten or remove it."
                )
            x = y
    if state == "pending" and volume[1:] != (1, 1):
        raise CnnkitError(
            f"{label} ends in an nn.Flatten of a {volume[1]}x{volume[2]}x{volume[0]} volume "
            "with no nn.Linear after it; fc_to_conv needs an FC layer (or a 1x1 volume) there."
        )

    conv = nn.Sequential(*new).eval()
    conv.sliding_window = size  # the window the classifier was built for, (n_H, n_W, n_C)
    _check_same(src, conv, window, label)
    return conv


def _built_for(model: nn.Module) -> str:
    """`` (32x32x1)``: the input size a registered cnnkit model was built for, if known."""
    size = getattr(model, "input_size", None)
    name = getattr(model, "cnnkit_name", None)
    if size is None and isinstance(name, str):
        from cnnkit.models import get_model_info

        try:
            size = get_model_info(name).input_size
        except CnnkitError:
            size = None
    if not isinstance(size, (tuple, list)):
        return ""
    return " (" + "x".join(map(str, size)) + ")"


def _adaptive(layer: nn.Module, where: str, h: int, w: int) -> nn.Module:
    """A fixed-size stand-in for an adaptive pool, at a window's feature map of ``h x w``."""
    out = layer.output_size  # type: ignore[attr-defined]
    out_h, out_w = (out, out) if isinstance(out, int) else out
    out_h, out_w = out_h or h, out_w or w  # None keeps the input size
    if (out_h, out_w) == (h, w):
        return nn.Identity()
    if (out_h, out_w) == (1, 1):
        cls = nn.AvgPool2d if isinstance(layer, nn.AdaptiveAvgPool2d) else nn.MaxPool2d
        return cls(kernel_size=(h, w), stride=1)
    raise CnnkitError(
        f"fc_to_conv cannot slide {where}: it pools the window's {h}x{w} features to "
        f"{out_h}x{out_w}; use a window whose features are {out_h}x{out_w} already."
    )


def _check_same(src: nn.Module, conv: nn.Sequential, window: torch.Tensor, label: str) -> None:
    """Raise unless ``conv`` computes what ``src`` does on ``window`` (one 1x1 output)."""
    with torch.no_grad():
        try:
            want = src(window)
        except CnnkitError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            raise CnnkitError(
                f"{label} cannot take the window given as input_size ({e}); pass the "
                "input_size the model was built for."
            ) from None
        got = conv(window)
    if not isinstance(want, torch.Tensor) or got.dim() != 4 or got.shape[2:] != (1, 1):
        raise CnnkitError(
            f"{label} converted gives a {_shape(got.shape)} output on one window, not 1x1xK; "
            "fc_to_conv needs a classifier whose FC layers read the whole window."
        )
    want, got = want.reshape(1, -1), got.reshape(1, -1)  # (1, K, 1, 1) -> (1, K)
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    if want.shape != got.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * scale):
        raise CnnkitError(
            f"{label}'s forward does not run its layers one after another in registration "
            "order, so fc_to_conv cannot follow it; give it an nn.Sequential of the layers."
        )


def effective_stride(model: nn.Module) -> int:
    """The stride ``s`` of the windows that a fully convolutional network slides.

    Moving the input by ``s`` pixels moves the output by one position when ``s`` is the
    product of the strides of its convolutions and poolings: 2 for the course's
    network (conv stride 1, max-pool stride 2), 4 for LeNet-5 (two pools of stride 2).
    The convolutional sliding windows of :func:`fc_to_conv` are therefore the crops at
    top-left corners ``(i*s, j*s)``: give this stride to :func:`sliding_windows_naive`
    to get the same windows. Computed from the registered ``nn.Conv2d``, pooling and
    adaptive-pool modules (the last count as stride 1, as :func:`fc_to_conv` makes them);
    strides written in a ``forward`` (``F.max_pool2d``) are not seen.

    Args:
        model: The classifier or its converted network.

    Returns:
        The product of the strides.

    Raises:
        CnnkitError: If a layer strides differently along ``n_H`` and ``n_W``.
    """
    s = 1
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
            stride = m.stride if m.stride is not None else m.kernel_size
            sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
            if sh != sw:
                raise CnnkitError(
                    f"{type(m).__name__} {name!r} has stride {sh}x{sw}; effective_stride "
                    "needs equal strides along n_H and n_W, so pass the stride per axis "
                    "yourself."
                )
            s *= int(sh)
    return s


def window_grid(
    image_size: int | Sequence[int], window: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[int, int]:
    """Number of windows per axis: ``floor((n - f)/s) + 1``, the course's formula with p=0.

    Args:
        image_size: ``n`` or ``(n_H, n_W)`` of the image.
        window: ``f`` or ``(f_H, f_W)`` of the window.
        stride: ``s`` or ``(s_H, s_W)``.

    Returns:
        ``(n_rows, n_cols)``.

    Raises:
        CnnkitError: On sizes that are not positive, or a window larger than the image.
    """
    n = _pair(image_size, "image_size")
    f = _pair(window, "window")
    s = _pair(stride, "stride")
    if f[0] > n[0] or f[1] > n[1]:
        raise CnnkitError(
            f"the {f[0]}x{f[1]} window does not fit in the {n[0]}x{n[1]} image; use an image "
            "at least as large as the window."
        )
    return (n[0] - f[0]) // s[0] + 1, (n[1] - f[1]) // s[1] + 1


def _image(image: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``(n_C, n_H, n_W)`` or ``(1, n_C, n_H, n_W)`` -> a batch of one on the model's device."""
    if (
        not isinstance(image, torch.Tensor)
        or image.dim() not in (3, 4)
        or (image.dim() == 4 and image.shape[0] != 1)
    ):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CnnkitError(
            f"image must be one image tensor (n_C, n_H, n_W) or a batch of one, got {got}; "
            "slide over the images one at a time."
        )
    x = image if image.dim() == 4 else image.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
    param = next(iter(model.parameters()), None)
    if param is not None and param.is_floating_point():
        x = x.to(device=param.device, dtype=param.dtype)
    return x


def sliding_windows_naive(
    model: nn.Module,
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Classify every window of the image crop by crop (the slow way the course starts with).

    The windows have top-left corners at multiples of ``stride``; each crop goes through
    ``model`` (in batches, eval mode, no gradients; the model's mode is restored).

    Args:
        model: The classifier, taking ``window``-sized inputs and giving ``(B, K)``.
        image: ``(n_C, n_H, n_W)`` or ``(1, n_C, n_H, n_W)``.
        window: ``f`` or ``(f_H, f_W)``: the classifier's input size.
        stride: ``s`` or ``(s_H, s_W)``; default :func:`effective_stride` of ``model``,
            the stride at which :func:`sliding_windows_conv` gives the same windows.
        batch_size: Crops per forward pass.

    Returns:
        ``(n_rows, n_cols, K)``: the scores of the window at row ``i``, column ``j``, see
        :func:`window_grid`.

    Raises:
        CnnkitError: On a bad image, window or stride, or a model that does not give
            ``(B, K)`` scores.
    """
    x = _image(image, model)
    f_H, f_W = _pair(window, "window")
    s_H, s_W = _pair(effective_stride(model) if stride is None else stride, "stride")
    n_rows, n_cols = window_grid(tuple(x.shape[2:]), (f_H, f_W), (s_H, s_W))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnkitError(f"batch_size must be a positive int, got {batch_size!r}; e.g. 256.")
    # (1, C, H, W) -> (1, C, n_rows, n_cols, f_H, f_W): every window, as views
    crops = x.unfold(2, f_H, s_H).unfold(3, f_W, s_W)
    # (1, C, r, c, f_H, f_W) -> (r*c, C, f_H, f_W): one crop per row-major window
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(n_rows * n_cols, x.shape[1], f_H, f_W)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = [model(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    finally:
        model.train(was_training)
    out = torch.cat(outs)
    if out.dim() == 4 and out.shape[2:] == (1, 1):
        out = out.flatten(1)  # (N, K, 1, 1) -> (N, K)
    if out.dim() != 2:
        raise CnnkitError(
            f"{type(model).__name__} gives {tuple(out.shape)} per batch of crops, not (B, K) "
            "scores; pass the classifier itself."
        )
    return out.reshape(n_rows, n_cols, -1)  # (r*c, K) -> (r, c, K)


def sliding_windows_conv(conv_model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Classify every window of the image in one forward pass of a converted network.

    Args:
        conv_model: A fully convolutional network, e.g. from :func:`fc_to_conv`. Run in
            eval mode with no gradients (its mode is restored).
        image: ``(n_C, n_H, n_W)`` or ``(1, n_C, n_H, n_W)``, at least as large as the
            window the classifier was trained on.

    Returns:
        ``(n_rows, n_cols, K)``: the scores of the window at row ``i``, column ``j``, whose
        top-left corner is ``(i*s, j*s)`` with ``s`` = :func:`effective_stride`.

    Raises:
        CnnkitError: On a bad image, an image smaller than the window, or a network that
            does not output a ``(1, K, n_rows, n_cols)`` volume.
    """
    x = _image(image, conv_model)
    win = getattr(conv_model, "sliding_window", None)
    if win is not None:
        window_grid(tuple(x.shape[2:]), tuple(win[:2]), 1)  # raises if the image is too small
    was_training = conv_model.training
    conv_model.eval()
    try:
        with torch.no_grad():
            out = conv_model(x)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnkitError(
            f"{type(conv_model).__name__} cannot take the {_shape(x.shape)} image ({first}); "
            "use an image at least as large as the window."
        ) from None
    finally:
        conv_model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CnnkitError(
            f"{type(conv_model).__name__} outputs {got}, not a (1, K, n_rows, n_cols) volume; "
            "convert the classifier with fc_to_conv first."
        )
    return out[0].permute(1, 2, 0)  # (1, K, r, c) -> (K, r, c) -> (r, c, K)
