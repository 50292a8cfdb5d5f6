"""`sensorlm embed`: a SensorLM model over a dataset (or text prompts) -> Parquet embeddings, with Ray Data.

Inputs, each cut into units of work, one output file per unit:

    a prepared dataset (directory or URL with manifest.json)  one unit per webdataset shard
    Parquet days (files or directories of them)               one unit per file
    device exports (CSV/Parquet), imported on the fly         imported into <out>/_import, then as a dataset
    text prompts                                              one unit per `PROMPTS_PER_FILE` prompts
                                                              (file name: index and hash of its prompts)

(units and their readers: `sensorlm.inference.inputs`).

The driver resolves and checks the model once (a registered ``models:/name/version`` or
``models:/name@alias`` is pinned to its version, so every actor loads the same weights even if the
alias moves), lists the units and drops those whose output file already exists (resume). The rest
go through ``ray.data.from_items(units).map_batches(_EmbedActor, batch_size=1, concurrency=N)``:
each actor loads the model package once with this installation's code (a registered version is
first checked against the digest recorded at registration; nothing stored with the model runs, and
nothing is unpickled) and per unit reads the input, embeds it in batches of ``batch_size`` on CPU or GPU and
writes ``<out>/<unit>.parquet`` under a temporary name, then renames it. The unit is the input file,
not the Ray block, because it is the unit of resume: Ray Data's own readers and ``write_parquet``
name output files after blocks and stop the whole read at a corrupt shard.

Output columns: ``key``, ``split``, ``subject_id`` and ``day`` (null where unknown), ``label`` (the
primary activity, null where unlabelled) and ``embedding`` (FixedSizeList<float32>[D], the pyfunc's
L2-normalised embedding); text files hold ``prompt`` and ``embedding``. The schema metadata holds
``sensorlm.model_uri`` (the pinned URI), ``sensorlm.model_version``, ``sensorlm.model_preset``,
``sensorlm.embedding`` ("sensor" or "text") and ``sensorlm.input``.

Bad data never stops a run: a sample that does not decode (wrong shape, NaN, missing member) is
skipped; a shard or file that cannot be read is skipped whole and writes no output, so a rerun tries
it again. Both are reported with reason, shard and key, in the returned `EmbedReport` and in
``<out>/_embed_report.json``. A bad run argument (missing model, missing dataset, a model whose input
shape is not the data's) raises one line naming it before Ray starts.

``<out>/_embed_model.json`` pins the folder to one model: resuming with another is refused.
One run per output folder at a time; the output folder (local, shared, or any pyarrow filesystem
URI such as ``s3://bucket/embeddings``) is the only state.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from sensorlm.inference import EmbedError
from sensorlm.inference.inputs import (
    PROMPTS_PER_FILE,
    BadInput,
    dataset_units,
    parquet_units,
    read_samples,
    stack_raw,
    text_units,
)

if TYPE_CHECKING:
    import numpy as np

# numpy, torch, ray, mlflow and pyarrow are imported where used: `sensorlm --help` imports this module.

MODEL_FILE = "_embed_model.json"  # the pinned model of the folder's embeddings
REPORT_FILE = "_embed_report.json"  # "_": pyarrow skips it when reading the folder
IMPORT_DIR = "_import"
MAX_REPORTED_BAD = 1000
_META = "sensorlm."


# ---------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what actors load and what the output metadata records.

    Args:
        uri: a pinned ``models:/name/version``, an MLflow model directory, or a package directory.
        kind: "registry", "mlflow" (a directory with an MLmodel file) or "package".
        version: the registry version ("" for a local directory).
        requested: what the user asked for (e.g. ``models:/name@champion``).
        tracking_uri: the MLflow tracking/registry URI to load registry models from.
    """

    uri: str
    kind: str
    version: str
    requested: str
    tracking_uri: str | None = None


def pin_model(model: str, tracking_uri: str | None = None) -> ModelRef:
    """Check that `model` exists and pin it (an alias becomes its current version).

    Args:
        model: ``models:/name/version``, ``models:/name@alias``, a model package directory (with
            model_config.json) or an MLflow model directory (with MLmodel).
        tracking_uri: MLflow tracking URI (default: ``MLFLOW_TRACKING_URI``, else ./mlflow.db).

    Raises:
        EmbedError / FileNotFoundError naming the model.
    """
    model = str(model)
    if model.startswith("models:"):
        from sensorlm.tracking.mlflow_utils import resolve_tracking_uri
        from sensorlm.tracking.resolve import pinned_version

        # the project's one default (MLFLOW_TRACKING_URI, else ./mlflow.db), as every command's
        tracking_uri = resolve_tracking_uri(tracking_uri)
        try:
            name, version = pinned_version(model, tracking_uri)
        except LookupError as exc:
            raise EmbedError(str(exc)) from None
        return ModelRef(f"models:/{name}/{version}", "registry", version, model, tracking_uri)
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"model {model}: no such directory (and not a models:/ URI)")
    from sensorlm.tracking.package import CONFIG_FILE

    if (path / CONFIG_FILE).is_file():
        return ModelRef(str(path.resolve()), "package", "", model)
    if (path / "MLmodel").is_file():
        return ModelRef(str(path.resolve()), "mlflow", "", model, tracking_uri)
    raise FileNotFoundError(f"model {model}: neither a model package ({CONFIG_FILE}) nor an MLflow model (MLmodel)")


def load_embedder(ref: ModelRef, device: str = "cpu"):
    """The `SensorLMPyfunc` of a resolved model, on `device`, built from the model package (weights
    and JSON) with this installation's code: nothing stored with the model is executed. A
    registered version is verified against the digest recorded at its registration first.

    Args:
        ref: from `pin_model`.
        device: "cpu" or a CUDA device.
    """
    from sensorlm.tracking.package import find_package_dir
    from sensorlm.tracking.pyfunc import SensorLMPyfunc

    if ref.kind == "registry":
        from sensorlm.tracking.loading import load_model

        embedder = load_model(ref.uri, ref.tracking_uri).pyfunc
    else:
        embedder = SensorLMPyfunc()
        embedder.load_package(find_package_dir(ref.uri, ref.requested))
    from sensorlm.families.registry import embeds

    if not embeds(embedder.family):
        raise EmbedError(
            f"model {ref.requested}: a {embedder.family!r} model has no embeddings (embed needs a SensorLM model)"
        )
    return embedder.to(device)


# ---------------------------------------------------------------------------------------------
# writing one unit


def _output_fs(out: str):
    """(pyarrow filesystem, root path) of an output folder path or URI; the folder is created."""
    from pyarrow import fs as pafs

    if "://" not in out:
        out = os.path.abspath(out)
        os.makedirs(out, exist_ok=True)
        return pafs.LocalFileSystem(), out
    filesystem, root = pafs.FileSystem.from_uri(out)
    filesystem.create_dir(root, recursive=True)
    return filesystem, root.rstrip("/")


def _embedding_array(emb: np.ndarray):
    import numpy as np
    import pyarrow as pa

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1])


def _write_atomic(filesystem, root: str, name: str, table) -> None:
    import pyarrow.parquet as pq

    tmp = f"{root}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with filesystem.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        filesystem.move(tmp, f"{root}/{name}")
    except BaseException:
        try:
            filesystem.delete_file(tmp)
        except Exception:
            pass
        raise


def _file_exists(filesystem, path: str) -> bool:
    from pyarrow import fs as pafs

    return filesystem.get_file_info(path).type == pafs.FileType.File


# ---------------------------------------------------------------------------------------------
# the actor


class _EmbedActor:
    """Loads the model once; per unit: read, embed in batches, write the output atomically."""

    def __init__(self, ref: dict[str, Any], out: str, batch_size: int, device: str, threads: int,
                 captions: dict[str, Any] | None = None):
        import torch

        torch.set_num_threads(max(1, threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.ref = ModelRef(**ref)
        self.embedder = load_embedder(self.ref, device)
        self.out, self.batch_size = out, batch_size
        self.captions = captions
        self.fs, self.root = _output_fs(out)
        # Torch, Ray and the model are here for the actor's life: out of the collector's
        # generations, each collection walks only what a unit allocates (a third of the time of
        # reading a shard went to collections walking them: bench/RESULTS.md, "Embed").
        gc.freeze()

    def _metadata(self, kind: str, unit: dict[str, Any]) -> dict[bytes, bytes]:
        e = self.embedder
        meta = {"model_uri": self.ref.uri, "model_version": self.ref.version, "model_requested": self.ref.requested,
                "model_preset": e.package.preset, "embed_dim": str(e.model.embed_dim), "embedding": kind,
                "input": unit.get("input", unit["shard"])}
        return {f"{_META}{k}".encode(): str(v).encode() for k, v in meta.items()}

    def _embed(self, fn, items: list) -> np.ndarray:
        import numpy as np
        import torch

        dim = self.embedder.model.embed_dim
        with torch.inference_mode():  # as pyfunc.predict does
            parts = [fn(items[i:i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def _unit_table(self, unit: dict[str, Any], bad: Callable[[str, str, str], None]):
        import pyarrow as pa

        if unit["type"] == "text":
            emb = self._embed(self.embedder.embed_text, unit["prompts"])
            table = pa.table({"prompt": pa.array(unit["prompts"], pa.string()), "embedding": _embedding_array(emb)})
            return table.replace_schema_metadata(self._metadata("text", unit))
        samples = read_samples(unit, bad)
        columns = {
            "key": pa.array([s.key for s in samples], pa.string()),
            "split": pa.array([s.split for s in samples], pa.string()),
            "subject_id": pa.array([s.subject_id for s in samples], pa.string()),
            "day": pa.array([s.day for s in samples], pa.int64()),
            "label": pa.array([s.label for s in samples], pa.string()),
        }
        if self.captions is not None:
            columns["caption"] = pa.array(self._caption(samples, unit), pa.string())
            columns["reference"] = pa.array([s.caption for s in samples], pa.string())
            return pa.table(columns).replace_schema_metadata(self._metadata("caption", unit))
        emb = self._embed(lambda chunk: self.embedder.embed_sensor(stack_raw(chunk)), samples)
        columns["embedding"] = _embedding_array(emb)
        return pa.table(columns).replace_schema_metadata(self._metadata("sensor", unit))

    def _caption(self, samples: list, unit: dict[str, Any]) -> list[str]:
        import zlib

        import torch

        from sensorlm.models.generation import Decoding

        opts = dict(self.captions)
        # a seed per output file: a resumed run samples what the first one would have
        seed = (int(opts.pop("seed")) * 1_000_003 + zlib.crc32(unit["output"].encode())) % (2**63)
        decoding = Decoding(**opts)
        out: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(samples), self.batch_size):
                out += self.embedder.caption_sensor(stack_raw(samples[i:i + self.batch_size]), decoding, seed + i)
        return out

    def process(self, unit: dict[str, Any]) -> dict[str, Any]:
        started, start = time.time(), time.perf_counter()
        bad_events: list[dict[str, str]] = []

        def bad(reason: str, key: str, detail: str) -> None:
            bad_events.append({"reason": reason, "shard": unit["shard"], "key": key, "detail": detail})

        result = {"output": unit["output"], "shard": unit["shard"], "rows": 0, "status": "written"}
        if _file_exists(self.fs, f"{self.root}/{unit['output']}"):
            result["status"] = "exists"
        else:
            try:
                table = self._unit_table(unit, bad)
                _write_atomic(self.fs, self.root, unit["output"], table)
                result["rows"] = table.num_rows
            except BadInput as exc:
                result["status"] = "skipped"
                bad_events.append({"reason": exc.reason, "shard": unit["shard"], "key": "", "detail": exc.detail})
            except Exception as exc:  # one unit's failure is reported; the run goes on
                result["status"] = "failed"
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                bad_events.append({"reason": "error", "shard": unit["shard"], "key": "",
                                   "detail": f"{type(exc).__name__}: {detail}"})
        result["seconds"] = time.perf_counter() - start
        result["span"] = [os.getpid(), started, time.time()]  # which actor, busy from, to (wall clock)
        result["bad"] = json.dumps(bad_events)
        return result

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [self.process(json.loads(u)) for u in batch["unit"]]
        out = {k: [r[k] for r in rows] for k in ("output", "shard", "status", "rows", "seconds", "bad")}
        out["span"] = [json.dumps(r["span"]) for r in rows]
        return out


# ---------------------------------------------------------------------------------------------
# the driver


@dataclass
class EmbedReport:
    """What a run did.

    Args:
        model_uri: the pinned model URI.
        model_version: its registry version ("" for a local directory).
        out: the output folder.
        written: output files written by this run.
        existing: output files already there (resumed, not recomputed).
        rows: samples (or prompts) embedded by this run.
        bad: skipped samples and units: {"reason", "shard", "key", "detail"} (first 1000).
        bad_count: how many were skipped in all.
        failed: units that wrote nothing (unreadable shards, errors); a rerun tries them again.
        seconds: wall time of the Ray part.
        busy_seconds: summed time the actors spent on units.
    """

    model_uri: str
    model_version: str
    out: str
    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    rows: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)
    bad_count: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    busy_seconds: float = 0.0
    all_busy_samples_per_s: float | None = None  # wall rate while every actor worked (no start-up)

    @property
    def samples_per_s(self) -> float:
        """Throughput of the whole run (wall clock, all actors)."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def samples_per_s_per_actor(self) -> float:
        """Throughput of one actor while it is busy (reading + embedding + writing)."""
        return self.rows / self.busy_seconds if self.busy_seconds > 0 else 0.0

    def summary(self) -> str:
        by_reason: dict[str, int] = {}
        for b in self.bad:
            by_reason[b["reason"]] = by_reason.get(b["reason"], 0) + 1
        text = (f"{self.rows} rows in {len(self.written)} files ({len(self.existing)} already done) in "
                f"{self.seconds:.1f} s: {self.samples_per_s:.1f} samples/s, {self.samples_per_s_per_actor:.1f} "
                f"samples/s per actor; {self.bad_count} skipped")
        if by_reason:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items())) + ")"
        return text


def _check_shape(ref: ModelRef, embedder, shape: Sequence[int] | None, what: str) -> None:
    if shape is not None and tuple(shape) != tuple(embedder.sample_shape):
        raise EmbedError(f"{what}: samples are (T, C) = {tuple(shape)} but model {ref.requested} expects "
                         f"{tuple(embedder.sample_shape)}")


@dataclass(frozen=True)
class EmbedInput:
    """What to embed: exactly one of `dataset`, `parquet`, `exports` or `texts`.

    Args:
        dataset: a prepared wearable dataset (directory or URL with manifest.json).
        splits: the dataset's splits to embed (default: all).
        parquet: wearable Parquet files or directories of them.
        exports: device export files (CSV/Parquet), imported into ``<out>/_import`` first.
        import_spec: `sensorlm.data.device_import.ImportSpec` for `exports` (default: from headers).
        labels: label file for `exports` (optional).
        texts: text prompts.
    """

    dataset: str | None = None
    splits: Sequence[str] | None = None
    parquet: Sequence[str] | None = None
    exports: Sequence[str] | None = None
    import_spec: Any = None
    labels: str | None = None
    texts: Sequence[str] | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("dataset", "parquet", "exports", "texts") if getattr(self, name)]
        if len(given) != 1:
            raise EmbedError(f"give exactly one input: a dataset, Parquet files, device exports or texts (got {given})")


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed.

    Args:
        batch_size: samples per model call.
        num_actors: actors (model copies) in the pool.
        cpus_per_actor: CPUs each actor reserves (also its torch threads).
        gpus_per_actor: GPUs each actor reserves; > 0 runs the model on CUDA.
        tracking_uri: MLflow tracking/registry URI for ``models:/`` (default: MLflow's current one).
        prompts_per_file: prompts per text output file.
    """

    batch_size: int = 64
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    tracking_uri: str | None = None
    prompts_per_file: int = PROMPTS_PER_FILE

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_actors", "prompts_per_file"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EmbedError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.cpus_per_actor > 0 or self.gpus_per_actor < 0:
            raise EmbedError(f"cpus_per_actor must be > 0 and gpus_per_actor >= 0 (got {self.cpus_per_actor}, "
                             f"{self.gpus_per_actor})")


def embed(model: str, out: str, source: EmbedInput | None = None, options: EmbedOptions | None = None,
          log: Callable[[str], None] | None = print, captions: Any = None, **fields: Any) -> EmbedReport:
    """Embed a dataset, Parquet days, device exports or text prompts with a SensorLM model.

    Output files that already exist in `out` are kept (resume); see the module docstring for the layout.

    Args:
        model: ``models:/name/version``, ``models:/name@alias``, or a local model package / MLflow
            model directory.
        out: output folder (a path or a pyarrow filesystem URI).
        source: what to embed (`EmbedInput`).
        options: how (`EmbedOptions`; default: its defaults).
        log: progress printer, or None.
        captions: a `sensorlm.inference.caption.CaptionOptions`: write generated captions instead of
            embeddings (``sensorlm caption``).
        **fields: fields of `EmbedInput` or `EmbedOptions` by name (``dataset=DIR, batch_size=16``),
            on top of `source` and `options`; an unknown name is one error.

    Raises:
        EmbedError / FileNotFoundError: one line naming the bad model, dataset or shape.
    """
    log = log or (lambda msg: None)
    input_names = {f.name for f in dataclasses.fields(EmbedInput)}
    option_names = {f.name for f in dataclasses.fields(EmbedOptions)}
    unknown = sorted(set(fields) - input_names - option_names)
    if unknown:
        raise EmbedError(f"embed: unknown option {unknown[0]!r} (inputs: {', '.join(sorted(input_names))}; "
                         f"options: {', '.join(sorted(option_names))})")
    picked = {k: v for k, v in fields.items() if k in input_names}
    source = dataclasses.replace(source, **picked) if source else EmbedInput(**picked)
    options = dataclasses.replace(options or EmbedOptions(), **{k: v for k, v in fields.items() if k in option_names})
    ref = pin_model(model, options.tracking_uri)
    # One load on the driver checks the family and the input shape before any actor starts.
    embedder = load_embedder(ref, "cpu")
    if captions is not None:
        if source.texts:
            raise EmbedError("captions are written for sensor data (--dataset, --parquet, --exports), not for prompts")
        if not hasattr(embedder.model, "caption_logits"):
            raise EmbedError(f"model {ref.requested}: a {embedder.family!r} model has no captioning decoder "
                             "(caption needs a sensorlm_coca model)")
    units = _units(source, options, ref, embedder, out, log)
    del embedder

    filesystem, root = _output_fs(out)
    _claim_folder(filesystem, root, ref, out, "caption" if captions else "embedding")
    report = EmbedReport(ref.uri, ref.version, out)
    from pyarrow import fs as pafs

    # one listing of the folder, not a probe per file (object stores)
    listing = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    done = {info.base_name for info in listing if info.type == pafs.FileType.File}
    pending = []
    for u in units:
        (report.existing.append(u["output"]) if u["output"] in done else pending.append(u))
    log(f"model {ref.uri} (from {ref.requested}); {len(units)} files, {len(report.existing)} already done, "
        f"{len(pending)} to embed")
    if pending:
        _run_units(pending, ref, out, report, options, log, captions)
    report_json = dataclasses.asdict(report)
    report_json.update(samples_per_s=report.samples_per_s, samples_per_s_per_actor=report.samples_per_s_per_actor)
    import pyarrow as pa

    with filesystem.open_output_stream(f"{root}/{REPORT_FILE}") as f:  # one small object: last writer wins
        f.write(pa.py_buffer(json.dumps(report_json, indent=1).encode()))
    log(report.summary())
    return report


def _units(source: EmbedInput, options: EmbedOptions, ref: ModelRef, embedder, out: str, log) -> list[dict]:
    """The units of work of `source` (device exports imported first), checked against the model's
    input shape: a dataset of another shape is a bad argument; Parquet files of another shape are
    skipped and reported (all of them: a bad argument)."""
    dataset, parquet = source.dataset, source.parquet
    if source.exports:
        dataset = _import_exports(source.exports, out, source.import_spec, source.labels, log)
    if dataset:
        units, manifest = dataset_units(dataset, source.splits)
        _check_shape(ref, embedder, manifest["sample_shape"]["sensor"], f"dataset {dataset}")
        return units
    if parquet:
        units, _ = parquet_units(parquet)
        for u in units:
            if "shape" in u and tuple(u["shape"]) != tuple(embedder.sample_shape):
                u["unreadable"] = (f"wrong_shape: samples are (T, C) = {tuple(u['shape'])}, model expects "
                                   f"{tuple(embedder.sample_shape)}")
        if all("unreadable" in u for u in units):
            raise EmbedError(f"parquet {parquet[0]}: no readable file of the model's shape ({units[0]['unreadable']})")
        return units
    return text_units(source.texts, options.prompts_per_file)


def _claim_folder(filesystem, root: str, ref: ModelRef, out: str, output: str) -> None:
    """Record the pinned model and the kind of output in ``<out>/_embed_model.json``, or refuse a
    folder that holds another model's outputs or the other kind (resuming would mix them)."""
    import pyarrow as pa

    path = f"{root}/{MODEL_FILE}"
    if _file_exists(filesystem, path):
        with filesystem.open_input_stream(path) as f:
            previous = json.loads(f.read().decode("utf-8"))
        if previous.get("model_uri") != ref.uri:
            raise EmbedError(f"output {out}: holds embeddings of {previous.get('model_uri')}, but this run's model is "
                             f"{ref.uri} (from {ref.requested}): use another output folder")
        if previous.get("output", "embedding") != output:
            raise EmbedError(f"output {out}: holds {previous.get('output', 'embedding')}s, not {output}s: use another "
                             "output folder")
        return
    with filesystem.open_output_stream(path) as f:
        f.write(pa.py_buffer(json.dumps({"model_uri": ref.uri, "model_version": ref.version,
                                         "model_requested": ref.requested, "output": output}).encode("utf-8")))


def _import_exports(exports, out: str, spec, labels, log) -> str:
    from sensorlm.data.device_import import import_device_export

    if "://" in out:
        raise EmbedError(f"output {out}: device exports are imported into <out>/{IMPORT_DIR}, which needs a path")
    target = Path(out) / IMPORT_DIR
    if (target / "manifest.json").is_file():
        log(f"device exports: reusing the import in {target}")
        return str(target)
    for e in exports:
        if not Path(e).is_file():
            raise FileNotFoundError(f"device export {e}: no such file")
    import_device_export(list(map(str, exports)), target, spec=spec, labels=labels, log=log)
    return str(target)


def _run_units(pending, ref: ModelRef, out: str, report: EmbedReport, options: EmbedOptions, log,
               captions: Any = None) -> None:
    import ray

    from sensorlm.ray_runtime import init_ray

    init_ray()  # RAY_ADDRESS's cluster, else a local Ray of this command's own (none if Ray is up)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    device = "cuda" if options.gpus_per_actor > 0 else "cpu"
    ds = ray.data.from_items([{"unit": json.dumps(u)} for u in pending], override_num_blocks=len(pending))
    ds = ds.map_batches(
        _EmbedActor,
        batch_size=1,  # one input file per call: the unit of atomic output and of resume
        compute=ray.data.ActorPoolStrategy(size=min(options.num_actors, len(pending))),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
        fn_constructor_kwargs={"ref": dataclasses.asdict(ref), "out": out, "batch_size": options.batch_size,
                               "device": device, "threads": max(1, math.floor(options.cpus_per_actor)),
                               "captions": dataclasses.asdict(captions) if captions else None},
    )
    start = time.perf_counter()
    spans = []
    for row in ds.iter_rows():
        bad = json.loads(row["bad"])
        report.bad_count += len(bad)
        report.bad.extend(bad[: MAX_REPORTED_BAD - len(report.bad)])
        report.busy_seconds += float(row["seconds"])
        spans.append((*json.loads(row["span"]), int(row["rows"])))
        if row["status"] == "written":
            report.written.append(row["output"])
            report.rows += int(row["rows"])
        elif row["status"] == "exists":
            report.existing.append(row["output"])
        else:
            report.failed.append(row["output"])
        first = f"; {bad[0]['reason']}: {bad[0]['detail']}" if bad and row["status"] != "written" else ""
        log(f"{row['shard']}: {row['status']}, {int(row['rows'])} rows, {len(bad)} skipped{first}")
    report.seconds = time.perf_counter() - start
    report.all_busy_samples_per_s = all_busy_rate(spans)


def all_busy_rate(spans: list[tuple[int, float, float, int]]) -> float | None:
    """Rows per second of wall time while every actor was at work: from the latest first start to
    the earliest last end over the actors, each unit counted by its share of time in that window
    (start-up and the tail where actors ran out of units left out). None for too short a run.

    Args:
        spans: (actor pid, unit start, unit end, rows) of every unit, wall-clock seconds.
    """
    actors: dict[int, list] = {}
    for pid, t0, t1, rows in spans:
        actors.setdefault(pid, []).append((t0, t1, rows))
    if not actors:
        return None
    lo = max(min(t0 for t0, _, _ in units) for units in actors.values())
    hi = min(max(t1 for _, t1, _ in units) for units in actors.values())
    if hi <= lo:
        return None
    rows = sum(n * max(0.0, min(t1, hi) - max(t0, lo)) / (t1 - t0)
               for units in actors.values() for t0, t1, n in units if t1 > t0)
    return rows / (hi - lo)


__all__ = ["EmbedError", "EmbedInput", "EmbedOptions", "EmbedReport", "ModelRef", "dataset_units", "embed", "load_embedder",
           "parquet_units", "pin_model", "text_units"]
