"""Train and test the BSI paper's reference code (``martenlienen/bsi``) on the mnist5k split.

Run by :mod:`benchmarks.mnist5k` (``--reference PATH``) with the Python of an environment that
has the reference's dependencies (lightning, einops, jaxtyping, torchmetrics, torchdata, loky,
wandb): this file imports the reference's package, which is also called ``bsi``, so it never
imports this project.  Nothing of the reference is copied here; it is driven the way its
``train.py`` drives it: its hydra config (``config/train.yaml``, ``task=bsi``, the VDM U-Net
``task/model=bsi/unet``) composed with overrides, its ``BSITraining`` task instantiated from it,
and a Lightning ``Trainer`` with its trainer settings.  Differences from ``train.py``, all for a
CPU without network access: no wandb (a CSV logger), no ``torch.compile``, its wandb sample-plot
callback left out, and a data module for our split built from its own HDF5 dataset, samplers and
loaders (its data modules download CIFAR-10 or read ImageNet).

Data (written by the caller): ``DATA/{train,val,test}.h5`` in the reference's format, ``data``
float32 ``(N, 1, 28, 28)`` in [-1, 1] (level ``k`` -> ``2k/255 - 1``) and ``label`` int64 ``(N,)``.

The test bpd is the reference's own estimator, ``BSI.elbo`` of the EMA model (infinite-step ELBO,
``--n-samples`` measurement draws and one reconstruction draw per image), on the checkpoint with
the best validation bpd; its standard error is the spread over test images over sqrt(N).  Output:
``OUT/result.json`` and the Lightning logs (``OUT/lightning/``, with the validation curve).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, required=True, help="checkout of martenlienen/bsi")
    p.add_argument("--data", type=Path, required=True, help="directory with train.h5, val.h5, test.h5")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--channels", type=int, default=32, help="the U-Net's width (task.model.dim)")
    p.add_argument("--blocks", type=int, default=2, help="residual blocks per path (task.model.levels)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--n-samples", type=int, default=4, help="measurement draws per test image")
    p.add_argument("--eval-batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(args.reference.resolve()))  # the reference's package "bsi"

    import lightning.pytorch as pl
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from omegaconf import OmegaConf

    from bsi.data.h5image import H5DataMixin
    from bsi.data.sampler import DistributedNonPaddingSampler, InfiniteRandomSampler
    from bsi.tasks.bsi import BSITraining

    class Mnist5kDataModule(H5DataMixin, pl.LightningDataModule):
        """Our fixed split, served the way the reference's CIFAR-10 module serves its data."""

        def __init__(self, root: Path, batch_size: int, eval_batch_size: int):
            H5DataMixin.__init__(self, in_memory=True, preload=True)
            pl.LightningDataModule.__init__(self)
            self.root, self.batch_size, self.eval_batch_size = root, batch_size, eval_batch_size
            self.train_data = self.val_split = self.test_data = None

        def setup(self, stage: str) -> None:
            if self.train_data is None:
                self.train_data = self._h5_dataset(self.root / "train.h5")
                self.val_split = self._h5_dataset(self.root / "val.h5")
                self.test_data = self._h5_dataset(self.root / "test.h5")

        def train_dataloader(self):
            gen = torch.Generator().manual_seed(args.seed)
            return self._data_loader(self.train_data, batch_size=self.batch_size,
                                     sampler=InfiniteRandomSampler(self.train_data, generator=gen))

        def val_dataloader(self):
            return self._data_loader(self.val_split, batch_size=self.eval_batch_size,
                                     sampler=DistributedNonPaddingSampler(self.val_split))

        def data_shape(self) -> tuple[int, ...]:
            return (1, 28, 28)

        def short_name(self) -> str:
            return "mnist5k"

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", eval)  # the reference's configs compute with it (train.py registers it)
    overrides = [
        "task=bsi", "task/model=bsi/unet", "task/lr_scheduler=cosine", "task.compile=false",
        f"task.model.dim={args.channels}", f"task.model.levels={args.blocks}", f"task.model.dropout={args.dropout}",
        f"task.optimizer.lr={args.lr}", "task.optimizer.betas=[0.9,0.99]", f"task.optimizer.weight_decay={args.weight_decay}",
        f"task.lr_scheduler.warmup_steps={args.warmup}", f"task.lr_scheduler.end_lr={args.min_lr}",
        f"task.ema.beta={args.ema_decay}", f"task.ema.update_after_step={args.warmup}",
        f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.eval_every}",
    ]
    with initialize_config_dir(config_dir=str((args.reference / "config").resolve()), version_base=None):
        config = compose("train", overrides=overrides)
    OmegaConf.resolve(config)
    datamodule = Mnist5kDataModule(args.data, args.batch_size, args.eval_batch_size)
    task = instantiate(config.task, datamodule=datamodule, seed_sequence=np.random.SeedSequence(args.seed))
    assert isinstance(task, BSITraining), type(task)
    task.configure_callbacks = list  # its only callback draws sample plots for wandb
    n_params = sum(p.numel() for p in task.model.parameters())

    trainer_options = {k: v for k, v in OmegaConf.to_container(config.trainer).items()
                       if k not in ("accelerator", "devices", "precision", "num_sanity_val_steps")}
    checkpoints = ModelCheckpoint(dirpath=args.out / "checkpoints", monitor="val/bpd", mode="min", save_top_k=1,
                                  filename="best")
    trainer = pl.Trainer(**trainer_options, accelerator="cpu", devices=1, precision="32", num_sanity_val_steps=0,
                         logger=CSVLogger(args.out, name="lightning"), callbacks=[checkpoints],
                         enable_model_summary=False, enable_progress_bar=False)
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=False)
    task.load_state_dict(best["state_dict"])
    task.eval()
    generator = torch.Generator().manual_seed(args.seed)
    bpds = []
    with torch.no_grad():
        for start in range(0, len(datamodule.test_data), args.eval_batch_size):
            x, _ = datamodule.test_data[slice(start, start + args.eval_batch_size)]
            _, bpd, _ = task.ema_bsi.elbo(x, n_recon_samples=1, n_measure_samples=args.n_samples, generator=generator)
            bpds.append(bpd)
    bpd = torch.cat(bpds).double()
    result = {
        "test_bpd": bpd.mean().item(), "test_bpd_stderr": bpd.std().item() / math.sqrt(len(bpd)),
        "n_test": len(bpd), "n_samples": args.n_samples, "parameters": n_params,
        "steps": trainer.global_step, "best_val_bpd": float(checkpoints.best_model_score),
        "best_step": int(best["global_step"]), "train_seconds": train_seconds,
        "test_seconds": time.perf_counter() - started, "reference": str(args.reference.resolve()),
        "metrics_csv": str(Path(trainer.logger.log_dir) / "metrics.csv"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
