"""What a trained captioner's held-out captions say, and how fast it writes them.

    python bench/caption.py models:/sensorlm_coca/1 --data data/wearable_demo [--tracking-uri URI]

For every window of the split (default ``val``) it generates a caption (greedy unless ``--method``)
and reads which of the dataset's labels the caption names first (a label's words, ``_`` read as a
space; none: no label). Reported beside it, on the same windows:

- the label prior: the share of the split's most common label (always naming it);
- the random-caption baseline: the reference caption of a random training window, read the same
  way (a model that writes fluent captions unrelated to the recording scores this);
- the reference captions themselves, read the same way (the reading's own ceiling);
- generation captions/s (this process, ``--threads`` torch threads, batches of ``--batch-size``).

Prints Markdown rows for bench/RESULTS.md and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def _samples(data: str, split: str):
    from sensorlm.inference.inputs import dataset_units, read_samples

    units, manifest = dataset_units(data, [split])
    out = []
    for unit in units:
        out += read_samples(unit, lambda *a: None)
    return out, manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a sensorlm_coca model (models:/NAME/VERSION or a package directory)")
    p.add_argument("--data", required=True, help="the dataset it was trained on (its val split is held out)")
    p.add_argument("--split", default="val")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--method", default="greedy", choices=["greedy", "beam", "top_p"])
    p.add_argument("--max-len", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=3, help="print this many captions beside their references")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from sensorlm.evaluation.captions import named_label
    from sensorlm.inference.embed import load_embedder, pin_model
    from sensorlm.inference.inputs import stack_raw
    from sensorlm.models.generation import Decoding

    decoding = Decoding(method=args.method, max_len=args.max_len)
    embedder = load_embedder(pin_model(args.model, args.tracking_uri))
    samples, manifest = _samples(args.data, args.split)
    labels = list(manifest.get("activities") or [])
    train, _ = _samples(args.data, "train")
    start = time.perf_counter()
    captions: list[str] = []
    for i in range(0, len(samples), args.batch_size):
        captions += embedder.caption_sensor(stack_raw(samples[i:i + args.batch_size]), decoding, args.seed + i)
    seconds = time.perf_counter() - start
    truth = [s.label for s in samples]
    labelled = [i for i, t in enumerate(truth) if t]
    rng = np.random.default_rng(args.seed)
    random_refs = [train[j].caption for j in rng.integers(0, len(train), len(samples))]

    def accuracy(texts) -> float:
        return float(np.mean([named_label(texts[i], labels) == truth[i] for i in labelled]))

    counts = np.unique([truth[i] for i in labelled], return_counts=True)[1]
    rows = {
        "generated captions": accuracy(captions),
        "reference captions (ceiling of the reading)": accuracy([s.caption for s in samples]),
        "a random training window's caption": accuracy(random_refs),
        "label prior (always the most common label)": float(counts.max() / counts.sum()),
    }
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {args.model} on {args.data} split {args.split}: {len(samples)} windows ({len(labelled)} labelled), "
          f"{args.method}, at most {args.max_len} tokens; {machine}")
    print("| captions | names the main label |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")
    print(f"\ngeneration: {len(samples) / seconds:.1f} captions/s ({seconds:.1f} s, batch {args.batch_size})")
    for i in range(min(args.show, len(samples))):
        print(json.dumps({"label": truth[i], "generated": captions[i], "reference": samples[i].caption[:200]}))


if __name__ == "__main__":
    main()
