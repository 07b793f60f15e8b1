"""The ``cnnkit`` command line: glue only (parse, validate, call one function, print).

Grammar (as in ultralytics): ``cnnkit [TASK] MODE key=value ...``; ``--key value``
works too, and ``--help`` works at every level. Available now: ``cnnkit models``,
``cnnkit summary``, ``cnnkit [classify] train | val | predict | export``,
``cnnkit data check``, the strategy tools ``cnnkit diagnose | analyze | select | tune`` and
``cnnkit report``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cnnkit.errors import CnnkitError, did_you_mean

__all__ = ["main"]

USAGE = """\
usage: cnnkit COMMAND [key=value ...]      (--key value works too; --help on any command)

commands:
  models    list the model zoo:                    cnnkit models [PATTERN] [details=true]
  summary   layers, shapes, params, MACs:          cnnkit summary MODEL input=HxWxC [explain=true]
  train     train a classifier, leave a run:       cnnkit train [model=lenet5 data=digits ...]
  val       score a run on a split:                cnnkit val run=runs/classify/NAME [split=test]
  predict   classify images with a run:            cnnkit predict run=runs/classify/NAME source=IMG
  export    a run to ONNX (+ parity, latency):     cnnkit export run=runs/classify/NAME format=onnx
  data      check an ImageFolder's images:         cnnkit data check DIR
  diagnose  bias / variance / data mismatch:       cnnkit diagnose human=1% train=8% dev=10%
  analyze   error analysis of a run's mistakes:    cnnkit analyze run=runs/classify/NAME
  select    best run under satisficing limits:     cnnkit select runs=A,B latency_ms=100
  tune      random search on log scales; lr_find:  cnnkit tune lr=1e-4..1:log trials=20
  detect    YOLO: train | val | predict | summary:  cnnkit detect train data=PATH/data.yaml
  faces     embeddings, verification, recognition: cnnkit faces train data=DIR
  style     neural style transfer:                 cnnkit style content=IMG style=IMG
  segment   U-Net: train | val | predict | summary: cnnkit segment train data=PATH/data.yaml
  report    a run's report.html, or one plot:      cnnkit report run=runs/classify/NAME

TASK may precede a mode (`cnnkit classify train ...`); classify is the default.

MODEL is a name from `cnnkit models` or a layer-list file (examples/models/*.yaml).
Sizes are written as the course does: n_H x n_W x n_C, e.g. input=224x224x3.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a user mistake.
    """
    status = _main(argv)
    if argv is None and "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ:
        # a torchrun worker (the program itself, not a caller of main(argv)) whose work is
        # done and saved (fsynced): leave at once. Letting
        # the interpreter tear down torch's process-group threads can abort the process
        # ("terminate called without an active exception"), which torchrun reports as a
        # failed job although every file was written.
        import atexit

        atexit._run_exitfuncs()  # Python's own exit handlers still run, in order
        for stream in (sys.stdout, sys.stderr):
            if not stream.closed:  # stderr is closed after a broken pipe
                stream.flush()
        os._exit(status)
    return status


def _lazy(module: str, func: str):
    """A command whose module (``cnnkit.cli.<module>``) is imported only when it runs."""

    def run(argv: Sequence[str]) -> int:
        import importlib

        return getattr(importlib.import_module(f"cnnkit.cli.{module}"), func)(argv)

    return run


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    from cnnkit.cli import classify, commands, data, export

    # warnings the user must see (trust_pickle=true) as one plain line, not file:line noise
    warnings.formatwarning = lambda message, *a, **k: f"cnnkit: warning: {message}\n"

    table = {
        "models": commands.models,
        "summary": commands.summary,
        "train": classify.train,
        "val": classify.val,
        "predict": classify.predict,
        "export": export.export,
        "data": data.data,
        # the tools of ML strategy, imported when called
        "diagnose": _lazy("diagnose", "diagnose"),
        "select": _lazy("diagnose", "select"),
        "analyze": _lazy("analyze", "analyze"),
        "tune": _lazy("tune", "tune"),
        "report": _lazy("report", "report"),
        "detect": _lazy("detect", "detect"),
        "faces": _lazy("faces", "faces"),
        "style": _lazy("style", "style"),
        "segment": _lazy("segment", "segment"),
    }
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "classify":  # the default task, named
        if not rest or rest[0] in ("-h", "--help", "help"):
            print(USAGE, end="")
            return 0
        cmd, rest = rest[0], rest[1:]
    try:
        if cmd not in table:
            hits = did_you_mean(cmd, table)
            hint = f"did you mean `cnnkit {hits[0]}`?" if hits else "run `cnnkit --help`."
            raise CnnkitError(f"unknown command {cmd!r}: {hint}")
        return table[cmd](rest)
    except CnnkitError as e:
        print(f"cnnkit: error: {e}", file=sys.stderr)
        return CnnkitError.exit_code
    except BrokenPipeError:  # `cnnkit summary vgg16 | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
