"""The feature network of style transfer: a frozen ConvNet whose hidden layers are read.

VGG-19 (Simonyan and Zisserman 2015) is the course's choice. Its layers get the names
the course exercise uses (Keras's): ``block{b}_conv{k}`` is the output of the ``k``-th
3x3 convolution of block ``b`` *after its ReLU* (Keras builds the ReLU into the
convolution layer), ``block{b}_pool`` the block's max-pool. VGG-19 has blocks of 2, 2,
4, 4 and 4 convolutions, so ``block1_conv1`` ... ``block5_conv4``. Any other zoo model
is accepted: its layers are named by their module paths inside its convolutional part
(:func:`cnnkit.models.conv_features`), e.g. ``0.1.conv2`` for a ResNet.

Images enter in ``[0, 1]`` and are normalised with ImageNet's mean and standard
deviation inside the network (what torchvision's pretrained weights expect), so the
pixels being optimised stay pixels. Every parameter is frozen and the network is in
eval mode; in-place ReLUs are made out-of-place so that a layer's output is not
overwritten by the next one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.errors import CnnkitError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "StyleFeatures", "build_features", "vgg_layer_names"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_layer_names(features: nn.Sequential) -> dict[str, str]:
    """The course's names of a VGG ``features`` stack: name -> index in the stack.

    Args:
        features: torchvision's VGG ``features`` (convolutions, ReLUs, max-pools).

    Returns:
        ``{"block1_conv1": "1", ...}``: each convolution's name points at its ReLU (or
        at its batch-norm's ReLU), each max-pool at itself.
    """
    names: dict[str, str] = {}
    block, conv = 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            names[f"block{block}_conv{conv}"] = str(i)
        elif isinstance(layer, nn.MaxPool2d):
            names[f"block{block}_pool"] = str(i)
            block, conv = block + 1, 0
    return names


class StyleFeatures(nn.Module):
    """A frozen network that returns the activations of named layers.

    Args:
        net: The convolutional part (a module whose sub-modules are addressed by path).
        names: Layer name -> module path inside ``net``.
        model: The zoo model's name (for messages).
        pretrained: Whether real weights were loaded.
    """

    def __init__(self, net: nn.Module, names: dict[str, str], model: str, pretrained: bool) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        for m in self.net.modules():  # a later in-place op must not rewrite a read layer
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        self.names = names
        self.model, self.pretrained = model, pretrained
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        )  # (3,) -> (1, 3, 1, 1)
        self.register_buffer(
            "std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        )  # (3,) -> (1, 3, 1, 1)
        self._modules_by_path = dict(self.net.named_modules())

    def check(self, layers: Sequence[str]) -> None:
        """Refuse unknown layer names, listing the available ones.

        Args:
            layers: Layer names.

        Raises:
            CnnkitError: For the first unknown name.
        """
        from cnnkit.errors import did_you_mean

        for name in layers:
            if name not in self.names:
                hits = did_you_mean(name, self.names)
                hint = f"did you mean {hits[0]!r}? " if hits else ""
                shown = list(self.names)
                listing = ", ".join(shown[:40]) + (", ..." if len(shown) > 40 else "")
                raise CnnkitError(
                    f"{self.model} has no layer {name!r}; {hint}its layers are: {listing}."
                )

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for images ``x`` in ``[0, 1]``.

        Args:
            x: ``(m, 3, n_H, n_W)`` images with values in ``[0, 1]``.
            layers: Layer names (see :attr:`names`).

        Returns:
            Layer name -> ``(m, n_C, n_H', n_W')`` activations.
        """
        self.check(layers)
        want = {self.names[n]: n for n in layers}
        out: dict[str, torch.Tensor] = {}
        z = (x - self.mean) / self.std
        if isinstance(self.net, nn.Sequential) and all(p.isdigit() for p in want):
            last = max(int(p) for p in want)  # stop after the deepest layer asked for
            for i, layer in enumerate(self.net):
                z = layer(z)
                if str(i) in want:
                    out[want[str(i)]] = z
                if i == last:
                    break
            return out

        def keep(name: str, o: torch.Tensor) -> None:
            # the first call only (ResNet's blocks call one ReLU twice), and a copy: code
            # such as ``out += identity`` or F.relu(inplace=True) may rewrite the output
            if name not in out:
                out[name] = o.clone()

        hooks = [
            self._modules_by_path[path].register_forward_hook(
                lambda _m, _i, o, name=name: keep(name, o)
            )
            for path, name in want.items()
        ]
        try:
            self.net(z)
        finally:
            for h in hooks:
                h.remove()
        return out


def build_features(model: str = "vgg19", weights: str | None = None) -> StyleFeatures:
    """The frozen feature network of ``model`` with ``weights``.

    Args:
        model: A zoo model name (``vgg19`` by default).
        weights: None (random weights), a local ``.pth`` state dict (read with
            ``weights_only=True``) or ``.safetensors`` file in torchvision's format, or
            a torchvision weights name such as ``IMAGENET1K_V1`` (downloads: online only).

    Returns:
        The :class:`StyleFeatures`.

    Raises:
        CnnkitError: An unknown model, or weights that cannot be read or do not fit.
    """
    from cnnkit.models import conv_features, create, list_models
    from cnnkit.models._base import is_weights_file

    if model not in list_models():
        from cnnkit.errors import unknown_name

        raise unknown_name("model", str(model), list_models(), "cnnkit models")
    if model.startswith("vgg"):
        net = _vgg_features(model, weights) if weights is None or is_weights_file(weights) else None
        if net is None:  # a torchvision weights name: the whole model, as torchvision loads it
            net = create(model, num_classes=1000, weights=weights).features
        names = vgg_layer_names(net)
    else:
        net = conv_features(model, 3, weights)
        names = {path: path for path, _ in net.named_modules() if path}  # every module
    return StyleFeatures(net, names, model, pretrained=weights is not None)


def _vgg_features(model: str, weights: str | None) -> nn.Sequential:
    """VGG's ``features`` alone (no 100M-parameter classifier to build).

    Initialised as torchvision initialises VGG, then given the ``features.*`` tensors of
    a weights file (or all of them, for a file of the features only).

    Args:
        model: ``vgg11`` ... ``vgg19_bn``.
        weights: None or a weights file.

    Returns:
        The ``features`` stack.

    Raises:
        CnnkitError: When the file's tensors do not fit (the first bad key named).
    """
    import torchvision.models.vgg as tv_vgg

    from cnnkit.models._base import read_state_dict
    from cnnkit.models.vgg import CONFIGS

    base = model.removesuffix("_bn")
    net = tv_vgg.make_layers(tv_vgg.cfgs[CONFIGS[base]], batch_norm=model.endswith("_bn"))
    for m in net.modules():  # torchvision's VGG init_weights, for the convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if weights is None:
        return net
    state = read_state_dict(weights)
    feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not feats:  # a features-only file
        feats = state
    own = net.state_dict()
    missing = [k for k in own if k not in feats]
    extra = [k for k in feats if k not in own]
    wrong = [k for k in own if k in feats and tuple(feats[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        what = (
            f"has no tensor features.{missing[0]}"
            if missing
            else f"has an unexpected tensor features.{extra[0]}"
            if extra
            else f"gives features.{wrong[0]} the shape {tuple(feats[wrong[0]].shape)}, not "
            f"{tuple(own[wrong[0]].shape)}"
        )
        raise CnnkitError(
            f"weights file {str(weights)!r} {what}; give torchvision's {model} weights."
        )
    net.load_state_dict(feats)
    return net
