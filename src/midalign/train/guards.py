"""The non-finite guard: training stops before a NaN or infinite loss or gradient reaches the weights."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from midalign.errors import MidalignError
from midalign.layers import unwrap_model
from midalign.train.checkpoints import last_checkpoint


class NonFiniteLossError(MidalignError, FloatingPointError):
    """A loss or gradient became NaN or infinite; training stopped before the update reached the weights."""


class NonFiniteGradientGuard(TrainerCallback):
    """Stops before an optimizer step whose gradients are not finite (bf16 / fp32 only).

    With fp16 the loss scaler already skips such steps and lowers the scale: that is its documented behaviour,
    so the guard stays out of its way. Under DeepSpeed the gradients live in the engine's partitions, and the
    engine checks them itself.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if args.fp16 or self.trainer.is_deepspeed_enabled:
            return
        grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        if not grads:
            return
        # One sum on the device per step (NaN or inf in any gradient makes it non-finite), one sync in the check.
        total = torch.stack([(g.to_local() if hasattr(g, "to_local") else g).float().sum() for g in grads]).sum()
        stop_if_non_finite(self.trainer, total, "gradient")


def stop_if_non_finite(trainer, value: torch.Tensor, what: str) -> None:
    """Raise `NonFiniteLossError` on every rank when `value` is NaN or infinite on any rank.

    Called before the backward pass (losses) or the optimizer step (gradients), so the bad value never reaches
    the weights; the last checkpoint on disk stays the last good state. The check is collective, so no rank is
    left waiting in a gradient reduction for one that stopped.
    """
    finite = trainer.accelerator.gather(torch.isfinite(value.detach().float()).reshape(1).to(trainer.args.device))
    if bool(finite.all()):
        return
    checkpoint = last_checkpoint(trainer.args.output_dir)
    fp16 = trainer.args.fp16 or unwrap_model(trainer.model).dtype == torch.float16
    hint = "for fp16 overflow: train in bf16 or fp32" if fp16 else "the learning rate and the data"
    raise NonFiniteLossError(
        f"non-finite {what} at step {trainer.state.global_step + 1}; training stopped before the update. "
        f"Last good checkpoint: {checkpoint or 'none saved yet'}. Check {hint}; continue with --resume."
    )
