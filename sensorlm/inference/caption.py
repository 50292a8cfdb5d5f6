"""`sensorlm caption`: a captioning (`sensorlm_coca`) model over a dataset, Parquet days or device
exports -> Parquet captions, on the same Ray Data machinery as `sensorlm embed` (units, actors,
resume, the report; `sensorlm.inference.embed`).

One row per window: ``key``, ``split``, ``subject_id``, ``day``, ``label``, ``caption`` (generated)
and ``reference`` (the caption stored with the window, as the captioner computed it from the
recording; null where there is none). The schema metadata's ``sensorlm.embedding`` is "caption".
Greedy and beam search give the same captions on every run; ``top_p`` draws from a stream seeded by
``seed`` and the output file, so a resumed run writes what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sensorlm.inference import EmbedError
from sensorlm.inference.embed import EmbedInput, EmbedOptions, EmbedReport, embed


@dataclass(frozen=True)
class CaptionOptions:
    """Captions instead of embeddings (``sensorlm caption``; a `sensorlm_coca` model).

    Args:
        method: ``greedy``, ``beam`` or ``top_p`` (`sensorlm.models.generation`).
        max_len: caption length limit in tokens (at most the model's text context).
        num_beams: beams of ``beam``.
        top_p: nucleus of ``top_p``.
        seed: the sampling seed of ``top_p`` (each output file draws from its own seeded stream).
    """

    method: str = "greedy"
    max_len: int = 48
    num_beams: int = 4
    top_p: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        from sensorlm.models.generation import METHODS

        if self.method not in METHODS:
            raise EmbedError(f"method {self.method!r}: expected one of {list(METHODS)}")
        for name, low in (("max_len", 2), ("num_beams", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EmbedError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise EmbedError(f"top_p must be in (0, 1], got {self.top_p!r}")


def caption(model: str, out: str, source: EmbedInput | None = None, options: EmbedOptions | None = None,
            generation: CaptionOptions | None = None, log: Callable[[str], None] | None = print,
            **fields: Any) -> EmbedReport:
    """Caption every window of `source` with `model` into Parquet files under `out`.

    Args:
        model: a `sensorlm_coca` model: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or a package directory.
        out: output folder (a path or a pyarrow filesystem URI); existing files are kept (resume).
        source: what to caption (`EmbedInput`: a dataset, Parquet files or device exports).
        options: batch size, actors, CPUs/GPUs per actor, tracking URI (`EmbedOptions`).
        generation: how (`CaptionOptions`; default greedy, 48 tokens).
        log: progress printer, or None.
        **fields: fields of `EmbedInput` or `EmbedOptions` by name.

    Raises:
        EmbedError: a model without a decoder, text prompts as input, a bad option (one line).
    """
    return embed(model, out, source, options, log, captions=generation or CaptionOptions(), **fields)


__all__ = ["CaptionOptions", "caption"]
