"""sensorlm/typed_config.py: typed configs from dicts, YAML and ``key=value`` overrides, every error naming
the key (and the file) at fault."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sensorlm.typed_config import ConfigError, deep_update, from_dict, load_yaml, merge_overrides, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)
    overrides: dict = field(default_factory=dict)


def test_from_dict_types_and_yaml_float_strings():
    cfg = from_dict(Run, {"steps": 20.0, "optim": {"lr": "3e-4", "betas": [0.8, 0.9]}})
    assert cfg.steps == 20 and cfg.optim.lr == pytest.approx(3e-4) and cfg.optim.betas == (0.8, 0.9)
    assert from_dict(Run, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stepz": 1}, r"unknown config key stepz; did you mean 'steps'\? \(valid keys: name, optim, overrides, steps\)"),
        ({"steps": "ten"}, r"steps: expected an integer, got 'ten'"),
        ({"steps": True}, r"steps: expected an integer"),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: expected a number, got 'fast'"),
        ({"optim": {"betas": [0.9]}}, r"optim\.betas: expected 2 items, got 1"),
        ({"optim": 3}, r"optim: expected a mapping for Optim"),
    ],
)
def test_from_dict_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Run, data)


def test_deep_update_merges_sections_and_replaces_leaf_dicts():
    dst = to_dict(Run(overrides={"depth": 2, "width": 8}))
    deep_update(dst, {"steps": 5, "optim": {"lr": 0.1}, "overrides": {"depth": 4}}, "run.yaml")
    assert dst["steps"] == 5 and dst["optim"] == {"lr": 0.1, "betas": [0.9, 0.95]}
    assert dst["overrides"] == {"depth": 4}  # a leaf section is replaced, not merged


def test_deep_update_unknown_key_names_file_path_and_valid_keys():
    dst = to_dict(Run())
    before = to_dict(Run())
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown config key optim\.lrr; did you mean 'lr'\? \(valid keys: betas, lr\)"):
        deep_update(dst, {"optim": {"lrr": 1}}, "run.yaml")
    assert dst == before


def test_merge_overrides_copies_and_validates_paths():
    data = to_dict(Run())
    out = merge_overrides(data, ["optim.lr=2e-3", "overrides.depth=3", "name=a=b"], free_sections=("overrides",))
    assert out["overrides"] == {"depth": 3} and out["name"] == "a=b"
    assert from_dict(Run, out).optim.lr == pytest.approx(2e-3)  # YAML 1.1 leaves "2e-3" a string
    assert data == to_dict(Run()), "the input dict is not modified"
    with pytest.raises(ConfigError, match=r"unknown config key optim\.momentum"):
        merge_overrides(data, ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match=r"steps is not a section; cannot set steps\.x"):
        merge_overrides(data, ["steps.x=1"])


def test_load_yaml_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match=f"config file {bad}: invalid YAML"):
        load_yaml(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        load_yaml(listed)
    assert bad.read_text() == "steps: [1, 2\n"


def test_caption_mix_and_prompt_template_checked():
    from sensorlm.training.config import load_train_config

    cfg = load_train_config("sensorlm_tiny", ["data.caption_mix={all: 2, high_summary: 1}",
                                              "data.caption_mix.low_middle=1"])
    assert cfg.data.caption_mix == {"all": 2, "high_summary": 1, "low_middle": 1}
    with pytest.raises(ConfigError, match="data.caption_mix: unknown caption key 'everything'"):
        load_train_config("sensorlm_tiny", ["data.caption_mix={everything: 1}"])
    with pytest.raises(ConfigError, match="data.caption_mix.low must be a weight >= 0"):
        load_train_config("sensorlm_tiny", ["data.caption_mix.low=-1"])
    with pytest.raises(ConfigError, match="has no {label} placeholder"):
        load_train_config("sensorlm_tiny", ["data.prompt_template=A day."])


def test_redact_removes_credentials_everywhere_they_hide():
    from sensorlm.typed_config import redact

    assert redact("http://trainer:s3cr3t@mlflow:5000") == "http://trainer:***@mlflow:5000"
    assert redact("postgresql://u:pw@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"
    assert redact("https://h/x?X-Amz-Signature=abc&token=t1&page=2") == "https://h/x?X-Amz-Signature=***&token=***&page=2"
    assert redact("key AKIAABCDEFGHIJKLMNOP here") == "key *** here"
    nested = {"tracking": {"tracking_uri": "http://a:b@h", "password": "pw", "api_key": ""}, "steps": 3,
              "list": ["s3://bucket/x", "http://c:d@h"]}
    assert redact(nested) == {"tracking": {"tracking_uri": "http://a:***@h", "password": "***", "api_key": ""},
                              "steps": 3, "list": ["s3://bucket/x", "http://c:***@h"]}
    for safe in ("sqlite:///mlflow.db", "http://mlflow:5000", "s3://bucket/ds", "file:///tmp/x"):
        assert redact(safe) == safe
    # Bearer tokens, Azure SAS signatures, secret-named variables set inside a pipe: command
    assert redact("Authorization: Bearer eyJhbGci.payload.sig") == "Authorization: Bearer ***"
    assert redact("https://a.blob.core.windows.net/c/x?sv=2022&sig=AbC%2Fd&se=1") == (
        "https://a.blob.core.windows.net/c/x?sv=2022&sig=***&se=1")
    assert redact("pipe:AWS_SECRET_ACCESS_KEY=abc123 AWS_SESSION_TOKEN='t o k' aws s3 cp s3://b/{name} -") == (
        "pipe:AWS_SECRET_ACCESS_KEY=*** AWS_SESSION_TOKEN=*** aws s3 cp s3://b/{name} -")
    assert redact("pipe:env AZURE_STORAGE_SAS_TOKEN=\"x y\" cat {name}") == "pipe:env AZURE_STORAGE_SAS_TOKEN=*** cat {name}"
    for safe in ("pipe:aws s3 cp s3://bucket/ds/{name} -", "data.path=/data/x", "Token authentication is enabled"):
        assert redact(safe) == safe


def test_ranked_checkpoints_are_saved_where_a_validation_ran():
    from sensorlm.training.config import load_train_config

    with pytest.raises(ConfigError, match=r"checkpoint.every_steps \(30\) must be a multiple of eval_every \(20\)"):
        load_train_config("sensorlm_tiny", ["eval_every=20", "checkpoint.every_steps=30"])
    cfg = load_train_config("sensorlm_tiny", ["eval_every=20", "checkpoint.every_steps=30", "checkpoint.best_metric=null"])
    assert cfg.checkpoint.best_metric is None
