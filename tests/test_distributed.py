"""Rank detection from torchrun's and SLURM's variables, per-rank seeds, and a two-process gloo run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bsi.config import CONFIGS
from bsi.distributed import DistEnv, detect, first_host, rank_seed

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_variables():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node3", "MASTER_PORT": "1234"}
    assert detect(env) == DistEnv(5, 8, 1, "node3", 1234)


def test_slurm_variables():
    env = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[07-09,12]",
           "SLURM_JOB_ID": "4242"}
    layout = detect(env)
    assert (layout.rank, layout.world_size, layout.local_rank, layout.master_addr) == (9, 16, 1, "gpu07")
    assert layout.master_port == 20000 + 4242 and detect({**env, "MASTER_PORT": "3000"}).master_port == 3000
    # srun may run a step on fewer tasks than the allocation holds
    assert detect({**env, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}).world_size == 2
    # torchrun inside a SLURM job: torchrun's variables win
    assert detect({**env, "RANK": "0", "WORLD_SIZE": "2"}).world_size == 2


def test_single_process_defaults():
    assert detect({}) == DistEnv()
    assert not detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).distributed


def test_first_host_of_slurm_host_lists():
    assert first_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_host("node17") == "node17"
    assert first_host("a,b") == "a"
    assert first_host("rack1-n[003-004]-ib") == "rack1-n003-ib"


def test_rank_seeds_are_distinct_and_reproducible():
    seeds = {rank_seed(seed, rank, stream) for seed in range(3) for rank in range(4) for stream in range(3)}
    assert len(seeds) == 36
    assert rank_seed(0, 1000) != rank_seed(1, 0) and rank_seed(7, 3, 1) == rank_seed(7, 3, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One rank of a two-process run, as torchrun would start it (rank and rendezvous from the environment):
# train, then save this replica's weights and the noise levels its backbone saw.
RANK_SCRIPT = """
import sys
from pathlib import Path
import torch
from omegaconf import OmegaConf
import bsi.train
import bsi.training.setup

run_dir = Path(sys.argv[1])
seen, modules = [], []
build = bsi.training.setup.build_backbone

def built(*args, **kwargs):
    module = build(*args, **kwargs)
    module.register_forward_pre_hook(lambda mod, args: seen.append(args[1].clone()) if mod.training else None)
    modules.append(module)
    return module

bsi.training.setup.build_backbone = built
rank = __import__("os").environ["RANK"]
if rank == __import__("os").environ.get("UNREADABLE_VAL_ON_RANK"):  # this rank's validation reads fail
    def unreadable(*args, **kwargs):
        raise bsi.data.DatasetError("val.h5: reading images failed (damaged)")

    build_dataset = bsi.training.setup.build_dataset
    def build_split(cfg, split):
        dataset = build_dataset(cfg, split)
        if split == "val":
            dataset.__getitems__ = unreadable
        return dataset
    bsi.training.setup.build_dataset = build_split
final = bsi.train.train(OmegaConf.load(run_dir / "cfg.yaml"), run_dir=run_dir)
torch.save({"weights": modules[0].state_dict(), "t": torch.stack(seen), "final": final}, run_dir / f"rank{rank}.pt")
"""


OVERRIDES = ["train.steps=4", "train.batch_size=64", "train.warmup=1", "train.eval_every=4", "train.checkpoint_every=4",
             "eval.n_samples=1", "eval.ks=[]", "eval.grid=4", "eval.sample.steps=2", "model.width=32",
             "model.embedding_dim=16", "model.dropout=0.1", "method.proposal=adaptive", "cpu_threads=1"]


def run_two_ranks(tmp_path: Path, overrides: list[str], env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """``(exit status, output)`` of each rank of a two-process gloo training in ``tmp_path``."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        OmegaConf.save(compose("train", overrides=overrides), tmp_path / "cfg.yaml")
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    port = free_port()
    ranks = [
        subprocess.Popen([sys.executable, str(tmp_path / "rank.py"), str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, **(env or {}), "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT)})
        for r in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=120)[0] for proc in ranks]
    finally:
        for proc in ranks:  # (a rank left waiting for the other in a collective would wait for gloo's 30 minutes)
            proc.kill()
    return [(proc.returncode, output) for proc, output in zip(ranks, outputs)]


def test_two_gloo_ranks_stay_in_sync_with_different_noise(tmp_path):
    for status, output in run_two_ranks(tmp_path, OVERRIDES):
        assert status == 0, output
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for name, weight in r0["weights"].items():
        assert torch.equal(weight, r1["weights"][name]), name
    assert r0["t"].shape == (4, 32)  # 4 steps of 64 examples over 2 ranks
    assert not torch.equal(r0["t"], r1["t"])  # each rank draws its own noise levels
    assert r0["final"]["test_bpd"] == r1["final"]["test_bpd"]  # one test bpd, gathered over both ranks
    checkpoint = torch.load(tmp_path / "checkpoints" / "step_0000004.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["generator"], checkpoint["rng"][1]["generator"])
    assert torch.equal(checkpoint["model"][name], r0["weights"][name])


def test_unreadable_validation_data_on_one_rank_stops_both_after_saving_the_step(tmp_path):
    # Rank 1 cannot read its validation shard at step 2: neither rank may wait for the other in a
    # collective; both save step 2 (no checkpoint was due) and exit with the data error's status.
    overrides = [*OVERRIDES, "train.eval_every=2", "data.val_size=100", "eval.grid=0"]
    results = run_two_ranks(tmp_path, overrides, {"UNREADABLE_VAL_ON_RANK": "1"})
    for status, output in results:
        assert status != 0 and "saved the last good step 2" in output, output
    assert "val.h5: reading images failed (damaged)" in results[1][1]
    assert "another rank could not read its val data" in results[0][1]
    checkpoint = torch.load(tmp_path / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert checkpoint["evaluated"] is False and checkpoint["world_size"] == 2


def test_autocast_runs_the_network_in_the_asked_precision_on_a_gpu_only():
    import contextlib
    import warnings

    from bsi import distributed

    assert isinstance(distributed.autocast(torch.device("cpu"), "bf16"), contextlib.nullcontext)
    assert isinstance(distributed.autocast(torch.device("cuda"), "fp32"), contextlib.nullcontext)
    with warnings.catch_warnings():  # no GPU here: torch warns that it would disable it
        warnings.simplefilter("ignore")
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            assert distributed.autocast(torch.device("cuda"), name).fast_dtype == dtype
