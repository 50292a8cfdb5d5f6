"""The CoCa family end to end: `sensorlm train --config sensorlm_coca_tiny` registers a captioning
model whose two losses are logged apart; `sensorlm caption` writes each window's generated caption
beside its reference caption (resumable); the pyfunc answers a ``caption`` input; a model without a
decoder and text prompts are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sensorlm.cli import main as sensorlm_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import ray

    from sensorlm.data.prepare import prepare_synthetic
    from sensorlm.ray_runtime import init_ray

    root = tmp_path_factory.mktemp("coca")
    data = root / "wearable"
    prepare_synthetic("wearable", "tiny", data, seed=0, log=None)
    db = f"sqlite:///{root / 'mlflow.db'}"
    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2)
    code = sensorlm_main(["train", "--config", "sensorlm_coca_tiny", f"data.path={data}", "data.synthetic=null",
                          "steps=30", "log_every=10", "eval_every=30", "checkpoint.every_steps=30",
                          "optim.warmup_steps=5", "batch_size=32", f"storage_path={root / 'ray'}",
                          f"tracking.tracking_uri={db}", "tracking.system_metrics=false", "data.num_workers=0"])
    assert code == 0
    yield {"root": root, "data": data, "db": db}
    ray.shutdown()


def test_training_logs_both_losses_and_registers_the_captioner(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained["db"])
    version = client.get_model_version("sensorlm_coca", "1")
    history = {k: [m.value for m in client.get_metric_history(version.run_id, k)]
               for k in ("train/caption_loss", "train/contrastive_loss", "val/caption_loss", "val/caption_token_acc")}
    assert all(history.values()), history
    assert history["train/caption_loss"][-1] < history["train/caption_loss"][0]  # the decoder learns
    assert 0 < history["val/caption_token_acc"][-1] < 1


def test_caption_command_writes_captions_beside_references_and_resumes(trained, capsys):
    data, out = trained["data"], trained["root"] / "captions"
    args = ["caption", "models:/sensorlm_coca/1", "--data", str(data), "--split", "val", "--out", str(out),
            "--tracking-uri", trained["db"], "--max-len", "16", "--quiet"]
    assert sensorlm_main(args) == 0
    table = pq.read_table(out)
    manifest = json.loads((data / "manifest.json").read_text())
    assert table.num_rows == manifest["splits"]["val"]["num_samples"]
    assert table.column_names == ["key", "split", "subject_id", "day", "label", "caption", "reference"]
    rows = table.to_pylist()
    assert all(isinstance(r["caption"], str) and r["reference"] for r in rows)
    assert table.schema.metadata[b"sensorlm.embedding"] == b"caption"
    capsys.readouterr()
    assert sensorlm_main(args) == 0  # everything is there: nothing is captioned again
    assert f"0 rows in 0 files ({len(manifest['splits']['val']['shards'])} already done)" in capsys.readouterr().out
    # an embedding run into the same folder is refused (it would mix two kinds of files)
    assert sensorlm_main(["embed", "models:/sensorlm_coca/1", "--dataset", str(data), "--out", str(out),
                          "--tracking-uri", trained["db"], "--quiet"]) == 2
    assert "holds captions, not embeddings" in capsys.readouterr().err


def test_pyfunc_captions_raw_days(trained):
    from sensorlm.tracking.loading import load_model

    pyfunc = load_model("models:/sensorlm_coca/1", trained["db"]).pyfunc
    raw = np.random.default_rng(0).normal(size=(3, 144, 34)).astype(np.float32)
    raw[2] = np.nan  # a window with no data at all still gets a caption
    captions = pyfunc.predict(None, {"caption": raw})
    assert captions.shape == (3,) and all(isinstance(c, str) for c in captions)
    both = pyfunc.predict(None, {"caption": raw[:1], "text": ["a walk"]})
    assert set(both) == {"caption", "text_emb"} and both["text_emb"].shape == (1, 64)


def test_a_model_without_a_decoder_and_prompts_are_refused(trained, tmp_path, capsys):
    from sensorlm.inference.caption import CaptionOptions, caption
    from sensorlm.inference import EmbedError
    from sensorlm.models import create_model
    from sensorlm.tracking.package import save_model_package

    manifest = json.loads((trained["data"] / "manifest.json").read_text())
    dual = save_model_package(create_model("sensorlm_tiny"), "sensorlm_tiny", {}, tmp_path / "dual",
                              tokenizer_path=trained["data"] / "tokenizer.json",
                              data_stats={"stats": manifest["stats"]})
    assert sensorlm_main(["caption", str(dual), "--data", str(trained["data"]), "--out", str(tmp_path / "o")]) == 2
    assert "a 'sensorlm' model has no captioning decoder (caption needs a sensorlm_coca model)" in capsys.readouterr().err
    with pytest.raises(EmbedError, match="captions are written for sensor data"):
        caption("models:/sensorlm_coca/1", str(tmp_path / "t"), texts=["a walk"], tracking_uri=trained["db"], log=None)
    with pytest.raises(EmbedError, match="method 'nucleus'"):
        CaptionOptions(method="nucleus")
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()
