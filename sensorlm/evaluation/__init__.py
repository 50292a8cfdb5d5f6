"""Evaluation: metrics on frozen embeddings and SST maps, analysis figures, attention rollout.

No MLflow here: functions return metric dicts, figures and paths; jobs/evaluate.py logs them.
The plotting module sets matplotlib's headless Agg backend on import.
"""

from sensorlm.evaluation.metrics import (
    bidirectional_retrieval,
    climatology_baseline,
    linear_probe_few_shot,
    observed_mean_baseline,
    retrieval_recall,
    sst_baseline_skills,
    sst_skill,
    zero_shot_classification,
)
from sensorlm.evaluation.rollout import attention_rollout, block_attention, probe_attention, rollout

__all__ = [
    "attention_rollout",
    "bidirectional_retrieval",
    "block_attention",
    "climatology_baseline",
    "linear_probe_few_shot",
    "observed_mean_baseline",
    "probe_attention",
    "retrieval_recall",
    "rollout",
    "sst_baseline_skills",
    "sst_skill",
    "zero_shot_classification",
]
