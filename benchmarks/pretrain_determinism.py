"""Is the synthetic world's pretraining bit-reproducible? The same compiled `default` pretraining runs twice, each
run in its own process on 2 threads, and the two models are compared weight by weight: with the deterministic
algorithms `midalign.synthetic.pretrain` switches on, and without them. Prints equality, the final losses and the
tokens per second of each run.

    python benchmarks/pretrain_determinism.py --steps 300
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def child(corpus: str, out: str, steps: int, deterministic: bool) -> None:
    import torch

    import midalign.synthetic.pretrain as pretraining

    torch.set_num_threads(2)
    if not deterministic:
        pretraining._deterministic_algorithms = contextlib.nullcontext
    config = pretraining.PretrainConfig.preset("default", steps=steps)
    info = json.loads((pretraining.pretrain(corpus, out, config, progress=False) / pretraining.INFO_FILE).read_text())
    print(json.dumps({k: info[k] for k in ("final_train_loss", "tokens_per_second")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        corpus, out, steps, deterministic = args.child
        return child(corpus, out, int(steps), deterministic == "on")

    import torch
    from safetensors.torch import load_file

    from midalign.synthetic.world import WorldConfig, build_world

    work = Path(tempfile.mkdtemp(prefix="determinism-"))
    corpus = str(build_world(WorldConfig.preset("default"), work / "world").corpus)
    print(f"torch {torch.__version__}; `default` pretraining, {args.steps} steps, 2 threads, compiled")
    print("| deterministic algorithms | run 1 loss | run 2 loss | tokens/s (run 2) | weights equal |")
    print("|---|---|---|---|---|")
    for mode in ("off", "on"):
        cache = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{mode}")}  # run 2 compiles warm
        runs = []
        for run in (1, 2):
            out = str(work / f"{mode}-{run}")
            cmd = [sys.executable, __file__, "--child", corpus, out, str(args.steps), mode]
            done = subprocess.run(cmd, env=cache, capture_output=True, text=True, check=True)
            runs.append((out, json.loads(done.stdout.strip().splitlines()[-1])))
        first, second = (load_file(Path(out) / "model.safetensors") for out, _ in runs)
        equal = all(torch.equal(first[k], second[k]) for k in first)
        (_, a), (_, b) = runs
        print(
            f"| {mode} | {a['final_train_loss']:.9f} | {b['final_train_loss']:.9f} | {b['tokens_per_second']} | "
            f"{equal} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
