"""A CPU process keeps freed memory for reuse: no page faults for memory it freed and allocates again."""

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="the setting is glibc's")

# A step's pattern: sixteen 1 MiB tensors allocated and written, then freed last first, eight times.
# glibc's default returns the freed top of the heap to the OS each time, so each round faults every
# page in again; kept, the memory is reused once the heap has settled.  Prints the minor page faults
# of the last four rounds.
PROBE = """
import resource, sys, torch
from bsi.cpu import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
for round in range(8):
    if round == 4:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(2**18).fill_(1.0) for _ in range(16)]
    while blocks:
        blocks.pop()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 4 * 16 * 2**20 // 4096  # the pages of four rounds


def probe(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, check=True, capture_output=True,
                         text=True).stdout.split()
    return out[-2], int(out[-1])


@glibc
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = probe("retain")
    assert applied == "True"
    assert faults < PAGES / 100
    # Without the setting every tensor is mapped afresh and each of its pages faults in.
    applied, faults = probe("default")
    assert applied == "False"
    assert faults > PAGES * 0.9


@glibc
def test_the_users_own_allocator_settings_are_left_alone():
    applied, faults = probe("retain", MALLOC_TOP_PAD_="0")
    assert applied == "False"
    assert faults > PAGES * 0.9


def test_use_cpu_settings_applies_what_it_is_given(monkeypatch):
    import torch

    import bsi.cpu

    calls = []
    monkeypatch.setattr(bsi.cpu, "retain_freed_memory", lambda: calls.append(1) or True)
    before = torch.get_num_threads()
    try:
        bsi.cpu.use_cpu_settings(2, retain_memory=False)
        assert torch.get_num_threads() == 2 and not calls
        bsi.cpu.use_cpu_settings(None, retain_memory=True)
        assert torch.get_num_threads() == 2 and calls == [1]  # None leaves torch's threads alone
    finally:
        torch.set_num_threads(before)
