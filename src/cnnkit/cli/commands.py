"""The commands behind ``cnnkit models`` and ``cnnkit summary``."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, flag, split_args
from cnnkit.errors import CnnkitError, did_you_mean

MODELS_HELP = """\
usage: cnnkit models [PATTERN] [details=true]

List the registered models: family, default input (n_H x n_W x n_C), parameters
and source. PATTERN filters names (resnet, 'vgg1?', '*_bn'). details=true adds
each family's facts (EfficientNet's phi, width, depth, resolution, dropout).
"""

SUMMARY_HELP = """\
usage: cnnkit summary MODEL [input=HxWxC] [depth=3] [explain=true] [num_classes=N]
                      [in_channels=C] [weights=FILE [trust_pickle=true]]
                      [MODEL OPTIONS, e.g. small_input=true]

Per layer: output n_H x n_W x n_C, parameters, MACs; totals with FLOPs = 2 x MACs,
other ops, buffers and memory. explain=true prints the course's formula under each
conv / pool / FC / BN row. MODEL is a name from `cnnkit models` or a .yaml layer list.
weights= takes .safetensors or a .pth state dict (read with weights_only=True); a .pth
holding Python objects is refused unless trust_pickle=true (it may run code).
"""

_SUMMARY_KEYS = [
    "input",
    "depth",
    "explain",
    "num_classes",
    "in_channels",
    "weights",
    "trust_pickle",
]


def models(argv: Sequence[str]) -> int:
    """``cnnkit models [PATTERN] [details=true]``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(MODELS_HELP, end="")
        return 0
    check_keys(opts, ["details", "pattern"], "models")
    if len(pos) > 1:
        raise CnnkitError(f"`cnnkit models` takes one PATTERN, got {len(pos)}: {' '.join(pos)}.")
    pattern = pos[0] if pos else opts.get("pattern")
    details = flag(opts, "details")

    import torch

    from cnnkit.models import create, get_model_info, list_models

    names = list_models(pattern)
    if not names:
        hits = did_you_mean(str(pattern), list_models())
        hint = f"; did you mean {hits[0]!r}?" if hits else "; run `cnnkit models` to see all."
        raise CnnkitError(f"no model matches {pattern!r}{hint}")
    print(f"{'model':<18}{'family':<15}{'input':>12}{'params':>15}  source")
    for name in names:
        info = get_model_info(name)
        with torch.device("meta"):  # count parameters without allocating them
            n = sum(p.numel() for p in create(name).parameters())
        size = "x".join(map(str, info.input_size))
        print(f"{name:<18}{info.family:<15}{size:>12}{n:>15,}  {info.paper}")
    if details:
        families = {get_model_info(n).family for n in names}
        if "efficientnet" in families:
            from cnnkit.models.efficientnet import scaling_table

            print(
                "\nEfficientNet compound scaling (alpha=1.2 depth, beta=1.1 width, "
                "gamma=1.15 resolution):"
            )
            print(scaling_table())
        for name in names:
            info = get_model_info(name)
            if info.meta and info.family != "efficientnet":
                facts = ", ".join(f"{k}={v}" for k, v in info.meta.items())
                print(f"{name}: {facts}")
    return 0


def summary(argv: Sequence[str]) -> int:
    """``cnnkit summary MODEL input=HxWxC ...``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(SUMMARY_HELP, end="")
        return 0
    if "model" in opts and not pos:
        pos = [str(opts.pop("model"))]
    if len(pos) != 1:
        raise CnnkitError("`cnnkit summary` needs one MODEL, e.g. `cnnkit summary vgg16`.")
    name = pos[0]
    from cnnkit import shapes

    size = shapes.parse_size(str(opts["input"])) if "input" in opts else None
    depth = opts.get("depth", 3)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise CnnkitError(
            f"depth must be a positive integer (or none for all leaves), got {depth!r}."
        )
    explain = flag(opts, "explain")
    trust_pickle = flag(opts, "trust_pickle")

    from cnnkit.inspect import summary as run_summary
    from cnnkit.models import create, get_model_info

    model_kw = {k: v for k, v in opts.items() if k not in _SUMMARY_KEYS}
    if not name.endswith((".yaml", ".yml")):
        get_model_info(name)  # unknown name: fail with a suggestion before building
    try:
        model = create(
            name,
            num_classes=opts.get("num_classes"),
            in_channels=opts.get("in_channels"),
            weights=opts.get("weights"),
            trust_pickle=trust_pickle,
            **model_kw,
        )
    except CnnkitError as e:
        # a key that is neither a summary key nor a model option: most likely a typo
        bad = next(
            (
                k
                for k in model_kw
                if f"option {k!r}" in str(e) or f"options, got {sorted(model_kw)}" in str(e)
            ),
            None,
        )
        hits = did_you_mean(bad, _SUMMARY_KEYS) if bad else []
        if hits:
            raise CnnkitError(
                f"unknown key {bad!r} for `cnnkit summary`: did you mean {hits[0]}=?"
            ) from None
        raise
    result = run_summary(model, size, depth=depth, explain=explain, name=name)
    print(result.to_text())
    return 0
