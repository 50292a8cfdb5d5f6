"""The family registry (sensorlm/families/) and the ProjectionCL task."""

import math

import pytest
import torch

from sensorlm.typed_config import ConfigError, to_dict
from sensorlm.training.config import load_train_config
from sensorlm.families import FAMILIES, family_of_config, resolve


def test_every_family_names_what_each_layer_needs():
    from sensorlm.models import get_preset

    assert set(FAMILIES) == {"sensorlm", "sensorlm_coca", "sst", "projection_cl"}
    for family in FAMILIES.values():
        resolve(family.serving)  # the pyfunc's input handler
        assert callable(resolve(family.evaluator))
        assert family.default_metric in family.metrics and set(family.metrics.values()) <= {"min", "max"}
        cfg = load_train_config(f"{family.name}_tiny")  # a shipped config per family
        assert family_of_config(get_preset(cfg.model.preset).config) is family
        if family.scale_bounds:
            assert set(family.scale_bounds) <= set(family.search)


def test_unknown_task_and_a_preset_of_another_family_are_named():
    with pytest.raises(ConfigError, match=r"task 'clip' is not a model family \(known: sensorlm, sensorlm_coca, sst, projection_cl\)"):
        load_train_config("sensorlm_tiny", ["task=clip"])
    with pytest.raises(ConfigError, match=r"model.preset 'sst_tiny' is a SSTConfig, but task 'projection_cl' needs a "
                                          r"ProjectionCLConfig"):
        load_train_config("projection_cl_tiny", ["model.preset=sst_tiny"])
    with pytest.raises(ConfigError, match=r"model.preset 'sensorlm_coca_tiny' is a SensorCoCaConfig, but task 'sensorlm' "
                                          r"needs a SensorLMConfig"):
        load_train_config("sensorlm_tiny", ["model.preset=sensorlm_coca_tiny"])
    with pytest.raises(ConfigError, match=r"batch_size must be >= 2 for the contrastive loss of task 'projection_cl'"):
        load_train_config("projection_cl_tiny", ["batch_size=1"])
    with pytest.raises(ConfigError, match=r"temperature_min \(5\.0\) is above temperature_max \(2\.0\)"):
        load_train_config("sensorlm_tiny", ["model.overrides.temperature_min=5", "model.overrides.temperature_max=2"])


def test_search_parameters_write_the_training_config():
    from sensorlm.tuning.trials import apply_trial_params

    cfg = apply_trial_params(load_train_config("sensorlm_tiny"),
                             {"temperature_init": 20.0, "temperature_min": 1.0, "temperature_max": 30.0, "lr": 0.01})
    assert cfg.model.overrides["t_prime_init"] == pytest.approx(math.log(20.0))
    assert (cfg.model.overrides["temperature_min"], cfg.model.overrides["temperature_max"]) == (1.0, 30.0)
    assert cfg.optim.lr == 0.01
    with pytest.raises(ConfigError, match=r"unknown sensorlm search parameter 'max_logit_scale'"):
        apply_trial_params(load_train_config("sensorlm_tiny"), {"max_logit_scale": 5.0})
    with pytest.raises(ConfigError, match=r"model.overrides: ProjectionCLConfig: min_logit_scale must be in \(0, max_logit_scale=10.0\]"):
        apply_trial_params(load_train_config("projection_cl_tiny"), {"min_logit_scale": 50.0, "max_logit_scale": 10.0})


def test_a_coca_sweep_may_sweep_the_caption_loss_weight():
    from sensorlm.tuning.space import load_sweep_config
    from sensorlm.tuning.trials import apply_trial_params

    sweep = ["task=sensorlm_coca", "base_config=sensorlm_coca_tiny", "metric=val/caption_loss", "mode=min"]
    cfg = load_sweep_config("siglip_tiny", [*sweep, "params.caption_loss_weight={type: choice, values: [1.0, 2.0]}"])
    assert cfg.params["caption_loss_weight"].values == [1.0, 2.0]
    trial = apply_trial_params(load_train_config("sensorlm_coca_tiny"), {"caption_loss_weight": 0.5, "lr": 0.01})
    assert trial.model.overrides["caption_loss_weight"] == 0.5 and trial.optim.lr == 0.01
    with pytest.raises(ConfigError, match=r"params.caption_loss_weight: must be >= 0 \(a weight\), got -1.0"):
        load_sweep_config("siglip_tiny", [*sweep, "params.caption_loss_weight={type: choice, values: [-1.0]}"])


def test_projection_model_input_follows_the_data(tmp_path):
    from sensorlm.data.embedding_pairs import make_synthetic_pairs, read_pairs_manifest
    from sensorlm.training.trainer import data_decides_model

    make_synthetic_pairs("tiny", tmp_path / "p")
    cfg = load_train_config("projection_cl_tiny", ["model.overrides.modality_dims=[32, 16]"])
    with pytest.raises(ConfigError, match=r"modality_dims=\[32, 16\] but the data's embeddings are \[64, 48\] wide"):
        data_decides_model(cfg, tmp_path / "p")
    cfg = load_train_config("projection_cl_tiny", ["model.preset=projection_cl"])  # 1280/768 preset
    fitted, manifest = data_decides_model(cfg, tmp_path / "p")
    assert fitted.model.overrides["modality_dims"] == [64, 48] and manifest == read_pairs_manifest(tmp_path / "p")
    assert to_dict(fitted.model.overrides)["min_logit_scale"] == 1.0  # the config's own overrides stay


def test_retrieval_metrics_match_the_model_loss_and_count_hits():
    from sensorlm.models import create_model
    from sensorlm.training.tasks import ProjectionTask, retrieval_metrics

    torch.manual_seed(0)
    model = create_model("projection_cl_tiny", modality_dims=[8, 8], embed_dim=8, logit_scale_init=3.0).eval()
    with torch.no_grad():
        model.proj_a[0].weight.copy_(torch.eye(8))
        model.proj_b[0].weight.copy_(torch.eye(8))
    a = torch.randn(10, 8)
    b = a + 0.01 * torch.randn(10, 8)
    out = model(a, b, return_embeddings=True)
    metrics = retrieval_metrics(out["emb_a"], out["emb_b"], out["logit_scale"], chunk=3)  # 3 + 3 + 3 + 1 rows
    with torch.no_grad():
        _, _, loss = model(a, b, return_loss=True)
    assert metrics["val/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["val/recall_at_1"] == 1.0 and metrics["val/recall_at_1_b2a"] == 1.0
    assert metrics["val/logit_scale"] == pytest.approx(3.0)
    assert ProjectionTask(torch.device("cpu")).evaluate(model, [{"a": a, "b": b}]) == pytest.approx(metrics)
    shuffled = ProjectionTask(torch.device("cpu")).evaluate(model, [{"a": a, "b": b[torch.roll(torch.arange(10), 1)]}])
    assert shuffled["val/recall_at_1"] == 0.0 and shuffled["val/loss"] > metrics["val/loss"]


def _sharded_validation_worker(r: int, dataset: str, init_file: str, part, out_file: str) -> None:
    import json

    import torch.distributed as dist

    from sensorlm.data.embedding_pairs import pair_loader, read_pairs_manifest
    from sensorlm.models import create_model
    from sensorlm.training.tasks import ProjectionTask

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=2)
    try:
        torch.manual_seed(0)
        dims = read_pairs_manifest(dataset)["dims"]
        model = create_model("projection_cl_tiny", modality_dims=dims).eval()
        metrics = ProjectionTask(torch.device("cpu")).evaluate(model, pair_loader(dataset, "val", 8, rank=r, world_size=2,
                                                                                  part=part))
        with open(f"{out_file}.{r}", "w") as f:
            json.dump(metrics, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("part", [None, "odd"])
def test_projection_validation_split_across_ranks_equals_one_process(tmp_path, part):
    """Each rank encodes and ranks its own slice of the validation part (not the whole part W
    times): the two ranks report exactly what one process computes over the whole part."""
    import json

    import torch.multiprocessing as mp

    from sensorlm.data.embedding_pairs import make_synthetic_pairs, pair_loader, read_pairs_manifest
    from sensorlm.models import create_model
    from sensorlm.training.tasks import ProjectionTask

    dataset = make_synthetic_pairs("tiny", tmp_path / "pairs")
    n_val = read_pairs_manifest(dataset)["splits"]["val"]["num_samples"]
    (first,), (second,) = (list(pair_loader(dataset, "val", 8, rank=r, world_size=2, part=part)) for r in (0, 1))
    whole = next(pair_loader(dataset, "val", 8, part=part))
    assert torch.equal(torch.cat([first["a"], second["a"]]), whole["a"])  # the slices make up the part
    out = tmp_path / "metrics.json"
    mp.spawn(_sharded_validation_worker, args=(str(dataset), str(tmp_path / "init"), part, str(out)), nprocs=2, join=True)
    by_rank = [json.loads(out.with_name(f"metrics.json.{r}").read_text()) for r in (0, 1)]
    torch.manual_seed(0)
    model = create_model("projection_cl_tiny", modality_dims=read_pairs_manifest(dataset)["dims"]).eval()
    alone = ProjectionTask(torch.device("cpu")).evaluate(model, [whole])
    assert by_rank[0] == by_rank[1] == pytest.approx(alone, rel=1e-6)
    assert whole["a"].shape[0] == (n_val if part is None else n_val // 2)


def test_no_family_is_dispatched_on_by_name_outside_its_record():
    """Adding a family is adding a record: no module outside sensorlm/families compares a task or
    family with a family's name (`if family == "sst"`); what differs lives in the record."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sensorlm"
    names = set(FAMILIES)
    found = []
    for path in sorted(root.rglob("*.py")):
        if "families" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            values = [node.left, *node.comparators]
            for v in values:
                items = v.elts if isinstance(v, (ast.Tuple, ast.List, ast.Set)) else [v]
                if any(isinstance(e, ast.Constant) and e.value in names for e in items):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_records_carry_what_was_dispatched_by_name():
    from sensorlm.families import embeds, get_family

    assert embeds("sensorlm") and not embeds("sst") and not embeds("projection_cl") and not embeds("hvt")
    assert get_family("sensorlm").input_array({"sensor": {"input_len": 1440, "num_channels": 34}}) == ("sensor", (1440, 34))
    assert get_family("sst").input_array({"months": 2, "days_per_month": 32, "height": 8, "width": 8}) == (
        "daily", (64, 8, 8))
    assert get_family("projection_cl").input_array is None
    assert get_family("sst").table_columns[0] == "model" and not get_family("sensorlm").table_columns
    assert get_family("sensorlm").higher_is_better() == [("val/zero_shot_acc", True), ("val/loss", False)]
    for family in FAMILIES.values():
        if family.stats_check:
            assert callable(resolve(family.stats_check))
