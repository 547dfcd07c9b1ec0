"""gather_examples: per-rank rows back in example order, every example exactly once, over gloo."""

import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from bsi.evaluation import gather_examples


def test_single_process_reorders_and_checks_coverage():
    values = torch.tensor([30.0, 10.0, 20.0])
    assert gather_examples(values, [2, 0, 1], 3).tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(RuntimeError, match="exactly once"):
        gather_examples(values, [0, 0, 1], 3)
    with pytest.raises(RuntimeError, match="exactly once"):
        gather_examples(values, [0, 1, 2], 4)


# torchrun needs an importable script (pytest's importlib mode makes test modules unimportable by name).
WORKER = textwrap.dedent("""
    import torch, torch.distributed as dist
    from bsi import distributed
    from bsi.evaluation import gather_examples, shard

    layout, _ = distributed.setup("cpu")
    n = 7
    idx = list(shard(n, layout.rank, layout.world_size))
    rows = torch.tensor(idx, dtype=torch.float64)[:, None] * torch.tensor([1.0, -1.0], dtype=torch.float64)
    images = torch.tensor(idx, dtype=torch.uint8)[:, None, None].expand(-1, 2, 2)
    rows, images = gather_examples(rows, idx, n), gather_examples(images, idx, n)
    assert rows[:, 0].tolist() == list(range(n)) and rows[:, 1].tolist() == [-i for i in range(n)], rows
    assert images.dtype == torch.uint8 and images[:, 0, 0].tolist() == list(range(n)), images
    print(f"rank {layout.rank} of {layout.world_size}: ok")
    distributed.teardown()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_with_an_odd_count(tmp_path):
    script = tmp_path / "gather_worker.py"
    script.write_text(WORKER)
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         str(script)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 0 of 2: ok" in out.stdout and "rank 1 of 2: ok" in out.stdout
