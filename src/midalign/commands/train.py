"""`midalign train`: fine-tune with the task loss, the alignment loss or both (`MidAlignConfig`)."""

from __future__ import annotations

from midalign.train.config import PAPER_RECIPE, MidAlignConfig

USAGE = "midalign train [--config FILE.yaml] [--OPTION VALUE ...]"
DESCRIPTION = """\
Fine-tune a causal LM with LoRA (or fully) on a task, alternating with the middle-layer alignment loss.
Every field of MidAlignConfig is a flag: its own options first, then those it inherits from TRL's SFTConfig
and transformers' TrainingArguments, with the paper's learning rate, inverse square-root decay and 3% warm-up
as defaults. A YAML file given with --config sets defaults that flags override.
Example:

  midalign train --config examples/train_tiny.yaml --max_steps 20 --output_dir runs/tiny
"""

ARGUMENTS = MidAlignConfig
DEFAULTS = PAPER_RECIPE  # the command trains as the paper did unless told otherwise


def run(config: MidAlignConfig) -> int:
    """Train as configured; the weights, tokenizer and `midalign_config.json` go to `config.output_dir`."""
    from midalign.train import train

    trainer = train(config)
    print(
        f"saved {config.finetuning} weights, tokenizer and {config.output_dir}/midalign_config.json "
        f"({trainer.state.global_step} steps)"
    )
    return 0
