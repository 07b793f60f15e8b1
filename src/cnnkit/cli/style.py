"""``cnnkit style content=IMG style=IMG out=IMG [size=PX steps=N ...]``."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, split_args
from cnnkit.errors import CnnkitError

HELP = """\
usage: cnnkit style content=IMG style=IMG [out=styled.png size=128 steps=200 optimizer=adam|lbfgs
                    alpha=10 beta=40 content_layer=block5_conv4
                    style_layers=block1_conv1,block2_conv1,... model=vgg19 weights=FILE
                    init=content|noise noise=0.25 tv=0 preserve_color=false every=0 lr= seed=0]

Neural style transfer (Gatys et al. 2015, as the course writes it): the image G that
minimises J(G) = alpha * J_content(C, G) + beta * J_style(S, G), found by descent on
G's pixels. J_content = 1/(4 n_H n_W n_C) sum (a_C - a_G)^2 at content_layer;
J_style = sum_l lambda[l] 1/(2 n_H n_W n_C)^2 sum (G_S - G_G)^2 over the Gram matrices
at style_layers (0.2 each by default; layer:weight pairs also work, e.g.
style_layers=block1_conv1:0.5,block3_conv1:0.5). Writes out= and <out>_panel.png
(C / S / G side by side). Without weights= the network is random: texture-like results.
"""

KEYS = (
    "content",
    "style",
    "out",
    "size",
    "steps",
    "optimizer",
    "lr",
    "alpha",
    "beta",
    "content_layer",
    "style_layers",
    "normalization",
    "model",
    "weights",
    "init",
    "noise",
    "tv",
    "preserve_color",
    "every",
    "seed",
    "verbose",
)


def _layers(text: object) -> dict[str, float] | list[str]:
    """``a,b,c`` -> names; ``a:0.5,b:0.5`` -> name -> lambda."""
    raw = text if isinstance(text, list) else str(text).split(",")
    items = [str(t).strip() for t in raw if str(t).strip()]
    if not items:
        raise CnnkitError("style_layers is empty; e.g. style_layers=block1_conv1,block2_conv1.")
    if not any(":" in t for t in items):
        return items
    out: dict[str, float] = {}
    for t in items:
        name, _, w = t.partition(":")
        if name in out:
            raise CnnkitError(f"style layer {name!r} is given twice; keep one {name}:WEIGHT.")
        try:
            out[name] = float(w)
        except ValueError:
            raise CnnkitError(
                f"style layer weight {t!r} is not name:number; e.g. block1_conv1:0.2."
            ) from None
    return out


def style(argv: Sequence[str]) -> int:
    """``cnnkit style ...``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(HELP, end="")
        return 0
    if pos:
        raise CnnkitError(
            f"unexpected argument {pos[0]!r}; give key=value pairs, e.g. content=photo.jpg."
        )
    check_keys(opts, KEYS, "style")
    for key in ("content", "style"):
        if key not in opts or opts[key] is True:
            raise CnnkitError(f"`cnnkit style` needs {key}=IMG (an image file).")
    from cnnkit.style.transfer import transfer

    kw = {k: v for k, v in opts.items() if k not in ("content", "style")}
    kw.setdefault("out", "styled.png")
    if kw["out"] is None or kw["out"] is True or not str(kw["out"]).strip():
        raise CnnkitError("out= must name the image to write; e.g. out=styled.png.")
    if "verbose" in kw and kw["verbose"] not in (0, 1):
        raise CnnkitError(f"verbose must be 0 or 1, got {kw['verbose']!r}.")
    for key in ("out", "content_layer", "model", "weights", "optimizer", "init"):
        if key in kw and kw[key] is not None:
            kw[key] = str(kw[key])
    if "style_layers" in kw:
        kw["style_layers"] = _layers(kw["style_layers"])
    if "preserve_color" in kw and not isinstance(kw["preserve_color"], bool):
        raise CnnkitError(f"preserve_color must be true or false, got {kw['preserve_color']!r}.")
    res = transfer(str(opts["content"]), str(opts["style"]), **kw)
    first, last = res.history[0], res.history[-1]
    print(
        f"J {first['J']:.4g} -> {last['J']:.4g} (J_content {first['J_content']:.4g} -> "
        f"{last['J_content']:.4g}, J_style {first['J_style']:.4g} -> {last['J_style']:.4g}) "
        f"in {res.seconds:.1f} s"
    )
    print(f"image saved in {res.files[-2]} (panel: {res.files[-1]})")
    return 0
