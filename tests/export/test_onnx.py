"""ONNX export: parity, metadata, dynamic batch, the CLI, and predict on both backends.

Real onnxruntime, no mocks. One tiny LeNet-5 run on the bundled digits (1 epoch) is
trained per module; the zoo test exports MobileNetV2 at 64x64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnkit.cli import main  # noqa: E402
from cnnkit.data import Preprocess  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.export import OnnxClassifier, to_onnx  # noqa: E402
from cnnkit.export import predict as onnx_predict  # noqa: E402
from cnnkit.train import classify  # noqa: E402


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _ort_logits(sess: ort.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    name = sess.get_inputs()[0].name
    return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("proj")
    res = classify.train(
        model="lenet5", data="digits", epochs=1, batch=256, verbose=0, project=str(project)
    )
    return res.run_dir


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("onnx") / "lenet5.onnx"
    res = to_onnx(run, path)
    return path, res


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Real image files of mixed sizes and modes (grey digits, RGB noise)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("imgs")
    digits = load_digits()
    for i in range(6):
        a = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)  # (8, 8) grey
        Image.fromarray(a).save(folder / f"digit{i}.png")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 30), (17, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"rgb{i}.jpg"
        )
    return folder


def test_export_parity_checked_independently(run, exported):
    path, res = exported
    assert path.is_file() and res.path == path and res.size_bytes == path.stat().st_size
    assert res.parity <= 1e-4 and res.input_size == (32, 32, 1)
    model, _ = classify.load_run_model(run)
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(123))  # NCHW
    with torch.no_grad():
        ref = model(x)
    got = _ort_logits(_session(path), x)
    assert got.shape == ref.shape == (5, 10)
    assert float((got - ref).abs().max()) < 1e-4


def test_metadata_round_trip(run, exported):
    path, res = exported
    _, meta = classify.load_run_model(run)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["cnnkit.preprocess"]) == meta["preprocess"]
    assert json.loads(props["cnnkit.classes"]) == list(meta["classes"])
    assert json.loads(props["cnnkit.model"]) == "lenet5"
    assert props == res.metadata
    clf = OnnxClassifier(path)
    assert clf.preprocess == Preprocess.from_dict(meta["preprocess"])
    assert clf.classes == [str(c) for c in meta["classes"]]


def test_dynamic_batch(run, exported):
    path, _ = exported
    model, _ = classify.load_run_model(run)
    sess = _session(path)
    for n in (1, 7):
        x = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(n))  # NCHW
        with torch.no_grad():
            ref = model(x)
        got = _ort_logits(sess, x)
        assert got.shape == (n, 10)
        assert float((got - ref).abs().max()) < 1e-4


def test_bench_reports_both_backends(run, tmp_path):
    res = to_onnx(run, tmp_path / "b.onnx", bench=True, bench_batch=8)
    got = {(t.backend, t.batch) for t in res.timings}
    assert got == {(b, n) for b in ("PyTorch eager", "ONNX Runtime") for n in (1, 8)}
    assert all(t.min_ms <= t.median_ms <= t.max_ms and t.images_per_s > 0 for t in res.timings)


def test_cli_export_subprocess(run, tmp_path, cnnkit_cli):
    out = tmp_path / "cli.onnx"
    r = cnnkit_cli(
        ["export", f"run={run}", "format=onnx", f"out={out}", "bench=false"], cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "parity: max abs diff" in r.stdout and "over 4 images (fp32)" in r.stdout
    assert str(out) in r.stdout and out.is_file()
    assert r.stdout.splitlines()[-1].startswith(f"model saved in {out} (cnnkit predict model=")


def test_cli_export_mistakes(run, tmp_path, capsys):
    assert main(["export", f"run={run}", "format=tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "allowed formats: onnx" in err and err.count("\n") == 0
    assert main(["export", f"run={tmp_path / 'nope'}", "format=onnx"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", f"run={run}", "out=model.pt"]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert main(["export", f"run={run}", "fromat=onnx"]) == 2
    assert "did you mean format=?" in capsys.readouterr().err
    assert main(["export", f"run={run}", "tol=-1"]) == 2
    assert "tol must be a positive number, got -1; e.g. tol=1e-3." in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


def test_predict_backends_agree(run, exported, images):
    path, _ = exported
    ref = classify.predict(run, images, topk=10)
    got = onnx_predict(path, images, topk=10)
    assert [p.path for p in got] == [p.path for p in ref] and len(ref) == 8
    for a, b in zip(ref, got):
        pa, pb = dict(a.top), dict(b.top)
        assert pa.keys() == pb.keys()
        assert max(abs(pa[k] - pb[k]) for k in pa) < 1e-4
        if a.top[0][1] - a.top[1][1] > 1e-4:  # a clear winner must be the same class
            assert a.label == b.label


def test_cli_predict_backends(run, exported, images, capsys):
    path, _ = exported
    assert main(["predict", f"run={run}", f"source={images}"]) == 0
    torch_lines = capsys.readouterr().out.splitlines()
    assert main(["predict", f"model={path}", "backend=onnxruntime", f"source={images}"]) == 0
    ort_lines = capsys.readouterr().out.splitlines()
    assert len(ort_lines) == len(torch_lines) == 8
    assert [s.split(":")[0] for s in ort_lines] == [s.split(":")[0] for s in torch_lines]


def test_cli_predict_mistakes(run, exported, images, capsys):
    path, _ = exported
    cases = [
        (["predict", f"run={run}", "backend=onnxruntime", f"source={images}"], "model=FILE.onnx"),
        (["predict", f"model={path}", f"source={images}"], "add backend=onnxruntime"),
        (["predict", f"weights={path}", f"source={images}"], "backend=onnxruntime"),
        (["predict", f"model={path}", "backend=tensorrt", f"source={images}"], "backend=torch"),
        (["predict", "model=missing.onnx", "backend=onnxruntime", f"source={images}"], "export"),
    ]
    for argv, hint in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert hint in err and err.count("\n") == 0, err


def test_bad_onnx_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CnnkitError, match="not a valid ONNX model"):
        OnnxClassifier(bad)


def test_bare_model_needs_input_size(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(CnnkitError, match="input_size"):
        to_onnx(model, tmp_path / "m.onnx")


@pytest.mark.slow
def test_zoo_mobilenet_v2_parity(tmp_path):
    from cnnkit.models import create

    torch.manual_seed(0)
    model = create("mobilenet_v2", num_classes=10)
    # fresh MobileNetV2 gives logits of ~1e-9 (a vacuous parity check): give its batch
    # norms the statistics of real activations first, so the logits are O(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 64, 64))
    model.eval()
    path = tmp_path / "mnv2.onnx"
    res = to_onnx(model, path, input_size="64x64x3", classes=[f"c{i}" for i in range(10)])
    assert res.parity <= 1e-4
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # NCHW
    with torch.no_grad():
        ref = model(x)
    got = _ort_logits(_session(path), x)
    assert got.shape == (3, 10) and float(ref.abs().max()) > 0.1
    assert float((got - ref).abs().max()) < 1e-4
    got_p = onnx_predict(path, x, topk=10)  # a tensor batch needs no preprocessing
    ref_p = classify.predict(model, x, classes=[f"c{i}" for i in range(10)], topk=10)
    for a, b in zip(ref_p, got_p):
        pa, pb = dict(a.top), dict(b.top)
        assert max(abs(pa[k] - pb[k]) for k in pa) < 1e-4


class _AlwaysDropout(torch.nn.Module):
    """A common bug: dropout hard-wired on, so the model is random even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean((2, 3))  # (B, 4, 6, 6) -> (B, 4)
        return self.fc(torch.nn.functional.dropout(h, 0.5, training=True))


def test_parity_failure_writes_nothing_and_names_the_cause(tmp_path):
    out = tmp_path / "random.onnx"
    with pytest.raises(CnnkitError) as e:
        to_onnx(_AlwaysDropout(), out, input_size="8x8x1")
    msg = str(e.value)
    assert msg.startswith("the model is random at inference: two PyTorch passes over the same 4")
    assert "training=self.training" in msg and "nothing was written" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_parity_failure_at_huge_logits_says_rounding_and_tol_accepts_it(tmp_path, capsys):
    # a real mismatch: logits of about 1e5 carry fp32 rounding far above 1e-4 when ONNX
    # Runtime sums in another order than PyTorch
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3), torch.nn.Flatten(), torch.nn.Linear(64 * 30 * 30, 3)
    )
    with torch.no_grad():
        model[2].weight.mul_(1e5)
    out = tmp_path / "big.onnx"
    with pytest.raises(CnnkitError) as e:
        to_onnx(model, out, input_size="32x32x1")
    msg = str(e.value)
    assert msg.startswith("the ONNX model's logits differ from PyTorch's by ")
    assert "fp32 rounding at this scale; nothing was written; pass tol=" in msg
    assert not out.exists()
    tol = float(msg.rsplit("tol=", 1)[1].split()[0].rstrip("."))
    res = to_onnx(model, out, input_size="32x32x1", tol=tol)
    assert out.exists() and 1e-4 < res.parity <= tol
