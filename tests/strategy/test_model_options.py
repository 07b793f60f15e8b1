"""Model options as training settings (``model.KEY=VALUE``) and as search dimensions.

The course's search space includes the number of layers and of hidden units. A run
trained with ``model.layers=3 model.units=16`` must build that network (its parameter
count, worked out by hand), keep the options in ``config.yaml`` and in the weights'
metadata, and be rebuilt from them (``cnnkit val`` scores what training scored). A
search over ``model.layers=1..3:int model.units=8..64:intlog`` draws whole numbers and
every trial's run is the network it drew.
"""

from __future__ import annotations

import itertools

import pytest
import yaml

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.models import create
from cnnkit.train.config import TrainConfig


def mlp_params(n_x: int, layers: int, units: int, K: int) -> int:
    """Weights and biases of ``[LINEAR -> ReLU] x layers -> LINEAR`` by hand."""
    sizes = [n_x, *[units] * layers, K]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def test_dotted_keys_become_model_args_and_round_trip():
    cfg = TrainConfig.from_dict({"model": "mlp", "model.layers": 3, "model.units": 16})
    assert cfg.model_args == {"layers": 3, "units": 16}
    again = TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg
    merged = TrainConfig.from_dict({"model_args": {"layers": 2, "dropout": 0.1}, "model.layers": 4})
    assert merged.model_args == {"layers": 4, "dropout": 0.1}
    with pytest.raises(CnnkitError, match=r"^model_args must map option names to values, got 3"):
        TrainConfig.from_dict({"model_args": 3})
    with pytest.raises(CnnkitError, match=r"^model_args must map option names"):
        TrainConfig.from_dict({"model_args": {"not a name": 1}})


def test_mlp_layers_and_units_build_the_network_they_name():
    m = create("mlp", num_classes=10, layers=3, units=16)
    assert sum(p.numel() for p in m.parameters()) == mlp_params(32 * 32, 3, 16, 10) == 17_114
    assert create("mlp", layers=1).body[1].out_features == 128  # units default 128
    with pytest.raises(CnnkitError, match=r"either hidden=.* or layers= and units=, not both"):
        create("mlp", layers=2, hidden=[4])
    with pytest.raises(CnnkitError, match=r"^units must be a positive whole number, got 2\.5"):
        create("mlp", units=2.5)
    with pytest.raises(CnnkitError, match=r"has no option 'unitz'; did you mean units\?"):
        create("mlp", unitz=3)


def test_a_run_keeps_its_model_options_and_is_rebuilt_from_them(tmp_path, capsys):
    args = ["model=mlp", "data=digits", "epochs=1", f"project={tmp_path}"]
    assert main(["train", *args, "model.layers=3", "model.units=16", "name=m", "report=false"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("training mlp (layers=3, units=16) on digits")
    run = tmp_path / "classify" / "m"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model_args"] == {"layers": 3, "units": 16}
    from cnnkit.train.classify import load_run_model

    model, meta = load_run_model(run)
    assert meta["model_args"] == {"layers": 3, "units": 16}
    assert sum(p.numel() for p in model.parameters()) == 17_114
    test_line = next(line for line in out.splitlines() if line.startswith("test accuracy"))
    assert main(["val", f"run={run}"]) == 0
    assert capsys.readouterr().out.strip() == test_line  # the same network, rebuilt
    # a mistake in an option: one sentence, exit 2, before any data is read or run made
    assert main(["train", *args, "model.unitz=16", "name=bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "cnnkit: error: model 'mlp' has no option 'unitz'; did you mean units? "
        "help(cnnkit.models.fc) lists its options."
    )
    assert not (tmp_path / "classify" / "bad").exists()


def test_search_draws_whole_layer_and_unit_counts(tmp_path):
    from cnnkit.strategy import tune

    res = tune(
        {"model.layers": "1..3:int", "model.units": "8..64:intlog"},
        trials=3,
        model="mlp",
        data="digits",
        epochs=1,
        study="mlp",
        project=str(tmp_path),
        plot=False,
        verbose=0,
    )
    from cnnkit.train.classify import load_run_model

    done = res.complete
    assert len(done) == 3
    for t in done:
        layers, units = t.params["model.layers"], t.params["model.units"]
        assert isinstance(layers, int) and 1 <= layers <= 3
        assert isinstance(units, int) and 8 <= units <= 64
        model, meta = load_run_model(t.run_dir)
        assert meta["model_args"] == {"layers": layers, "units": units}
        assert sum(p.numel() for p in model.parameters()) == mlp_params(1024, layers, units, 10)
