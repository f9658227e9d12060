"""Wall time of a whole mid-align fine-tuning against the task-only baseline, on the same task data.

The synthetic world (`midalign.synthetic`, the `ci` preset with `--train` task rows) gives the task data
(slot filling in English, prompt/completion) and the parallel pairs (X -> English, 7 languages); its BPE tokenizer
has 1,500 entries, and the model's vocabulary (`--vocab`) is larger, as Qwen pads its own: only the cost of the
vocabulary matters here, not which entries are used. The model is a random tiny Llama (hidden 256, 8 blocks) with
LoRA r 8 on every linear layer of the blocks (the library's default), trained through `midalign.train.build_trainer`
exactly as `midalign train` does:

- baseline: `mode=baseline`, `--epochs` task epochs, `--batch` rows per micro-batch;
- mid-align: the same task epochs with one alignment micro-batch of `--batch` pairs added after every task
  micro-batch (`align_schedule=alternate`, `task_per_align=1`), as the paper does; alignment at block `--layer`.

Both use `gradient_accumulation_steps=2` (the paper's configs use 4 = 2 task + 2 alignment micro-batches). The
runs alternate (baseline, mid-align, baseline, ...) `--runs` times per vocabulary; every figure is the median over
runs. Each micro-batch's forward + backward (`Trainer.training_step`) is timed by kind; the rest of `train()`
(data loading and collation, optimizer steps, logging, callbacks) is reported as "other".

    OMP_NUM_THREADS=1 python benchmarks/run_cost.py [--vocab 32000 128256] [--train 256] [--runs 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from tiny_llama import tiny_llama
from transformers.utils import logging as hf_logging

from midalign.data.batching import is_align_batch
from midalign.synthetic.pretrain import train_tokenizer
from midalign.synthetic.world import WorldConfig, WorldPaths, build_world
from midalign.train import MidAlignConfig, build_trainer


def build_model(vocab: int, hidden: int, blocks: int, tokenizer):
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    return tiny_llama(vocab, hidden, blocks, max_positions=512, **ids)


def one_run(mode: str, vocab: int, paths: WorldPaths, tokenizer, out: Path, args) -> dict[str, float]:
    """Train once; return seconds of `train()`, of task and alignment micro-steps, and their token counts."""
    config = MidAlignConfig(
        output_dir=str(out),
        mode=mode,
        task_data=str(paths.task_train),
        parallel_data=[str(paths.parallel)] if mode != "baseline" else None,
        pivot_language="en",
        align_layer=str(args.layer),
        per_device_train_batch_size=args.batch,
        align_batch_size=args.batch,
        gradient_accumulation_steps=2,
        num_train_epochs=args.epochs,
        lora_dropout=0.1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10,
        use_cpu=True,
        seed=0,
    )
    trainer = build_trainer(config, model=build_model(vocab, args.hidden, args.blocks, tokenizer), tokenizer=tokenizer)
    stats: dict[str, float] = defaultdict(float)
    step = trainer.training_step

    def timed_step(model, inputs, *rest, **kw):
        kind = "align" if is_align_batch(inputs) else "task"
        if kind == "align":  # [B, Ts], [B, Tt]: one forward of 2B rows at max(Ts, Tt)
            length = max(inputs["src_input_ids"].shape[1], inputs["tgt_input_ids"].shape[1])
            stats["align_rows_x_len"] += 2 * inputs["src_input_ids"].shape[0] * length
            stats["align_tokens"] += float(inputs["src_attention_mask"].sum() + inputs["tgt_attention_mask"].sum())
        else:
            stats["task_rows_x_len"] += inputs["input_ids"].numel()  # [B, T]
            stats["task_tokens"] += float(inputs["attention_mask"].sum())
        start = time.perf_counter()
        loss = step(model, inputs, *rest, **kw)
        stats[f"{kind}_s"] += time.perf_counter() - start
        stats[f"{kind}_steps"] += 1
        return loss

    trainer.training_step = timed_step
    start = time.perf_counter()
    trainer.train()
    stats["total_s"] = time.perf_counter() - start
    return dict(stats)


def main(argv: list[str] | None = None) -> dict[int, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256])
    p.add_argument("--train", type=int, default=256, help="task training rows")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--layer", type=int, default=4)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    logging.getLogger("midalign").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_world(WorldConfig.preset("ci", n_train=args.train), Path(tmp) / "world")
        tokenizer = train_tokenizer(paths.corpus.read_text(encoding="utf-8").splitlines(), 1500)
        results: dict[int, dict[str, list[dict]]] = {}
        for vocab in args.vocab:
            results[vocab] = {"baseline": [], "mid-align": []}
            for r in range(args.runs):
                for mode in ("baseline", "mid-align"):
                    out = Path(tmp) / f"{vocab}-{mode}-{r}"
                    results[vocab][mode].append(one_run(mode, vocab, paths, tokenizer, out, args))
    print(
        f"tiny Llama: hidden {args.hidden}, {args.blocks} blocks, LoRA r 8 on every linear layer of the blocks; "
        f"{args.train} task rows x {args.epochs} epoch(s), micro-batches of {args.batch} rows / pairs, alignment at "
        f"block {args.layer}; {torch.get_num_threads()} thread(s); median of {args.runs} runs per system\n"
    )
    print(
        "| vocabulary | system | train() s | task micro-steps (n, s) | alignment micro-steps (n, s) | other s |"
        " real tokens / padded, task | real tokens / padded, alignment |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    ratios, shares = {}, {}
    for vocab, systems in results.items():
        med: dict[str, dict[str, float]] = {}
        for mode, runs in systems.items():
            med[mode] = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
            m = med[mode]
            other = m["total_s"] - m["task_s"] - m.get("align_s", 0.0)
            align = f"{m['align_steps']:.0f}, {m['align_s']:.1f}" if m.get("align_steps") else "-"
            pad_align = f"{m['align_tokens'] / m['align_rows_x_len']:.2f}" if m.get("align_rows_x_len") else "-"
            print(
                f"| {vocab:,} | {mode} | {m['total_s']:.1f} | {m['task_steps']:.0f}, {m['task_s']:.1f} | {align} | "
                f"{other:.1f} | {m['task_tokens'] / m['task_rows_x_len']:.2f} | {pad_align} |"
            )
        ratios[vocab] = med["mid-align"]["total_s"] / med["baseline"]["total_s"]
        # Within the mid-align run, the task and alignment micro-steps interleave, so machine noise hits both alike:
        # the run's time over the same run without its alignment micro-steps is the noise-robust estimate.
        mid = med["mid-align"]
        shares[vocab] = mid["total_s"] / (mid["total_s"] - mid["align_s"])
    print(
        "\n| vocabulary | mid-align / baseline, median train() times (target <= 1.3 at 128k) |"
        " mid-align run / the same run without its alignment micro-steps |"
    )
    print("|---:|---:|---:|")
    for vocab, ratio in ratios.items():
        print(f"| {vocab:,} | {ratio:.2f} | {shares[vocab]:.2f} |")
    return ratios


if __name__ == "__main__":
    main()
