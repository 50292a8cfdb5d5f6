import pytest

from sensorlm.typed_config import ConfigError
from sensorlm.training.config import load_train_config
from sensorlm.training.deepspeed_config import build_deepspeed_config


def test_tiny_config_loads_with_overrides():
    cfg = load_train_config("configs/sensorlm_tiny.yaml", ["optim.lr=3e-4", "scaling.zero_stage=3", "steps=7"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.scaling.zero_stage == 3
    assert cfg.steps == 7
    assert cfg.model.preset == "sensorlm_tiny"


def test_named_config_resolves_to_configs_dir():
    assert load_train_config("sst_tiny").task == "sst"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=abc", "optim.lr"),
        ("scaling.zero_stage=5", "scaling.zero_stage"),
        ("steps=0", "steps"),
        ("batch_size=1", "batch_size"),
        ("model.preset=nope", "nope"),
        ("model.preset=sst_tiny", "task"),
        ("model.overrides.no_such_field=3", "no_such_field"),
        ("noequals", "key=value"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("configs/sensorlm_tiny.yaml", [override])


def test_unknown_key_in_yaml_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: sensorlm\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*optim.learning_rate"):
        load_train_config(str(bad))


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="neither a YAML file nor a config in configs/"):
        load_train_config("configs/does_not_exist.yaml")


def test_deepspeed_config_from_typed_config(tmp_path):
    cfg = load_train_config("sensorlm_tiny", ["optim.grad_accum=2", "batch_size=8"])
    ds = build_deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 8 * 2 * 2
    assert ds["zero_optimization"]["stage"] == cfg.scaling.zero_stage
    assert ds["bf16"]["enabled"] is False  # CPU -> fp32
    gpu = load_train_config("sensorlm_tiny", ["scaling.use_gpu=true"])
    assert build_deepspeed_config(gpu, 1)["bf16"]["enabled"] is True

    user = tmp_path / "ds.json"
    user.write_text('{"zero_optimization": {"reduce_bucket_size": 1000}, "gradient_clipping": 0.5}')
    cfg = load_train_config("sensorlm_tiny", [f"scaling.deepspeed_config={user}", "scaling.zero_stage=2"])
    ds = build_deepspeed_config(cfg, 1)
    assert ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": False, "contiguous_gradients": True, "reduce_bucket_size": 1000}
    shipped = build_deepspeed_config(load_train_config("sensorlm_tiny"), 1)  # the embedded default: one rank
    assert shipped["zero_optimization"]["stage"] == 0 and shipped["train_batch_size"] == 64


def test_missing_user_deepspeed_file_is_named():
    cfg = load_train_config("sensorlm_tiny", ["scaling.deepspeed_config=/nonexistent/ds.json"])
    with pytest.raises(ConfigError, match="/nonexistent/ds.json"):
        build_deepspeed_config(cfg, 1)


def test_augmentation_settings_are_checked():
    from sensorlm.typed_config import ConfigError
    from sensorlm.training.config import load_train_config

    cfg = load_train_config("sensorlm_tiny", ["data.augment.crop_min_fraction=0.75", "data.augment.channel_dropout=0.1"])
    assert (cfg.data.augment.crop_min_fraction, cfg.data.augment.channel_dropout) == (0.75, 0.1)
    with pytest.raises(ConfigError, match=r"data.augment.crop_min_fraction must lie in \(0, 1\], got 1.5"):
        load_train_config("sensorlm_tiny", ["data.augment.crop_min_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"data.augment.channel_dropout must lie in \[0, 1\), got -0.1"):
        load_train_config("sensorlm_tiny", ["data.augment.channel_dropout=-0.1"])


def test_an_elastic_worker_range_is_read_and_checked():
    cfg = load_train_config("sensorlm_tiny", ["scaling.num_workers=[1,4]", "scaling.resize_check_s=5"])
    assert cfg.scaling.num_workers == (1, 4) and cfg.scaling.elastic and cfg.scaling.max_workers == 4
    fixed = load_train_config("sensorlm_tiny", ["scaling.num_workers=3"]).scaling
    assert not fixed.elastic and fixed.max_workers == 3
    for bad, message in (("[3,1]", r"1 <= min <= max, got \[3, 1\]"), ("[0,2]", r"got \[0, 2\]"),
                         ("[1,2,3]", "expected 2 items, got 3"),
                         ("[a,2]", r"scaling.num_workers\[0\]: expected an integer, got 'a'")):
        with pytest.raises(ConfigError, match=message):
            load_train_config("sensorlm_tiny", [f"scaling.num_workers={bad}"])
    with pytest.raises(ConfigError, match="scaling.resize_check_s must be > 0"):
        load_train_config("sensorlm_tiny", ["scaling.resize_check_s=0"])
    with pytest.raises(ConfigError, match="scaling.start_timeout_s must be > 0, got -1"):
        load_train_config("sensorlm_tiny", ["scaling.start_timeout_s=-1"])


def test_an_elastic_run_keeps_the_global_batch_of_its_full_group():
    from sensorlm.training.deepspeed_config import build_deepspeed_config

    cfg = load_train_config("sensorlm_tiny", ["scaling.num_workers=[1,4]", "batch_size=8", "optim.grad_accum=2"])
    # 8 x 2 x 4 = 64 samples per step on 4, 2 or 1 workers; 3 workers get the nearest (8 x 3 x 3 = 72)
    assert [cfg.scaling.grad_accum_at(w, 2) for w in (1, 2, 3, 4)] == [8, 4, 3, 2]
    for world, accum in ((1, 8), (2, 4), (4, 2)):
        ds = build_deepspeed_config(cfg, world)
        assert (ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (accum, 64)
    fixed = load_train_config("sensorlm_tiny", ["scaling.num_workers=4", "batch_size=8", "optim.grad_accum=2"])
    # a fixed-size run resumed on another count (a changed config) runs what the config says
    assert fixed.scaling.grad_accum_at(1, 2) == 2 and build_deepspeed_config(fixed, 1)["train_batch_size"] == 16
