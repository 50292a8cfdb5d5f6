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
from sensorlm.models.generation import Decoding


@dataclass(frozen=True)
class CaptionOptions(Decoding):
    """How to caption (`sensorlm.models.generation.Decoding`: method, max_len, num_beams, top_p,
    temperature) and ``seed``, the sampling seed of ``top_p`` (each output file draws from its own
    stream seeded by it and the file's name). A bad value is one `EmbedError`."""

    seed: int = 0

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as exc:
            raise EmbedError(str(exc)) from None


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
