"""Training configs: packaged defaults <- YAML files <- key=value overrides, strict keys and types."""
from __future__ import annotations

import re

import pytest
import yaml

from lafs_edge.cli import main
from lafs_edge.errors import UserError
from lafs_edge.train.config import CONFIG_DIR, load_config, save_config


def test_file_then_overrides_merge_in_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {lr: 0.5, batch_size: 7}\nmodel: {overrides: {depth: 3}}\n")
    cfg = load_config("supervised", [path], ["optim.lr=2e-4", "model.overrides.dim=64",
                                             "augment.crop_scale=[0.5, 1]", "data.root=null"])
    assert cfg["optim"]["lr"] == 2e-4 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["optim"]["batch_size"] == 7                     # from the file
    assert cfg["model"]["overrides"] == {"depth": 3, "dim": 64}  # free-form section accumulates
    assert cfg["augment"]["crop_scale"] == [0.5, 1]
    assert cfg["optim"]["warmup_epochs"] == 4.0                # untouched default


def test_int_is_accepted_for_float_and_converted():
    assert load_config("supervised", [], ["optim.lr=1"])["optim"]["lr"] == 1.0


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean optim.lr?)"),
    ("optim.lr=abc", "optim.lr expects float"),
    ("train.resume=3", "train.resume expects bool"),
    ("optim.batch_size=1.5", "optim.batch_size expects int"),
    ("optim=3", "optim is a section"),
    ("novalue", "expected dotted.key=value"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config("supervised", [], [override])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("head: {knd: arcface}\n")
    with pytest.raises(UserError, match=r"bad\.yaml: unknown config key 'head\.knd'"):
        load_config("supervised", [path])


def test_saved_config_reloads_to_the_same_config(tmp_path):
    cfg = load_config("supervised", ["supervised_smoke"], ["seed=3"])
    saved = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config("supervised", [saved]) == cfg


def test_every_packaged_config_loads_over_the_supervised_defaults():
    for path in CONFIG_DIR.glob("supervised*.yaml"):
        assert isinstance(load_config("supervised", [path]), dict)
        assert yaml.safe_load(path.read_text())


def test_cli_reports_a_bad_key_in_one_line(capsys):
    assert main(["train", "supervised", "head.kind=softmax", "--print-config"]) == 0
    assert main(["train", "supervised", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: command line: unknown config key 'optim.lrr' (did you mean optim.lr?)"]


@pytest.mark.parametrize("override, fragment", [
    ("optim.batch_size=-4", "optim.batch_size = -4 is out of range: must be in [1, inf)"),
    ("optim.batch_size=0", "optim.batch_size = 0 is out of range"),
    ("optim.lr=.nan", "optim.lr = nan is out of range: must be in (0, inf)"),
    ("optim.lr=-1e-3", "optim.lr = -0.001 is out of range"),
    ("optim.accumulate=0", "optim.accumulate = 0"),
    ("augment.flip=1.5", "augment.flip = 1.5 is out of range: must be in [0, 1]"),
    ("optim.betas=[0.9, 1.0]", "optim.betas = [0.9, 1.0] is out of range: must be each in [0, 1)"),
    ("augment.crop_scale=[0.9, 0.5]", "must be a [low, high] pair with low <= high"),
    ("train.log_every=0", "train.log_every = 0"),
    ("data.num_workers=-1", "data.num_workers = -1"),
    ("head.margin=.inf", "head.margin = inf is out of range"),
])
def test_numeric_settings_out_of_range_fail_at_load(override, fragment):
    """Issue 14: batch_size -4 hung at step 0 and 0 divided by zero, long after the start."""
    with pytest.raises(UserError, match=re.escape(fragment)):
        load_config("supervised", [], [override])


def test_out_of_range_values_in_a_file_are_refused_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {batch_size: 0}\n")
    with pytest.raises(UserError, match=re.escape("optim.batch_size = 0 is out of range")):
        load_config("supervised", [path])


def test_every_numeric_setting_of_every_stage_has_a_range():
    from lafs_edge.train.config import RANGES, check_ranges, flatten

    for stage in ("supervised", "pretrain", "finetune", "distill"):
        cfg = load_config(stage, [f"{stage}_smoke"])
        check_ranges(cfg)
        for name, value in flatten(load_config(stage)):
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              for v in values):
                assert name in RANGES, f"{stage}: {name} has no range"


def test_cli_reports_an_out_of_range_setting_in_one_line(capsys):
    assert main(["train", "supervised", "optim.batch_size=-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: optim.batch_size = -4 is out of range: must be in [1, inf)"]
