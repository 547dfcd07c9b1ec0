"""One optimiser step: micro-batches, the loss, one collective that lets every rank decide alike, the update."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import NoReturn

import torch
from torch import Tensor

from .. import distributed
from ..checkpoint import latest_checkpoint
from ..data import DatasetError, to_float
from ..exits import DataError, DivergedError
from .state import Run, data_failure, rng_state, save, set_rng_state


def fetch(run: Run) -> tuple[list[Tensor], DatasetError | None]:
    """The step's micro-batches; on a read error, stand-ins of the right shape (so that every rank
    still takes part in the step's collectives) and the error."""
    batches: list[Tensor] = []
    try:
        for _ in range(run.t.accumulate):
            batches.append(next(run.batches))
        return batches, None
    except DatasetError as err:
        stand_in = torch.zeros((run.micro, *run.shape), dtype=torch.uint8, device=run.device)
        return [to_float(stand_in, run.bins)] * run.t.accumulate, err


def train_step(run: Run) -> tuple[float, float]:
    """One optimiser step (or a skipped one); returns the loss and gradient norm, each summed over ranks.

    Sets ``run.signalled`` when a rank got a stop signal; raises :class:`DivergedError` after too many
    non-finite steps in a row and :class:`DataError` (after saving the last good step) when a rank
    could not read its batch.
    """
    t = run.t
    before = rng_state(run.generator, run.device), run.sampler.state_dict()  # to undo a step whose data failed
    micro_batches, failure = fetch(run)
    autocast = distributed.autocast(run.device, t.precision)
    scaler = run.scaler
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    learns = getattr(run.proc.proposal, "learns", True)  # a user's proposal without the flag may learn
    lams, integrands = [], []
    for k, x in enumerate(micro_batches):
        # DDP averages gradients on the last micro-batch only
        sync = nullcontext() if k == t.accumulate - 1 or not run.layout.distributed else run.model.no_sync()
        with sync:
            with autocast:
                # batches from bsi.data lie on the levels by construction: no check, which would wait for the device
                out = run.proc.training_loss(x, run.denoiser, generator=run.generator, check=False)
            loss = out.loss.mean() / t.accumulate
            (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += loss.detach()
        run.loss_name = out.name
        if learns:
            lams.append(out.lam.detach())
            integrands.append(out.integrand)
    if scaler:
        scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, float(t.grad_clip) if t.grad_clip else math.inf)
    # One collective and one host sync per step: summed over ranks, the losses and gradient norms are
    # finite only if they are finite on every rank, and the flags say whether any rank was signalled
    # or failed to read its data; so all ranks skip, stop or save together.  Both flags are one
    # number, (ranks signalled) + (ranks + 1) x (ranks that failed to read), which divmod splits again.
    flags = float(run.preemption.requested) + (run.layout.world_size + 1) * float(failure is not None)
    status = torch.stack([loss_sum, grad_norm.to(loss_sum.dtype), torch.full((), flags, dtype=loss_sum.dtype, device=run.device)])
    loss_value, norm_value, flag_sum = distributed.all_reduce_sum(status).tolist()
    n_failed, n_signalled = divmod(round(flag_sum), run.layout.world_size + 1)
    if n_failed:
        run.optimizer.zero_grad(set_to_none=True)
        set_rng_state(before[0], run.generator, run.device)
        run.sampler.load_state_dict(before[1])
        stop_on_data_failure(run, failure)
    run.signalled = run.signalled or n_signalled > 0
    if scaler and math.isfinite(loss_value) and not math.isfinite(norm_value):
        scaler.update()  # fp16 gradients overflowed: the scaler halves its scale and the step is skipped
    elif not math.isfinite(loss_value + norm_value):
        run.skipped, run.consecutive = run.skipped + 1, run.consecutive + 1
        if run.consecutive >= t.max_nonfinite:
            raise DivergedError(
                f"{run.consecutive} non-finite losses in a row (step {run.step + 1}): stopping. The last checkpoint "
                f"({latest_checkpoint(run.run_dir) or 'none yet'}) is untouched; try a lower train.lr, train.grad_clip "
                f"or a restart from it with resume=auto")
    else:
        run.consecutive = 0
        if scaler:
            scaler.step(run.optimizer)
            scaler.update()
        else:
            run.optimizer.step()
        run.ema.update(run.backbone)
        if learns:  # every replica feeds the proposal the same (gathered) integrands, so they stay equal
            run.proc.proposal.update(distributed.all_gather_cat(torch.cat(lams)),
                                     distributed.all_gather_cat(torch.cat(integrands)))
    run.scheduler.step()
    run.step += 1
    run.bar.update(1)
    return loss_value, norm_value


def stop_on_data_failure(run: Run, failure: DatasetError | None) -> NoReturn:
    """Some rank could not read its data: save the last good step (every rank) and raise :class:`DataError`."""
    save(run, f"step_{run.step:07d}.pt")
    distributed.barrier()
    what = data_failure(failure) if failure is not None else "another rank could not read its training data"
    raise DataError(f"{what}; saved the last good step {run.step} in {run.run_dir / 'checkpoints'}: once the data is "
                    f"repaired, rerun with resume=auto hydra.run.dir={run.run_dir} to continue")


def log_step(run: Run, loss_value: float, norm_value: float) -> None:
    if run.step % run.t.log_every == 0 or run.step == run.t.steps:
        loss = loss_value / run.layout.world_size
        name = "loss" if run.loss_name == "elbo" else f"loss_{run.loss_name}"  # a weighted loss is no ELBO
        run.bar.set_postfix({name: f"{loss:.4f}"}, refresh=False)
        run.metrics.log(run.step, **{name: loss}, lr=run.scheduler.get_last_lr()[0],
                        grad_norm=norm_value / run.layout.world_size, nonfinite_skips=run.skipped)
