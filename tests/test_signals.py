"""Stop signals become a flag that loops poll; the polling denoiser stops the engine's loops within one call."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
import torch

from bsi.engine import make_process
from bsi.evaluation import Stopped, evaluate_likelihood
from bsi.signals import STOP_SIGNALS, StopRequested, StopSignal, polling

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
BINS = 17


class SlowDenoiser:
    """A stand-in network: returns the belief mean, after ``seconds``; counts its calls."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.calls = seconds, 0

    def __call__(self, mu: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        self.calls += 1
        return mu.clamp(-1, 1)


def signal_soon(signum: int, after: float) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


@posix
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_only_sets_the_flag(signum):
    # the handlers before the block, whatever the launcher left (a background job inherits SIGINT ignored)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    with StopSignal() as stop:
        assert signal.getsignal(signum) is not before[signum]
        assert not stop.poll()
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.signum == signum
        with pytest.raises(StopRequested, match=signal.Signals(signum).name):
            stop.raise_if_stopped()
    assert {s: signal.getsignal(s) for s in before} == before  # handlers are given back


def test_nothing_is_installed_at_import_or_outside_the_block():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert set(STOP_SIGNALS) >= {signal.SIGTERM, signal.SIGINT}


@posix
def test_ctrl_c_twice_stops_at_once():
    with StopSignal():
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a checkpoint and a stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


@posix
def test_the_pilot_stops_within_one_network_call_of_sigterm():
    """The k-step bound's pilot makes k network calls in one engine loop; the polling denoiser ends it."""
    proc = make_process("bsi", data_bins=BINS)
    x = torch.zeros(4, 1, 4, 4)
    slow = SlowDenoiser(0.1)
    with StopSignal() as stop:
        timer = signal_soon(signal.SIGTERM, 0.35)
        started = time.perf_counter()
        with pytest.raises(StopRequested, match="SIGTERM"):
            proc.step_proposal(x, polling(slow, stop), 1000)
        timer.join()
    assert 3 <= slow.calls <= 5  # signalled during the 4th call; the 5th was never made
    assert time.perf_counter() - started < 0.35 + 2 * 0.1 + 0.3


@posix
def test_a_sampler_stops_within_one_network_call_of_sigterm():
    proc = make_process("bsi", data_bins=BINS)
    slow = SlowDenoiser(0.1)
    with StopSignal() as stop:
        timer = signal_soon(signal.SIGTERM, 0.25)
        with pytest.raises(StopRequested):
            proc.sample(polling(slow, stop), (2, 1, 4, 4), steps=500)
        timer.join()
    assert slow.calls <= 4


def test_evaluate_likelihood_polls_should_stop_inside_the_pilot():
    """A stop requested during the pilot's k calls ends it, not k calls later."""
    proc = make_process("bsi", data_bins=BINS)
    images = torch.randint(0, BINS, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    network = SlowDenoiser()
    with pytest.raises(Stopped):
        evaluate_likelihood(proc, network, images, BINS, (1, 4, 4), ks=[1000], n_samples=1, seed=0, batch_size=6,
                            device=torch.device("cpu"), show_progress=False, kstep="proposal", pilot=6,
                            should_stop=lambda: network.calls >= 10)
    assert network.calls == 10  # 2 calls of the infinite-step bound, then 8 of the pilot's 1000


def test_polling_keeps_the_denoisers_attributes_and_none_means_no_wrapper():
    network = SlowDenoiser()
    assert polling(network, None) is network
    wrapped = polling(network, lambda: False)
    assert wrapped.seconds == 0.0 and torch.equal(wrapped(torch.ones(1), torch.ones(1)), torch.ones(1))
    with pytest.raises(StopRequested):
        polling(network, lambda: True)(torch.ones(1), torch.ones(1))
    assert network.calls == 1


def test_stopped_is_not_swallowed_by_except_exception():
    with pytest.raises(Stopped):
        try:
            raise Stopped(message="stop requested")
        except Exception:  # what library code does
            pytest.fail("a stop must pass through except Exception")


@posix
def test_the_launchers_signal_is_handed_over_after_the_block_ends_with_a_stop():
    """Under submitit its SIGUSR2 handler requeues the job: only after the run saved and stopped."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(StopRequested):
            with StopSignal(hand_over=(StopRequested,)) as stop:
                os.kill(os.getpid(), signal.SIGUSR2)
                assert stop.requested and calls == []
                stop.raise_if_stopped()
        assert calls == [signal.SIGUSR2]
        with StopSignal(include_launcher=False) as stop:  # an evaluation leaves it to submitit
            os.kill(os.getpid(), signal.SIGUSR2)
        assert not stop.requested and calls == [signal.SIGUSR2, signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@posix
def test_ctrl_c_is_never_handed_to_pythons_own_handler():
    with pytest.raises(StopRequested):
        with StopSignal(hand_over=(StopRequested,)) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            stop.raise_if_stopped()  # a KeyboardInterrupt here would mean exit 130 without the checkpoint
