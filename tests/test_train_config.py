"""Training configs: packaged defaults <- YAML files <- key=value overrides, strict keys and types."""
from __future__ import annotations

import re

import pytest
import yaml

from lafs_edge.cli import main
from lafs_edge.errors import UserError
from lafs_edge.train.config import CONFIG_DIR, load_config, save_config
from lafs_edge.train.schema import STAGES
from lafs_edge.train.schema.checks import leaves

pytestmark = pytest.mark.training


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
    assert main(["train", "supervised", "head.kind=arcface", "--print-config"]) == 0
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
    for stage, schema in STAGES.items():
        load_config(stage, [f"{stage}_smoke"])
        for name, leaf in leaves(schema):
            if leaf.kind in (int, float, list):
                assert leaf.range is not None, f"{stage}: {name} has no range"


def test_cli_reports_an_out_of_range_setting_in_one_line(capsys):
    assert main(["train", "supervised", "optim.batch_size=-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: optim.batch_size = -4 is out of range: must be in [1, inf)"]


# Issue 15: the schema (train/schema/) checks types, choices and ranges at load; each of
# these used to load and fail (or train wrongly) later, deep inside a stage.
@pytest.mark.parametrize("stage, override, message", [
    ("supervised", "head.kind=softmax",
     "command line: head.kind expects one of cosface, arcface, got 'softmax'"),
    ("supervised", "train.device=gpu", "train.device expects one of auto, cuda, cpu, got 'gpu'"),
    ("finetune", "train.precision=fp8", "train.precision expects one of auto, fp32, bf16, fp16"),
    ("supervised", "data.format=landmarks",
     "data.format expects one of folder, recordio, webdataset, synthetic, got 'landmarks'"),
    ("pretrain", "views.kind=grid", "views.kind expects one of landmarks, random_crops"),
    ("pretrain", "dino.export=ema", "dino.export expects one of teacher, student"),
    ("distill", "distill.loss=l1", "distill.loss expects one of cosine, l2, got 'l1'"),
    ("distill", "distill.projection=sometimes",
     "distill.projection expects one of auto, always, never, got 'sometimes'"),
    ("distill", "distill.targets=disk", "distill.targets expects one of online, loader, cached"),
])
def test_a_value_outside_the_allowed_choices_fails_at_load(stage, override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(stage, [], [override])


@pytest.mark.parametrize("override, message", [
    ("head.margin=abc", "head.margin expects float or null, got 'abc'"),
    ("optim.lr=null", "optim.lr expects float, got None"),
    ("data.root=3", "data.root expects str or null, got 3"),
    ("optim.betas=[0.9]", "optim.betas expects a list of 2 numbers, got [0.9]"),
    ("augment.crop_scale=[0.5, x]", "augment.crop_scale expects a list of 2 numbers"),
])
def test_a_value_of_the_wrong_type_fails_at_load(override, message):
    with pytest.raises(UserError, match=re.escape(f"command line: {message}")):
        load_config("supervised", [], [override])


def test_a_float_written_without_a_dot_is_read_as_a_float_everywhere():
    """YAML 1.1 reads `1e-1` as a string; a nullable float (head.margin) used to keep it."""
    cfg = load_config("supervised", [], ["head.margin=1e-1", "augment.crop_scale=[4e-1, 1]"])
    assert cfg["head"]["margin"] == 0.1 and cfg["augment"]["crop_scale"] == [0.4, 1.0]
    with pytest.raises(UserError, match=re.escape("head.margin = 2.0 is out of range: must be "
                                                  "in [0, 1.5]")):
        load_config("supervised", [], ["head.margin=2e0"])


@pytest.mark.parametrize("stage, override, fragment", [
    ("pretrain", "views.local_crop_scale=[0.5, 0.2]", "must be a [low, high] pair"),
    ("pretrain", "augment.blur_prob=[1.0, 0.1, 1.5]", "augment.blur_prob = [1.0, 0.1, 1.5] is out"),
    ("distill", "distill.embedding_weight=-1", "distill.embedding_weight = -1.0 is out of range"),
    ("finetune", "finetune.layer_decay=0", "finetune.layer_decay = 0.0 is out of range"),
])
def test_out_of_range_values_of_every_stage_fail_at_load(stage, override, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        load_config(stage, [], [override])


def test_cli_reports_a_bad_choice_in_one_line(capsys):
    assert main(["train", "distill", "distill.loss=l1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: command line: distill.loss expects one of cosine, l2, got 'l1'"]


def engine_defaults() -> dict:
    return yaml.safe_load((CONFIG_DIR / "engine.yaml").read_text())


def test_every_stage_inherits_the_engine_section():
    engine = engine_defaults()
    for stage in STAGES:
        stage_file = yaml.safe_load((CONFIG_DIR / f"{stage}.yaml").read_text())
        assert "train" not in stage_file and "seed" not in stage_file
        cfg = load_config(stage)
        assert cfg["train"] == engine["train"] and cfg["seed"] == engine["seed"]
        for key, value in stage_file["optim"].items():  # a stage keeps only what differs
            assert engine["optim"].get(key) != value, f"{stage}.yaml repeats optim.{key}"
    assert load_config("supervised")["optim"]["grad_clip"] == engine["optim"]["grad_clip"] == 5.0
    assert load_config("pretrain")["optim"]["grad_clip"] == 3.0  # pretrain.yaml overrides it


def test_a_stage_file_overrides_one_engine_key_and_inherits_the_rest(tmp_path, monkeypatch):
    for path in CONFIG_DIR.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    with (tmp_path / "supervised.yaml").open("a") as stage_file:
        stage_file.write("train:\n  log_every: 7\n")
    monkeypatch.setattr("lafs_edge.train.config.CONFIG_DIR", tmp_path)
    train = load_config("supervised")["train"]
    assert train == {**engine_defaults()["train"], "log_every": 7}


def test_the_saved_config_holds_every_inherited_key(tmp_path):
    saved = save_config(load_config("finetune", ["finetune_smoke"]), tmp_path / "config.yaml")
    text = yaml.safe_load(saved.read_text())
    engine = engine_defaults()
    assert text["seed"] == engine["seed"]
    assert text["train"] == {**engine["train"], "checkpoint_every": 20, "log_every": 5}
    assert {**engine["optim"], **text["optim"]} == text["optim"]  # every engine optim key
    assert text["optim"]["betas"] == engine["optim"]["betas"]
    assert list(text) == list(STAGES["finetune"].__dataclass_fields__)


def test_a_section_written_twice_is_refused(tmp_path, capsys):
    """YAML keeps the last of two equal keys: a second `optim:` would silently drop the first
    one's settings (issue 24 item 12)."""
    from lafs_edge.cli import main

    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.1\nseed: 3\noptim:\n  batch_size: 8\n")
    assert main(["train", "distill", "--config", str(path), "--print-config"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'optim' appears twice" in err[0] and "line 1 and 4" in err[0], err
