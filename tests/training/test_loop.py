"""The worker loop's handling of errors that would recur (no Ray run: Ray's context is faked)."""

import pytest


class _Context:
    def get_world_rank(self):
        return 1


def test_a_recurring_error_is_recorded_and_the_restarted_workers_do_not_train(tmp_path, monkeypatch, capsys):
    import ray.train
    from mlflow.tracking import MlflowClient

    from sensorlm.typed_config import to_dict
    from sensorlm.tracking.mlflow_utils import FAILURE_TAG
    from sensorlm.training import loop
    from sensorlm.training.config import TrainConfig

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    config = {"train": to_dict(TrainConfig()), "run": {"mlflow_run_id": run_id, "tracking_uri": uri}}
    attempts, reports = [], []

    def failing_train(cfg, run):
        attempts.append(1)
        raise ValueError("sensor input: expected shape (B, 144, 34), got (32, 120, 7)\n(details)")

    monkeypatch.setattr(loop, "_train", failing_train)
    monkeypatch.setattr(ray.train, "get_context", lambda: _Context())
    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    # first attempt: the error is recorded on the run (one line, naming the rank) and raised to Ray
    with pytest.raises(ValueError):
        loop.train_loop_per_worker(config)
    message = client.get_run(run_id).data.tags[FAILURE_TAG]
    assert message == "ValueError on rank 1: sensor input: expected shape (B, 144, 34), got (32, 120, 7) (details)"
    assert "not retried: it would recur" in capsys.readouterr().out
    # Ray restarts the worker group: the workers report the failure and end without training
    loop.train_loop_per_worker(config)
    assert len(attempts) == 1 and reports == [{"step": 0, "fatal_error": message}]
    # a worker death (no Python error) leaves nothing recorded: a restart trains again
    client.delete_tag(run_id, FAILURE_TAG)
    monkeypatch.setattr(loop, "_train", lambda cfg, run: attempts.append(2))
    loop.train_loop_per_worker(config)
    assert attempts == [1, 2]
