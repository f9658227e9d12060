"""Measure the synthetic world's base model: build a world, pretrain its base (cached), and probe it.

Prints and writes (`<workdir>/probe.json`) what issue #16 asks of the base model: margin retrieval over every
direction of the held-out multi-way set at each layer, per language and family, copying of never-seen names, and
held-out loss, with the pretraining time and throughput. World and pretraining fields can be overridden as
`key=value` (ints, floats, booleans and strings are parsed as Python literals).

    python benchmarks/base_model.py --preset default --seed 0 --threads 1 --workdir runs/base-default-s0
    python benchmarks/base_model.py --preset ci --workdir /tmp/base-ci --pretrain steps=20
    python benchmarks/base_model.py --preset bench --threads 2 --workdir runs/bench-p1 --pretrain seed=1
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import time
from pathlib import Path

import torch

from midalign.errors import ConfigError, MidalignError
from midalign.files import write_json_atomic, write_text_atomic
from midalign.synthetic.languages import LANGUAGE_TABLE
from midalign.synthetic.pretrain import PretrainConfig, pretrain
from midalign.synthetic.probe import probe_base_model
from midalign.synthetic.world import WorldConfig, WorldPaths, build_world


def overrides(pairs: list[str], config: type, flag: str) -> dict:
    """`key=value` pairs as `config`'s fields, each value of its field's type (a string where a number belongs
    would fail only after the world is built)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields:
            raise ConfigError(f"{flag}: {config.__name__} has no field {key!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
        default = fields[key].default
        kinds = (int, float) if type(default) is float else (type(default),)
        if (
            default is not dataclasses.MISSING
            and default is not None
            and (not isinstance(out[key], kinds) or isinstance(out[key], bool) != isinstance(default, bool))
        ):
            raise ConfigError(f"{flag}: {key}={value} is not of type {type(default).__name__}")
    return out


def summary(probe: dict, info: dict) -> str:
    align = probe["alignment"]
    margin = align["margin"]
    n = len(margin) - 1
    middle = range(n // 3, 2 * n // 3 + 1)
    peak = max(range(len(margin)), key=margin.__getitem__)
    families = {spec.code: spec.family for spec in LANGUAGE_TABLE}
    lines = [
        f"pretraining: {info['seconds']} s, {info.get('device', 'cpu')}, {info['threads']} thread(s), "
        f"{info['tokens_seen'] / info['seconds']:.0f} "
        f"tokens/s, {info['parameters'] / 1e6:.2f}M parameters, {info['corpus_tokens'] / 1e6:.2f}M corpus tokens, "
        f"final loss {info['final_train_loss']:.2f}",
        "margin retrieval, all directions, per layer: " + " ".join(f"{v:.1f}" for v in margin),
        "centred, all directions, per layer:          " + " ".join(f"{v:.1f}" for v in align["centred"]),
        f"peak at layer {peak} of {n} ({margin[peak]:.1f}); middle third {middle.start}-{middle.stop - 1}; "
        f"peak / embeddings {margin[peak] / max(margin[0], 1e-9):.2f}, "
        f"peak / top {margin[peak] / max(margin[-1], 1e-9):.2f}",
    ]
    if "lexical" in probe:  # probes written before it have no lexical baseline
        lines.append(
            f"shared tokens alone (bags of tokens): {probe['lexical']['margin']:.1f}; peak / that "
            f"{margin[peak] / max(probe['lexical']['margin'], 1e-9):.2f}; to en: "
            + ", ".join(f"{lang} {v:.0f}" for lang, v in probe["lexical"]["to_pivot"].items())
        )
    for lang, curve in align["per_language"].items():
        copy = probe["copy"][lang]
        to_pivot = align["to_pivot"][lang][peak] if lang in align["to_pivot"] else float("nan")
        lines.append(
            f"  {lang} ({families.get(lang, '?'):7}) best {max(curve):5.1f} at layer {curve.index(max(curve)):2}, "
            f"at the peak {curve[peak]:5.1f}; to en at the peak "
            f"{to_pivot:5.1f}; copy names {100 * copy['list']:.0f}, "
            f"sentences {100 * copy['sentence']:.0f}; held-out loss {probe['heldout_loss'][lang]:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--seed", type=int, default=0, help="world and pretraining seed (`--pretrain seed=N` changes the second only)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--device", default="cpu", help="pretraining device (the probe runs on the CPU)")
    parser.add_argument("--world", nargs="*", default=[], metavar="KEY=VALUE", help="WorldConfig overrides")
    parser.add_argument("--pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="PretrainConfig overrides")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    # An override wins over --seed: `--pretrain seed=1` pretrains a second base on the same world.
    try:
        world = overrides(args.world, WorldConfig, "--world")
        world_config = WorldConfig.preset(args.preset, **{"seed": args.seed, **world})
        pretrained = overrides(args.pretrain, PretrainConfig, "--pretrain")
        pretrain_config = PretrainConfig.preset(args.preset, **{"seed": args.seed, **pretrained})
    except (MidalignError, TypeError) as error:  # a bad preset, field or value: one line, before any work
        parser.error(str(error))
    start = time.perf_counter()
    paths = build_world(world_config, args.workdir / "world")
    world_s = time.perf_counter() - start
    model_dir = pretrain(paths.corpus, args.workdir / "base", pretrain_config, device=args.device)
    info = json.loads((model_dir / "pretrain.json").read_text())
    probe = probe_base_model(model_dir, WorldPaths.in_dir(args.workdir / "world"))
    text = summary(probe, info)
    write_json_atomic(args.workdir / "probe.json", {"world_seconds": world_s, "pretrain": info, **probe})
    write_text_atomic(args.workdir / "summary.txt", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
