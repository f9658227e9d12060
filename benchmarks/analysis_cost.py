"""Cost of the analysis metric stage against the bare matrix products it needs, in one run.

Random pooled vectors stand in for a model's (the metric stage never sees the model): `--languages` x
`--sentences` x `--layers` of width `--width` (default 35 x 1000 x 33 x 256, the paper's FLORES setting with
a 32-block model). The metrics (cosine, ratio-margin and centred retrieval in both directions of every
language pair, mean cosines) need two similarity matrices per unordered pair and layer: raw and centred. The
baseline computes exactly those products, batched the same way, and nothing else. Each stage is timed on
every layer in turn, alternating, and the totals are compared.

    python benchmarks/analysis_cost.py [--layers 33] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from midalign.analysis.metrics import layer_metrics


def bare_products(vectors: dict[str, torch.Tensor], block_elements: int = 2**23) -> None:
    """The similarity matrices the metrics need (raw and centred, one per unordered pair), nothing more."""
    langs = sorted(vectors)
    unit = {lang: F.normalize(v, dim=-1) for lang, v in vectors.items()}
    centred = {lang: F.normalize(v - v.mean(0), dim=-1) for lang, v in vectors.items()}
    n = next(iter(vectors.values())).shape[0]
    per_block = max(1, block_elements // (n * n))
    for i, a in enumerate(langs):
        partners = langs[i + 1 :]
        for start in range(0, len(partners), per_block):
            block = partners[start : start + per_block]
            torch.matmul(unit[a], torch.stack([unit[b] for b in block]).transpose(1, 2))
            torch.matmul(centred[a], torch.stack([centred[b] for b in block]).transpose(1, 2))


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--languages", type=int, default=35)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--layers", type=int, default=33)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    metric_s = bare_s = 0.0
    for _ in range(args.layers):
        vectors = {f"l{i:02d}": torch.randn(args.sentences, args.width, generator=g) for i in range(args.languages)}
        start = time.perf_counter()
        bare_products(vectors)
        bare_s += time.perf_counter() - start
        start = time.perf_counter()
        result = layer_metrics(vectors)
        metric_s += time.perf_counter() - start
    directions = len(result)
    ratio = metric_s / bare_s
    print(
        f"{args.languages} languages x {args.sentences} sentences x {args.layers} layers, width {args.width}; "
        f"{directions} directions per layer; {args.threads} thread(s)\n"
    )
    print("| stage | seconds |")
    print("|---|---:|")
    print(f"| bare matrix products (raw + centred, one per unordered pair) | {bare_s:.1f} |")
    print(f"| metric stage (5 metrics x {directions} directions per layer) | {metric_s:.1f} |")
    print(f"| **ratio (target <= 2.0)** | **{ratio:.2f}** |")
    return ratio


if __name__ == "__main__":
    main()
