"""``python -m bsi.evaluate`` end to end on a tiny checkpoint trained once for this module.

FID runs through torch-fidelity with a stand-in feature extractor registered through its
extension API: the real Inception weights cannot be downloaded here.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bsi.cpu
from bsi.checkpoint import load_trained
from bsi.data import build_dataset, to_float
from bsi.engine import OneHot, bits_per_dim, example_generators
from bsi.evaluate import main
from bsi.evaluation.stop import StopOnSignal, interrupted_message
from bsi.signals import StopRequested
from bsi.evaluation.likelihood import pilot_step_proposal
from bsi.evaluation import save_npz, to_pixels
from tests.evaluation.standin import pooled_pixels

ROOT = Path(__file__).resolve().parents[1]
TERMS = ("measurement", "reconstruction", "prior", "total")
STANDIN = pooled_pixels("bsi-test-pixels", pool=8, features=32)


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bsi.evaluate", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def failure(capsys, *args: str) -> str:
    """Run the CLI in-process, expect exit status 2, return stderr (one line, no traceback)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A digits run of 10 steps of a small MLP (about 10 s on 2 cores)."""
    run = tmp_path_factory.mktemp("run")
    out = subprocess.run(
        [sys.executable, "-m", "bsi.train", "train.steps=10", "train.batch_size=32", "train.warmup=2",
         "eval.n_samples=1", "eval.ks=[]", "eval.grid=4", "eval.sample.steps=3", "model.width=32",
         "model.embedding_dim=16", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def likelihood_run(run_dir) -> tuple[subprocess.CompletedProcess, dict]:
    """The command as documented, with its defaults: ``likelihood checkpoint=RUN``."""
    out = cli("likelihood", f"checkpoint={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads((run_dir / "eval" / "likelihood.json").read_text())


def test_likelihood_cli_writes_json_and_table(likelihood_run):
    out, result = likelihood_run
    assert result["n_examples"] == 360 and result["dims"] == 64 and result["ema"] is True
    assert [row["steps"] for row in result["elbo"]] == [None, 10, 100, 1000]
    for row in result["elbo"]:
        assert sum(row[k]["bpd"] for k in TERMS[:3]) == pytest.approx(row["total"]["bpd"], rel=1e-9)
        for k in TERMS:
            lo, hi = row[k]["ci95"]
            assert lo <= row[k]["bpd"] <= hi and row[k]["stderr"] >= 0
    table = out.stdout
    assert "measurement" in table and "95% interval" in table
    for label in ("inf", "10", "100", "1000"):
        assert any(line.split() and line.split()[0] == label for line in table.splitlines()), table
    assert "in total" in out.stderr  # the time estimate beside the progress bar


def test_cli_bpd_matches_the_engine_elbo_on_the_same_batch(run_dir, likelihood_run):
    _, result = likelihood_run
    model = load_trained(run_dir)
    test = build_dataset(model.cfg.data, "test")
    x = to_float(test.__getitems__(range(len(test))), test.bins)  # one batch; the CLI used batches of 256
    assert result["kstep"] == "proposal" and result["pilot"] == 64
    for row in result["elbo"][:2]:
        proposal = None if row["steps"] is None else pilot_step_proposal(
            model.process, model.denoiser, test, test.bins, row["steps"], 64, 0, torch.device("cpu"))
        terms = model.process.elbo(x, model.denoiser, steps=row["steps"], n_samples=4,
                                   generator=example_generators(0, range(len(test))), step_proposal=proposal)
        for k in TERMS:
            want = bits_per_dim(terms[k], 64)
            assert row[k]["bpd"] == pytest.approx(want.mean, abs=1e-6), (row["steps"], k)
            assert row[k]["stderr"] == pytest.approx(want.stderr, abs=1e-6), (row["steps"], k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_on_an_odd_number_of_examples(run_dir, tmp_path):
    args = ["likelihood", f"checkpoint={run_dir}", "likelihood.limit=101", "likelihood.ks=[3]",
            "likelihood.n_samples=2", "batch_size=16", "device=cpu"]
    main([*args, f"out_dir={tmp_path / 'one'}"])
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "bsi.evaluate", *args, f"out_dir={tmp_path / 'two'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "likelihood.json").read_text())
    b = json.loads((tmp_path / "two" / "likelihood.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["n_examples"] == b["n_examples"] == 101
    for ra, rb in zip(a["elbo"], b["elbo"], strict=True):
        for k in TERMS:
            # Same per-example noise on either layout: equal up to float32 rounding, not just MC noise.
            assert ra[k]["bpd"] == pytest.approx(rb[k]["bpd"], abs=1e-6), (ra["steps"], k)
            assert ra[k]["stderr"] == pytest.approx(rb[k]["stderr"], abs=1e-6), (ra["steps"], k)


def test_one_rank_repeats_exactly(run_dir, tmp_path, capsys):
    args = ["likelihood", f"checkpoint={run_dir}", "likelihood.limit=40", "likelihood.ks=[5]", "likelihood.n_samples=1"]
    main([*args, f"out_dir={tmp_path / 'a'}"])
    main([*args, f"out_dir={tmp_path / 'b'}", "split=test"])
    a, b = (json.loads((tmp_path / d / "likelihood.json").read_text()) for d in "ab")
    assert a["elbo"] == b["elbo"]


def test_float64_evaluation(run_dir, tmp_path):
    main(["likelihood", f"checkpoint={run_dir}", "likelihood.limit=20", "likelihood.ks=[]", "dtype=float64",
          "ema=false", f"out_dir={tmp_path}", "split=train"])
    result = json.loads((tmp_path / "likelihood_train.json").read_text())
    assert result["dtype"] == "float64" and result["ema"] is False and result["split"] == "train"
    assert math.isfinite(result["elbo"][0]["total"]["bpd"])


def test_samples_do_not_depend_on_the_batch_size(run_dir, tmp_path):
    common = ["sample", f"checkpoint={run_dir}", "n=9", "sample.steps=4"]
    main([*common, "batch_size=4", "sample.trajectory=true", "sample.trajectory_n=3", f"out_dir={tmp_path / 'a'}"])
    main([*common, "batch_size=9", f"out_dir={tmp_path / 'b'}"])
    main(["sample", f"checkpoint={run_dir}", "n=5", "sample.steps=4", "batch_size=2", f"out_dir={tmp_path / 'c'}"])
    a, b, c = (np.load(tmp_path / d / "samples.npz") for d in "abc")
    assert a["images"].shape == (9, 8, 8, 1) and a["images"].dtype == np.uint8
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["images"][:5], c["images"])
    assert (tmp_path / "a" / "samples.png").stat().st_size > 0
    traj = np.load(tmp_path / "a" / "trajectory.npz")
    assert traj["mu"].shape == traj["x_hat"].shape == (5, 3, 1, 8, 8) and traj["lam"].shape == (5,)
    assert not (tmp_path / "b" / "trajectory.npz").exists()


@pytest.mark.parametrize("solver", ["ode2", "sde1"])
def test_fast_solvers_sample(run_dir, tmp_path, solver):
    main(["sample", f"checkpoint={run_dir}", "n=3", "sample.steps=3", f"sample.solver={solver}",
          "sample.spacing=edm", f"out_dir={tmp_path}"])
    with np.load(tmp_path / "samples.npz") as f:
        assert f["images"].shape == (3, 8, 8, 1) and str(f["solver"]) == solver and str(f["spacing"]) == "edm"


# -- FID ---------------------------------------------------------------------------------------------
def fid_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out"
    (tmp_path / "data").mkdir(exist_ok=True)  # data.root must exist: only data/digits/fid_cache is made
    main(["fid", f"fid.feature_extractor={STANDIN}", f"data.root={tmp_path / 'data'}", f"out_dir={out}",
          "fid.kid_subset_size=300", *args])
    return json.loads((out / "fid.json").read_text())


def test_fid_of_a_set_against_itself_and_a_shifted_set(tmp_path):
    train = build_dataset({"name": "digits", "val_size": 137}, "train")
    pixels = to_pixels(train.__getitems__(range(len(train))), train.bins)
    data = {"name": "digits", "val_size": 137}
    same = save_npz(tmp_path / "same.npz", pixels, range(len(pixels)), 17, data=data)
    shifted = save_npz(tmp_path / "shifted.npz", (pixels.int() + 60).clamp(max=255).to(torch.uint8), range(len(pixels)),
                       17, data=data)
    self_fid = fid_json(tmp_path, f"fid.samples={same}")
    cache = tmp_path / "data" / "digits" / "fid_cache"
    cached = sorted(p.name for p in cache.iterdir())
    assert any("digits-train-1300" in name and "stat-fid" in name for name in cached), cached
    shift_fid = fid_json(tmp_path, f"fid.samples={shifted}")
    assert sorted(p.name for p in cache.iterdir()) == cached  # the reference was read from the cache
    assert self_fid["n_samples"] == shift_fid["n_samples"] == 1300 and self_fid["n_reference"] == 1300
    assert abs(self_fid["fid"]) < 1e-3 and abs(self_fid["kid"]) < 1e-3
    assert shift_fid["fid"] > 0.1 and shift_fid["fid"] > 1000 * abs(self_fid["fid"])
    assert shift_fid["kid"] > 10 * self_fid["kid_std"]


def test_fid_from_a_checkpoint(run_dir, tmp_path, capsys):
    result = fid_json(tmp_path, f"checkpoint={run_dir}", "n=12", "sample.steps=3")
    assert result["n_samples"] == 12 and result["kid_subset_size"] == 12 and result["solver"] == "ancestral"
    assert math.isfinite(result["fid"]) and result["fid"] > 0
    assert Path(result["samples"]).is_file()
    assert "from 12 samples" in capsys.readouterr().out  # the count is reported with every FID


def test_missing_inception_weights_say_what_to_do(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    err = failure(capsys, "fid", f"checkpoint={run_dir}", "n=4", f"out_dir={tmp_path / 'out'}")
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "https://" in err and "fid.inception_weights=" in err
    assert not (tmp_path / "out").exists()  # checked before any sampling
    err = failure(capsys, "fid", f"checkpoint={run_dir}", f"fid.inception_weights={tmp_path / 'none.pth'}")
    assert "not found" in err


# -- errors ------------------------------------------------------------------------------------------
def test_bad_inputs_end_with_one_line_and_status_2(run_dir, tmp_path, capsys):
    assert "unknown task 'likelihod'" in failure(capsys, "likelihod", f"checkpoint={run_dir}")
    assert "unknown task 'foo'" in failure(capsys, "task=foo", f"checkpoint={run_dir}")
    assert "no task" in failure(capsys, f"checkpoint={run_dir}")
    assert "does not exist" in failure(capsys, "likelihood", f"checkpoint={tmp_path / 'missing.pt'}")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert "unreadable" in failure(capsys, "likelihood", f"checkpoint={corrupt}")
    assert "unknown solver 'euler'" in failure(capsys, "sample", f"checkpoint={run_dir}", "sample.solver=euler")
    assert "needs checkpoint" in failure(capsys, "sample")


def test_wrong_values_from_the_shell_end_with_one_line_and_status_2(tmp_path):
    """Values of the wrong type used to end in int()'s traceback with status 1."""
    for args, says in [(["sample", f"checkpoint={tmp_path}", "n=abc"], "n='abc' must be a whole number"),
                       (["likelihood", f"checkpoint={tmp_path}", "likelihood.ks=abc"], "likelihood.ks='abc' must be a list"),
                       (["likelihood", f"checkpoint={tmp_path}", "likelihood.kz=3"], "unknown key likelihood.kz")]:
        out = cli(*args)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
        assert says in out.stderr and "Traceback" not in out.stderr


def test_settings_that_would_give_nan_or_nothing_are_refused(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    common = [f"checkpoint={run_dir}", f"out_dir={out}"]
    # likelihood.limit=0 used to print `nan ± nan` and exit 0; one example has no standard error.
    assert "likelihood.limit=0 must be a whole number >= 2" in failure(capsys, "likelihood", *common, "likelihood.limit=0")
    assert "likelihood.limit=1 must be" in failure(capsys, "likelihood", *common, "likelihood.limit=1")
    err = failure(capsys, "likelihood", *common, "likelihood.n_samples=0", "batch_size=0", "likelihood.ks=[0]")
    assert "likelihood.n_samples=0" in err and "batch_size=0" in err and "likelihood.ks=[0]" in err  # all at once
    assert "n=0 must be" in failure(capsys, "sample", *common, "n=0")
    assert "sample.grid=0 must be" in failure(capsys, "sample", *common, "sample.grid=0")
    assert "n=1 must be a whole number >= 2" in failure(capsys, "fid", *common, "n=1")
    assert "ema='yes' must be true or false" in failure(capsys, "sample", *common, "ema=yes")
    one = save_npz(tmp_path / "one.npz", torch.zeros(1, 1, 8, 8, dtype=torch.uint8), [0], 17, data={"name": "digits"})
    assert "has 1 example(s)" in failure(capsys, "fid", f"fid.samples={one}", f"fid.feature_extractor={STANDIN}")
    assert not out.exists()


def test_cpu_settings_are_applied(run_dir, tmp_path, monkeypatch):
    retained = []
    monkeypatch.setattr(bsi.cpu, "retain_freed_memory", lambda: retained.append(True))
    before = torch.get_num_threads()
    args = ["sample", f"checkpoint={run_dir}", "n=2", "sample.steps=1", "device=cpu", f"out_dir={tmp_path}"]
    try:
        torch.set_num_threads(3)
        main(args)  # the defaults, as in training
        assert torch.get_num_threads() == 1 and retained == [True]
        main([*args, "cpu_threads=2", "cpu_retain_memory=false"])
        assert torch.get_num_threads() == 2 and retained == [True]
        torch.set_num_threads(3)
        main([*args, "cpu_threads=null"])  # torch's own choice is left alone
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


# -- signals -----------------------------------------------------------------------------------------
def stop_after_first_batch(args: list[str], marker: str) -> tuple[int, str]:
    """Start the CLI, send SIGTERM once the first batch is done (``marker`` on stderr); its status and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "bsi.evaluate", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # text mode splits tqdm's carriage returns into lines too
            seen.append(line)
            if marker in line:
                break
        assert proc.poll() is None, "".join(seen)  # still running: the signal arrives mid-evaluation
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        return proc.wait(timeout=120), "".join(seen) + rest
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_the_likelihood_with_status_3_and_no_result(run_dir, tmp_path):
    out = tmp_path / "out"
    # 100 draws per example: about a second a batch of 16, half a minute for the split.
    status, err = stop_after_first_batch(["likelihood", f"checkpoint={run_dir}", "likelihood.ks=[]",
                                          "likelihood.n_samples=100", "batch_size=16", f"out_dir={out}"], "in total")
    last = err.strip().splitlines()[-1]
    assert status == 3, err[-2000:]
    assert last == "error: stopped by SIGTERM before the likelihood finished: no result was written (rerun the " \
                   "command to start over)", last
    assert "Traceback" not in err and not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_sampling_with_status_3_and_no_samples(run_dir, tmp_path):
    out = tmp_path / "out"
    status, err = stop_after_first_batch(["sample", f"checkpoint={run_dir}", "n=512", "batch_size=1", "sample.steps=300",
                                          f"out_dir={out}"], "in total")
    assert status == 3 and "error: stopped by SIGTERM before the sample finished" in err, err[-2000:]
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_only_sets_the_flag_that_the_loops_poll():
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # nothing is interrupted: files being written are finished
        assert stop.poll()
        with pytest.raises(StopRequested, match="SIGTERM"):
            stop.raise_if_stopped()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    stop.written.append(Path("out/fid_samples.npz"))
    assert "rerun with fid.samples=out/fid_samples.npz" in interrupted_message("fid", stop)


def test_bad_subcommand_from_the_shell():
    out = cli("evaluate-everything")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown task" in out.stderr


def test_discrete_data_likelihood_in_nats_per_image_and_binary_samples(tmp_path, capsys):
    """bfn-discrete on binarized digits: the CLI's ELBO is the engine's, also in nats; samples are binary."""
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "bsi.train", "method=bfn-discrete", "data=binarized_digits", "train.steps=10",
         "train.batch_size=32", "train.warmup=2", "eval.n_samples=1", "eval.ks=[]", "eval.grid=4",
         "eval.sample.steps=3", "model.width=32", "model.embedding_dim=16", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    main(["likelihood", f"checkpoint={run}", "likelihood.ks=[5]", "likelihood.n_samples=2", "likelihood.kstep=uniform",
          f"out_dir={tmp_path / 'l'}"])
    result = json.loads((tmp_path / "l" / "likelihood.json").read_text())
    nats = result["elbo"][0]["total"]["nats"]
    assert f"infinite-step total: {nats:.3f} ±" in capsys.readouterr().out
    model = load_trained(run)
    test = build_dataset(model.cfg.data, "test")
    assert isinstance(model.process.space, OneHot) and test.bins == 2 and result["dims"] == 64
    x = to_float(test.__getitems__(range(len(test))), test.bins)
    for row in result["elbo"]:
        terms = model.process.elbo(x, model.denoiser, steps=row["steps"], n_samples=2,
                                   generator=example_generators(0, range(len(test))))
        want = bits_per_dim(terms["total"], 64)
        assert row["total"]["bpd"] == pytest.approx(want.mean, abs=1e-6)
        assert row["total"]["nats"] == pytest.approx(terms["total"].mean().item(), rel=1e-6)  # nats per image
    main(["sample", f"checkpoint={run}", "n=8", "sample.solver=ode2", "sample.steps=4", f"out_dir={tmp_path / 's'}"])
    with np.load(tmp_path / "s" / "samples.npz") as f:
        pixels = f["images"]
    assert pixels.shape == (8, 8, 8, 1) and set(np.unique(pixels)) <= {0, 255}
