"""What `midalign demo` runs (`DemoConfig`, its settings file) and the chores its stages share: the task's files
and the keys that decide whether a stage's output can be reused."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from midalign.errors import ConfigError
from midalign.files import check_name, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


SETTINGS = Path(__file__).parent / "configs" / "demo.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. `preset` sizes the world and the pretraining: `ci` (plumbing, ~1.5 min), `default` (the
    README's demo, 10-14 minutes on 2 cores by the machine's speed) or `bench` (the transfer benchmark's larger base,
    pretrained once).

    The fine-tuning settings come from a YAML file (`settings`, default `midalign/configs/demo.yaml`): its
    `training` section holds `MidAlignConfig` fields, its `demo` section the alignment-only steps and the merge
    weight. `overrides` replaces single `training` fields (a benchmark's `align_weight`, a test's `lora_r`).
    """

    preset: Literal["ci", "default", "bench"] = "default"
    seed: int = 0
    # CPU threads of the pretraining, and how many systems fine-tune and evaluate at once (one thread each): a fixed
    # count, so the numbers do not depend on the machine
    threads: int = 2
    world_seed: int = 0
    align_layer: str = "0.5"
    settings: str = str(SETTINGS)
    overrides: dict = dataclasses.field(default_factory=dict)
    # Names the outputs of runs whose `overrides` change the alignment (`mid-align@subset-a`), so that they sit
    # beside the main run's instead of replacing them. The baseline is shared: it does not align.
    variant: str | None = None
    # slot: `utterance ->` then ` intent | type: value; ...`; json: the same commands answered as a JSON object
    # `{"intent": ..., "<type>": "<value>"}` (the paper's structured-generation task; outputs in `json-seed<N>/`);
    # mt: translation into English, fine-tuned from `MT_SOURCES` and tested from every language (`mt-seed<N>/`).
    task: Literal["slot", "json", "mt"] = "slot"
    eval_limit: int | None = None  # test items per language (None: all)
    smallest: bool = False  # the test suite's settings: a few steps of everything

    def check(self) -> None:
        """Refuse, before the world is built, what would otherwise fail only after pretraining: a thread count or
        test limit below 1, an alignment layer the base model lacks, and a settings file that cannot be read or
        names what the demo does not know (`ConfigError` / `DataError` naming the setting or file and line)."""
        from midalign.layers import resolve_layer
        from midalign.train import MidAlignConfig

        for name, value in (("threads", self.threads), ("eval_limit", self.eval_limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.align_layer != "auto":
            resolve_layer(self.align_layer, self.pretrain_config().num_layers)
        training, demo = self.read_settings()
        unknown = sorted(set(training) - {f.name for f in dataclasses.fields(MidAlignConfig)})
        if unknown:
            raise ConfigError(f"{self.settings}: section 'training' names no MidAlignConfig field {unknown}")
        steps = demo.get("align_only_steps")
        if not isinstance(steps, dict) or not isinstance(steps.get(self.preset), int) or steps[self.preset] < 1:
            raise ConfigError(f"{self.settings}: demo.align_only_steps needs a step count for preset {self.preset!r}")
        weight = demo.get("merge_weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ConfigError(f"{self.settings}: demo.merge_weight must be a number, got {weight!r}")

    def read_settings(self) -> tuple[dict, dict]:
        """`(training, demo)` sections of the settings file, with the overrides applied to `training`."""
        from midalign.files import read_yaml_file

        raw = read_yaml_file(self.settings)
        unknown = sorted(set(raw) - {"training", "demo"})
        if unknown or not isinstance(raw.get("training"), dict) or not isinstance(raw.get("demo"), dict):
            raise ConfigError(f"{self.settings}: expected the sections 'training' and 'demo' (found {sorted(raw)})")
        return {**raw["training"], **self.overrides}, raw["demo"]

    @property
    def runs_folder(self) -> str:
        """The folder of this seed's fine-tunings in the workdir: `seed0`, or `json-seed0` for the JSON task."""
        return f"seed{self.seed}" if self.task == "slot" else f"{self.task}-seed{self.seed}"

    @property
    def tag(self) -> str:
        """Suffix of the outputs of runs at another alignment layer (`mid-align@1.0`, `results@1.0.json`)."""
        layer = "" if self.align_layer == DemoConfig.align_layer else f"@{self.align_layer}"
        return layer + (f"@{check_name(self.variant, 'variant')}" if self.variant else "")

    def world_config(self):
        from midalign.synthetic.world import WorldConfig

        overrides = dict(corpus_lines=1500, n_train=64, n_dev=8, n_test=8, n_parallel=32, n_multiway=16)
        return WorldConfig.preset(self.preset, seed=self.world_seed, **(overrides if self.smallest else {}))

    def pretrain_config(self):
        from midalign.synthetic.pretrain import PretrainConfig

        overrides = dict(vocab_size=600, hidden_size=32, num_layers=4, intermediate_size=64, steps=8, seq_len=64)
        return PretrainConfig.preset(self.preset, seed=self.world_seed, **(overrides if self.smallest else {}))


STAGE_KEY = ".stage-key.json"


def stage_is_current(out: Path, key: dict) -> bool:
    """Whether `out` was made from exactly `key`; a folder made from something else is set aside, not reused.

    A stage's key holds everything its output depends on (settings, fingerprints of the base model and data), so
    switching the preset, the base or a setting in one workdir reruns what changed. Nothing is deleted: an old
    output moves to `<name>.stale-N`.
    """
    recorded = out / STAGE_KEY
    if recorded.is_file() and json.loads(recorded.read_text(encoding="utf-8")) == key:
        return True
    if out.exists():
        aside, n = out.with_name(f"{out.name}.stale-1"), 1
        while aside.exists():
            n += 1
            aside = out.with_name(f"{out.name}.stale-{n}")
        logger.warning("demo: %s was made from other inputs; moved to %s", out, aside.name)
        out.rename(aside)
    return False


def record_stage(out: Path, key: dict) -> None:
    write_json_atomic(out / STAGE_KEY, key)


def json_answer(completion: str) -> dict:
    """A slot-format answer (` intent | type: value; ...` or ` intent | None`) as the JSON task's object."""
    intent, _, slots = completion.strip().partition(" | ")
    answer: dict = {"intent": intent}
    if slots != "None":
        for part in slots.split("; "):
            key, _, value = part.partition(": ")
            answer[key] = [*answer[key], value] if isinstance(answer.get(key), list) else value
    return answer


# The machine translation task's supervised directions: into English from the well-resourced member of each family
# (close, middle, distant), so that every family has a supervised and a zero-shot member (docs/demo.md).
MT_SOURCES = ("xa", "xb", "xc")
MT_PAIRS_PER_SOURCE = 400  # 1,200 training pairs, as many as the `default` world's slot-filling commands
MT_PROMPT = "translate: {source} =>"  # not the pretraining's `text -> en: translation`, so the format is learnt


def supervised_languages(config: DemoConfig, world_languages: list[str], world_supervised: list[str]) -> list[str]:
    """The languages the task is fine-tuned in: the world's for `slot` and `json`; `MT_SOURCES` for `mt`."""
    if config.task != "mt":
        return list(world_supervised)
    return [code for code in MT_SOURCES if code in world_languages]


def task_path(config: DemoConfig, paths, split: str) -> Path:
    """Where the task's `split` (train / dev / test) lies; `task_files` writes the derived ones (json, mt)."""
    if config.task == "slot":
        return {"train": paths.task_train, "dev": paths.task_dev, "test": paths.task_test}[split]
    return paths.task_train.parent.parent / f"task-{config.task}" / f"{split}.jsonl"


def task_files(config: DemoConfig, paths) -> dict[str, Path]:
    """The task's train / dev / test JSONL: the world's own for `slot`; for `json` the same rows with the answer
    as a JSON object; for `mt` translation into English. Derived files are written next to the world's
    (`world/task-<task>/`) and rewritten whenever the world's files change."""
    files = {"train": paths.task_train, "dev": paths.task_dev, "test": paths.task_test}
    if config.task == "slot":
        return files
    if config.task == "mt":
        splits = _mt_rows(paths)
    else:
        splits = {}
        for split, path in files.items():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for row in rows:
                row["completion"] = " " + json.dumps(json_answer(row["completion"]), ensure_ascii=False)
            splits[split] = rows
    out = {}
    for split, rows in splits.items():
        target = task_path(config, paths, split)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            write_text_atomic(target, text)
        out[split] = target
    return out


def _mt_rows(paths) -> dict[str, list[dict]]:
    """Translation into English. train: the first `MT_PAIRS_PER_SOURCE` alignment pairs of each of `MT_SOURCES` (the
    only pairs the world has; mid-align aligns on all of them, so its transfer languages' pairs are alignment data,
    never task data). dev and test: the held-out multi-way sentences of every other language (a quarter for dev, the
    rest for test), which neither the corpus nor the pairs contain."""
    from midalign.data.readers import read_multiway, read_parallel

    train, taken = [], dict.fromkeys(MT_SOURCES, 0)
    for p in read_parallel(paths.parallel):
        if p.src_lang in taken and p.tgt_lang == "en" and taken[p.src_lang] < MT_PAIRS_PER_SOURCE:
            row = {"id": f"train-{p.src_lang}-{taken[p.src_lang]}", "lang": p.src_lang}
            train.append(row | {"prompt": MT_PROMPT.format(source=p.src), "completion": " " + p.tgt})
            taken[p.src_lang] += 1
    multiway = read_multiway(paths.multiway)
    english = multiway.pop("en")
    cut = len(english) // 4
    splits: dict[str, list[dict]] = {"train": train, "dev": [], "test": []}
    for lang, lines in multiway.items():
        for i, (source, reference) in enumerate(zip(lines, english, strict=True)):
            split = "dev" if i < cut else "test"
            splits[split].append(
                {"id": f"{split}-{lang}-{i}", "lang": lang, "prompt": MT_PROMPT.format(source=source)}
                | {"completion": " " + reference, "src_lang": lang, "tgt_lang": "en", "source": source}
            )
    return splits
