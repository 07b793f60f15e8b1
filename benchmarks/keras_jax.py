"""Keras 3 on the JAX backend (CPU): training throughput of LeNet-5 and ResNet-18 (CIFAR).

The reference point for cnnkit's trainer: the same two models (same layers, same
trainable parameter counts as cnnkit's PyTorch ones), Adam lr 1e-3, sparse categorical
cross-entropy from logits, batch 128, synthetic normalized data (random uint8 images,
``(x / 255 - 0.5) / 0.25``, random labels 0-9). After an untimed warm-up that includes
JIT compilation, ``--repeats`` epochs of ``--lenet-steps`` / ``--resnet-steps`` steps are
timed; each step blocks on its loss, so the timing is honest. ``compile_s`` is the
warm-up: the first step (JIT compilation) plus one more.

Runs only in its own venv (no torch, no cnnkit)::

    python3 -m venv benchmarks/.venv-keras && \
        benchmarks/.venv-keras/bin/pip install "keras>=3" "jax[cpu]"
    benchmarks/.venv-keras/bin/python benchmarks/keras_jax.py              # both models
    benchmarks/.venv-keras/bin/python benchmarks/keras_jax.py --models lenet5 --repeats 5

Threads: XLA:CPU sizes its thread pool from the CPUs the process may run on, so with
``--threads N`` below the machine's CPU count the process is pinned to N CPUs
(``os.sched_setaffinity``) before jax is imported (XLA has no thread-count flag:
``intra_op_parallelism_threads`` is TensorFlow's); ``XLA_FLAGS`` gets
``--xla_cpu_multi_thread_eigen=true`` (the default, made explicit) and
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` = N for numpy.
Caveat (jax/jaxlib 0.10.2): XLA:CPU runs each convolution on ONE thread whatever the
flags (cpu/wall ~1.0 measured on a lone conv, also with ``--xla_cpu_use_onednn`` or
``--xla_cpu_use_xnnpack``), so ResNet-18 barely gains from a second core; LeNet-5 does
(about 2.1k -> 3.5k img/s from 1 to 2 threads).

Loop: ``--loop auto`` (default) takes the faster one measured on a 2-core CPU:
``model.fit`` (one call of ``steps`` steps per epoch) for LeNet-5, ~15% faster than
``train_on_batch``; a Python loop of ``model.train_on_batch`` for ResNet-18, ~4% faster
than ``fit``. Each row names its loop. The last line of output is ``JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from types import ModuleType
from typing import Any

LENET_PARAMS = 61_706
RESNET18_CIFAR_PARAMS = 11_173_962  # torchvision resnet18, 3x3 stem, 10 classes
BATCH = 128


def limit_threads(n: int) -> None:
    """Restrict JAX/XLA (and numpy's BLAS) to ``n`` threads; call before importing jax.

    Args:
        n: Number of CPU threads to allow.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=true").strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def lenet5(keras: ModuleType) -> Any:
    """Modern LeNet-5 (ReLU, max-pool, logits) for 32x32x1 inputs: 61,706 parameters."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            L.Conv2D(6, 5, activation="relu"),  # (B, 28, 28, 6)
            L.MaxPooling2D(2, 2),  # (B, 14, 14, 6)
            L.Conv2D(16, 5, activation="relu"),  # (B, 10, 10, 16)
            L.MaxPooling2D(2, 2),  # (B, 5, 5, 16)
            L.Flatten(),  # (B, 5, 5, 16) -> (B, 400)
            L.Dense(120, activation="relu"),
            L.Dense(84, activation="relu"),
            L.Dense(10),  # logits
        ],
        name="lenet5",
    )


def resnet18_cifar(keras: ModuleType) -> Any:
    """torchvision-style ResNet-18 with a 3x3 stride-1 stem and no max-pool, 10 classes.

    BatchNorm uses PyTorch's defaults (momentum 0.1 -> Keras 0.9, eps 1e-5); stride-2
    3x3 convs pad 1 pixel on every side like PyTorch's ``padding=1`` (Keras "same" would
    pad only bottom/right).
    """
    L = keras.layers

    def conv_bn(x: Any, filters: int, kernel: int, stride: int, relu: bool) -> Any:
        if stride == 2 and kernel == 3:
            x = L.ZeroPadding2D(1)(x)
            x = L.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False)(x)
        else:
            x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        return L.ReLU()(x) if relu else x

    def basic_block(x: Any, filters: int, stride: int) -> Any:
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = conv_bn(x, filters, 1, stride, relu=False)  # 1x1 projection + BN
        y = conv_bn(x, filters, 3, stride, relu=True)
        y = conv_bn(y, filters, 3, 1, relu=False)
        return L.ReLU()(L.Add()([y, shortcut]))

    inputs = keras.Input((32, 32, 3))
    x = conv_bn(inputs, 64, 3, 1, relu=True)  # (B, 32, 32, 64)
    for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = basic_block(x, filters, stride)
        x = basic_block(x, filters, 1)
    x = L.GlobalAveragePooling2D()(x)  # (B, 4, 4, 512) -> (B, 512)
    return keras.Model(inputs, L.Dense(10)(x), name="resnet18_cifar")  # logits


def trainable_params(model: Any) -> int:
    """Trainable parameter count (what PyTorch's ``parameters()`` counts; BN stats excluded)."""
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))


def bench(keras: ModuleType, name: str, steps: int, repeats: int, loop: str) -> dict:
    """Train one model on synthetic data and time ``repeats`` epochs of ``steps`` steps.

    Args:
        keras: The imported keras module (JAX backend).
        name: ``"lenet5"`` or ``"resnet18_cifar"``.
        steps: Steps (batches of 128) per timed epoch.
        repeats: Number of timed epochs.
        loop: ``"train_on_batch"`` (Python loop) or ``"fit"`` (``model.fit``, one call per epoch).

    Returns:
        One JSON row: model, batch, img/s median/min/max, params, compile_s.
    """
    import jax
    import numpy as np

    model, expected = {
        "lenet5": (lenet5, LENET_PARAMS),
        "resnet18_cifar": (resnet18_cifar, RESNET18_CIFAR_PARAMS),
    }[name]
    keras.utils.set_random_seed(0)
    model = model(keras)
    params = trainable_params(model)
    assert params == expected, f"{name}: {params:,} trainable parameters, expected {expected:,}"
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    n = steps * BATCH
    images = rng.integers(0, 256, (n, *model.input_shape[1:]), dtype=np.uint8)
    x = ((images.astype(np.float32) / 255.0 - 0.5) / 0.25).astype(np.float32)
    y = rng.integers(0, 10, (n,)).astype(np.int32)
    xb = [jax.device_put(x[i : i + BATCH]) for i in range(0, n, BATCH)]
    yb = [jax.device_put(y[i : i + BATCH]) for i in range(0, n, BATCH)]

    def epoch(k: int) -> float:
        """Train ``k`` steps, blocking on the loss; returns seconds."""
        t0 = time.perf_counter()
        if loop == "fit":
            xk, yk = x[: k * BATCH], y[: k * BATCH]
            hist = model.fit(xk, yk, batch_size=BATCH, steps_per_epoch=k, shuffle=False, verbose=0)
            float(hist.history["loss"][-1])
        else:
            for xi, yi in zip(xb[:k], yb[:k]):
                float(model.train_on_batch(xi, yi))  # blocks on the step
        return time.perf_counter() - t0

    compile_s = epoch(2)  # warm-up, untimed: a step that JIT-compiles, then one more
    rates = [n / epoch(steps) for _ in range(repeats)]
    med, lo, hi = statistics.median(rates), min(rates), max(rates)
    print(
        f"{name:15s} b{BATCH} {loop:15s} params {params:>11,}  warm-up {compile_s:5.1f} s  "
        f"img/s median {med:9.1f}  min {lo:9.1f}  max {hi:9.1f}",
        flush=True,
    )
    rates_row = {"img_per_s_median": med, "img_per_s_min": lo, "img_per_s_max": hi}
    return (
        {"model": name, "batch": BATCH}
        | {k: round(v, 2) for k, v in rates_row.items()}
        | {"params": params, "compile_s": round(compile_s, 2), "loop": loop}
    )


def _peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB (Linux ``VmHWM``), if known."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    """Parse flags, limit threads, select the JAX backend, run the benchmarks, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    both = ["lenet5", "resnet18_cifar"]
    p.add_argument("--models", nargs="+", choices=both, default=both)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lenet-steps", type=int, default=40)
    p.add_argument("--resnet-steps", type=int, default=4)
    loops = ["auto", "train_on_batch", "fit"]
    p.add_argument("--loop", choices=loops, default="auto", help="auto: the faster, measured")
    args = p.parse_args(argv)

    limit_threads(args.threads)
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    versions = {"keras": keras.__version__, "jax": jax.__version__, "backend": "jax"}
    print(
        f"keras {keras.__version__}, jax {jax.__version__}, backend {keras.backend.backend()}, "
        f"devices {jax.devices()}, threads {args.threads}, loop {args.loop}",
        flush=True,
    )
    keras.config.set_image_data_format("channels_last")
    steps = {"lenet5": args.lenet_steps, "resnet18_cifar": args.resnet_steps}
    auto = {"lenet5": "fit", "resnet18_cifar": "train_on_batch"}  # the faster, measured
    loop = {m: auto[m] if args.loop == "auto" else args.loop for m in args.models}
    rows = [bench(keras, m, steps[m], args.repeats, loop[m]) for m in args.models]
    out = versions | {"threads": args.threads, "rows": rows, "peak_rss_mib": _peak_rss_mib()}
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
