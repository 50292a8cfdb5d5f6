"""Per-family tasks of the one trainer: how a batch becomes a loss, and how to validate.

The training loop (`loop.py`) is shared; a task only knows its model's inputs and metrics, and
`families.py` says which task each model family uses.
Metric tensors stay on the device until the loop logs them, so no step forces a host sync.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from sensorlm.losses import SIGLIP_EXCHANGES, clip_loss_distributed, siglip_loss
from sensorlm.models.sst import month_of_year_from_last
from sensorlm.training.distributed import all_reduce_sum


def _to(batch: dict, device: torch.device, dtype: torch.dtype | None = None, cast: tuple[str, ...] = ()) -> dict:
    """Move tensors to the device, and the model inputs named in `cast` to `dtype` (DeepSpeed's
    bf16 mode casts the weights, not the inputs; targets stay fp32 for the loss)."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if dtype is not None and k in cast:
                v = v.to(dtype)
        out[k] = v
    return out


def input_dtype(engine) -> torch.dtype | None:
    """bf16 for a DeepSpeed engine in bf16; None for fp32 engines and plain modules."""
    bf16 = getattr(engine, "bfloat16_enabled", None)
    return torch.bfloat16 if bf16 is not None and bf16() else None


class SensorLMTask:
    """SigLIP training of the dual encoder; validation = loss + zero-shot accuracy over the dataset's
    labels (one prompt per label; unlabelled samples, label -1, count for the loss only)."""

    name = "sensorlm"

    def __init__(self, activities: list[str], prompts: list[str], tokenizer, text_len: int, device: torch.device,
                 exchange: str = "gather"):
        if exchange not in SIGLIP_EXCHANGES:
            raise ValueError(f"SigLIP exchange {exchange!r}: expected one of {sorted(SIGLIP_EXCHANGES)}")
        self.siglip = SIGLIP_EXCHANGES[exchange]
        if len(prompts) != len(activities):
            raise ValueError(f"{len(prompts)} prompts for {len(activities)} labels")
        self.activities = list(activities)
        self._prompts = list(prompts)
        self.tokenizer = tokenizer
        self.text_len = text_len
        self.device = device

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = _to(batch, self.device, input_dtype(engine), ("sensor",))
        out = engine(b["sensor"], b["input_ids"], b["attention_mask"], b.get("missing"), validate=False)
        # The loss in fp32 whatever the engine's precision: in bf16 the logits' log-sigmoid went
        # non-finite within 5 steps of the tiny preset on CPU (found by the non-finite guard).
        loss = self.siglip(out["sensor_emb"].float(), out["text_emb"].float(), out["t_prime"].float(),
                           out["bias"].float())
        return loss, {"temperature": out["t_prime"].detach().float().exp(), "bias": out["bias"].detach().float()}

    def prompts(self) -> list[str]:
        return list(self._prompts)

    @torch.no_grad()
    def evaluate(self, engine, batches: Iterable[dict], per_window: dict[str, dict[str, float]] | None = None
                 ) -> dict[str, float]:
        """Validation metrics; `per_window` (given in one process, e.g. the sweep's held-out
        scoring) is filled with each labelled window's zero-shot outcome (1.0 = correct) under
        ``"val/zero_shot_acc"``, by sample key, for a paired comparison of two models."""
        if self._prompts:
            ids, mask = self.tokenizer.encode(self.prompts(), self.text_len)
            ids = torch.as_tensor(ids, device=self.device)
            mask = torch.as_tensor(mask, device=self.device)
        # Through the engine's forward (not module.encode_text) so ZeRO-3 gathers the weights:
        # a dummy sensor batch rides along with the prompts.
        class_emb = None
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss*n, n, labelled
        k = len(self.activities)
        confusion = torch.zeros(k * k, device=self.device, dtype=torch.float64)  # true * k + predicted
        extra = torch.zeros(self.extra_sums, device=self.device, dtype=torch.float64)  # a subclass's own sums
        for batch in batches:
            b = _to(batch, self.device, input_dtype(engine), ("sensor",))
            out = engine(b["sensor"], b["input_ids"], b["attention_mask"], b.get("missing"), validate=False)
            if class_emb is None and self._prompts:
                sensor = b["sensor"][:1].expand(ids.shape[0], -1, -1)
                class_emb = engine(sensor, ids, mask, validate=False)["text_emb"].float()
            n = out["sensor_emb"].shape[0]
            # Local loss: ranks' last validation batches may differ in size, so no all-gather here.
            loss = siglip_loss(out["sensor_emb"].float(), out["text_emb"].float(), out["t_prime"], out["bias"])
            labelled = b["label"] >= 0
            if class_emb is not None:
                pred = (out["sensor_emb"].float() @ class_emb.T).argmax(dim=1)
                cells = b["label"][labelled].long() * k + pred[labelled]
                confusion.index_add_(0, cells, torch.ones_like(cells, dtype=torch.float64))
                if per_window is not None:
                    hits = (pred == b["label"].long())[labelled].double().tolist()
                    keys = [k for k, keep in zip(batch["key"], labelled.tolist()) if keep]
                    per_window.setdefault("val/zero_shot_acc", {}).update(zip(keys, hits))
            sums += torch.stack([loss.double() * n, torch.tensor(n, device=self.device, dtype=torch.float64),
                                 labelled.sum().double()])
            extra += self._batch_sums(out, b)
        all_reduce_sum(sums)
        all_reduce_sum(confusion)
        if extra.numel():
            all_reduce_sum(extra)
        n, labelled_n = sums[1].item(), sums[2].item()
        # no readable validation sample is no score (NaN stops the run), never a perfect loss of 0
        out = {"val/loss": sums[0].item() / n if n else float("nan"), "val/samples": n,
               "val/labelled_samples": labelled_n}
        if self.activities and labelled_n > 0:
            out["val/zero_shot_acc"] = confusion.view(k, k).trace().item() / labelled_n
            out.update(_class_balanced(confusion.view(k, k).cpu()))
        out.update(self._extra_metrics(extra.tolist()))
        return out

    # what a subclass validates beside the dual encoder's metrics: `extra_sums` float64 sums per
    # batch (all-reduced over the ranks), turned into metrics at the end
    extra_sums = 0

    def _batch_sums(self, out: dict, b: dict) -> torch.Tensor:
        return torch.zeros(0, device=self.device, dtype=torch.float64)

    def _extra_metrics(self, sums: list[float]) -> dict[str, float]:
        return {}


class CoCaTask(SensorLMTask):
    """The CoCa variant: the dual encoder's contrastive loss (SigLIP, or CLIP) plus
    ``caption_loss_weight`` x next-token cross-entropy of the captioning decoder, both reported;
    validation adds the caption loss and next-token accuracy over the caption tokens."""

    name = "sensorlm_coca"
    extra_sums = 3  # caption cross-entropy sum, correct next tokens, caption tokens

    def __init__(self, *args, caption_loss_weight: float = 2.0, contrastive_loss: str = "siglip", **kwargs):
        super().__init__(*args, **kwargs)
        self.caption_loss_weight = float(caption_loss_weight)
        self.contrastive_loss = contrastive_loss

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from sensorlm.models.coca import caption_loss

        b = _to(batch, self.device, input_dtype(engine), ("sensor",))
        out = engine(b["sensor"], b["input_ids"], b["attention_mask"], b.get("missing"), validate=False)
        zs, zt, t_prime = out["sensor_emb"].float(), out["text_emb"].float(), out["t_prime"].float()
        if self.contrastive_loss == "clip":
            contrastive = clip_loss_distributed(zs, zt, t_prime.exp())
        else:
            contrastive = self.siglip(zs, zt, t_prime, out["bias"].float())
        captioning = caption_loss(out["caption_logits"], b["input_ids"], b["attention_mask"])
        return contrastive + self.caption_loss_weight * captioning, {
            "contrastive_loss": contrastive.detach(), "caption_loss": captioning.detach(),
            "temperature": t_prime.detach().exp(), "bias": out["bias"].detach().float()}

    def _batch_sums(self, out: dict, b: dict) -> torch.Tensor:
        from sensorlm.models.coca import caption_token_stats

        return torch.stack(caption_token_stats(out["caption_logits"], b["input_ids"], b["attention_mask"])).double()

    def _extra_metrics(self, sums: list[float]) -> dict[str, float]:
        ce, hits, n = sums
        return {"val/caption_loss": ce / n if n else float("nan"), "val/caption_token_acc": hits / n if n else float("nan")}


def _class_balanced(confusion: torch.Tensor) -> dict[str, float]:
    """Beside accuracy: the majority class's share (what always answering it scores), balanced
    accuracy and macro-F1 over the classes present, from the all-reduced confusion counts."""
    support, predicted, tp = confusion.sum(1), confusion.sum(0), confusion.diag()
    present = support > 0
    f1 = torch.where(support + predicted > 0, 2 * tp / (support + predicted).clamp_min(1), torch.zeros_like(tp))
    return {"val/majority_share": float(support.max() / support.sum()),
            "val/zero_shot_balanced_acc": float((tp[present] / support[present]).mean()),
            "val/zero_shot_macro_f1": float(f1[present].mean())}


class SSTTask:
    """Monthly SST reconstruction: MSE on ocean pixels; RMSE in degrees C on held-out cloud
    pixels, on observed (not held-out) ocean pixels and on all ocean pixels, next to the
    climatology and observed-days-mean baselines (DINEOF, too slow for every validation, is in
    the evaluation job)."""

    name = "sst"
    _REGIONS = ("holdout", "observed", "ocean")
    _PREDICTORS = ("", "clim_", "obs_")  # model, climatology, observed-days mean

    def __init__(self, sst_std: float, num_months: int, device: torch.device):
        self.sst_std = float(sst_std)
        self.num_months = num_months
        self.device = device

    def _forward(self, engine, b: dict) -> torch.Tensor:
        month_of_year = month_of_year_from_last(b["month"].long().view(-1), self.num_months)
        pred = engine(
            b["daily"].unsqueeze(1), b["mask"].unsqueeze(1), b["padded_days"].bool(), b["land"].bool(), month_of_year
        )
        return pred[:, 0]

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = _to(batch, self.device, input_dtype(engine), ("daily", "mask"))
        pred = self._forward(engine, b).float()
        ocean = (~b["land"].bool()).float()
        loss = ((pred - b["target"]) ** 2 * ocean).sum() / ocean.sum().clamp_min(1)
        return loss, {}

    def _observed_mean(self, b: dict) -> torch.Tensor:
        """Mean of each pixel's observed days of the last month, the climatology where none."""
        days = b["daily"].shape[1] // self.num_months
        last = slice(b["daily"].shape[1] - days, None)
        seen = (b["mask"][:, last] == 0) & ~b["padded_days"].bool()[:, last, None, None]
        n = seen.sum(dim=1)
        mean = (b["daily"][:, last].float() * seen).sum(dim=1) / n.clamp_min(1)
        return torch.where(n > 0, mean, b["clim"])

    @torch.no_grad()
    def evaluate(self, engine, batches: Iterable[dict], per_window: dict[str, dict[str, float]] | None = None
                 ) -> dict[str, float]:
        """Validation RMSEs; `per_window` stays empty (an RMSE over pixels is no mean of
        per-window outcomes, so two models are compared on the point values)."""
        # squared-error sums per (predictor, region), then the pixel count of each region
        P, R = len(self._PREDICTORS), len(self._REGIONS)
        sums = torch.zeros(P * R + R, device=self.device, dtype=torch.float64)
        for batch in batches:
            b = _to(batch, self.device, input_dtype(engine), ("daily", "mask"))
            pred = self._forward(engine, b).float()
            ocean = ~b["land"].bool()
            hold = b["holdout"].bool() & ocean
            regions = (hold, ocean & ~hold, ocean)
            parts = []
            for p in (pred, b["clim"], self._observed_mean(b)):
                err = (p - b["target"]) ** 2
                parts += [(err * r).sum() for r in regions]
            parts += [r.sum() for r in regions]
            sums += torch.stack(parts).double()
        all_reduce_sum(sums)
        s = sums.tolist()
        rmse = lambda se, n: math.sqrt(se / n) * self.sst_std if n > 0 else float("nan")  # noqa: E731
        return {
            f"val/{prefix}rmse_{region}_c": rmse(s[i * R + j], s[P * R + j])
            for i, prefix in enumerate(self._PREDICTORS)
            for j, region in enumerate(self._REGIONS)
        }


class ProjectionTask:
    """ProjectionCL: symmetric InfoNCE with every rank's pairs as negatives; validation = loss and
    recall@1 in both directions over the whole validation part, each rank encoding and ranking
    its own slice of it against every rank's embeddings."""

    name = "projection_cl"

    def __init__(self, device: torch.device):
        self.device = device

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = _to(batch, self.device, input_dtype(engine), ("a", "b"))
        out = engine(b["a"], b["b"], return_embeddings=True)
        loss = clip_loss_distributed(out["emb_a"].float(), out["emb_b"].float(), out["logit_scale"].float())
        return loss, {"logit_scale": out["logit_scale"].detach().float().reshape(())}

    @torch.no_grad()
    def evaluate(self, engine, batches: Iterable[dict], per_window: dict[str, dict[str, float]] | None = None
                 ) -> dict[str, float]:
        """Validation loss and recall@1 both ways; `per_window` (one process) is filled with
        each pair's recall@1 hits by row number, under both recall metrics."""
        from sensorlm.training.distributed import all_gather_rows, all_reduce_sum

        batch = next(iter(batches), None)  # one batch, on every rank: its slice of the validation part
        if batch is None:
            return {"val/loss": float("nan")}
        b = _to(batch, self.device, input_dtype(engine), ("a", "b"))
        out = engine(b["a"], b["b"], return_embeddings=True)
        za, zb, scale = out["emb_a"].float(), out["emb_b"].float(), out["logit_scale"].float()
        keys, offset = all_gather_rows(torch.cat([za, zb], dim=1))  # both sides in one exchange
        keys_a, keys_b = keys.split([za.shape[1], zb.shape[1]], dim=1)
        mine = retrieval_sums(za, zb, keys_a, keys_b, offset, scale)
        if per_window is not None:
            for name, (q, k) in (("val/recall_at_1", (za, keys_b)), ("val/recall_at_1_b2a", (zb, keys_a))):
                hits = (q @ k.T).argmax(dim=1) == torch.arange(offset, offset + q.shape[0], device=q.device)
                per_window.setdefault(name, {}).update(
                    (str(offset + i), float(h)) for i, h in enumerate(hits.tolist()))
        # every rank's sums and row count add up to the metrics over all N pairs
        totals = all_reduce_sum(torch.cat([mine, mine.new_tensor([za.shape[0]])])).tolist()
        return _retrieval_metrics(totals[:4], int(totals[4]), float(scale.reshape(()).item()))


def retrieval_sums(qa: torch.Tensor, qb: torch.Tensor, ka: torch.Tensor, kb: torch.Tensor, offset: int,
                   scale: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Summed InfoNCE terms and recall@1 hits of the query rows `qa`/`qb` (rows ``offset..`` of all
    pairs) ranked against all N keys `ka`/`kb`, in row chunks so memory stays O(chunk * N).

    Returns:
        float64 (4,): A->B loss sum, B->A loss sum, A->B hits, B->A hits.
    """
    s = scale.reshape(())
    out = torch.zeros(4, device=qa.device, dtype=torch.float64)
    for side, (q, k) in enumerate(((qa, kb), (qb, ka))):
        for start in range(0, q.shape[0], chunk):
            logits = s * q[start : start + chunk] @ k.T
            target = torch.arange(offset + start, offset + start + logits.shape[0], device=logits.device)
            out[side] += torch.nn.functional.cross_entropy(logits, target, reduction="sum").double()
            out[2 + side] += (logits.argmax(dim=1) == target).sum().double()
    return out


def _retrieval_metrics(sums: list[float], n: int, scale: float) -> dict[str, float]:
    return {
        "val/loss": 0.5 * (sums[0] + sums[1]) / n if n else float("nan"),
        "val/recall_at_1": sums[2] / n if n else float("nan"),
        "val/recall_at_1_b2a": sums[3] / n if n else float("nan"),
        "val/logit_scale": scale,
    }


def retrieval_metrics(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor, chunk: int = 1024) -> dict[str, float]:
    """Symmetric InfoNCE over all N pairs at once and recall@1 both ways (A -> B: is the true partner
    the nearest of all N B's), in one process.

    Args:
        za, zb: (N, D) L2-normalised embeddings, row i paired.
        scale: the logit scale s.
    """
    sums = retrieval_sums(za, zb, za, zb, 0, scale, chunk)
    return _retrieval_metrics(sums.tolist(), za.shape[0], float(scale.reshape(()).item()))
