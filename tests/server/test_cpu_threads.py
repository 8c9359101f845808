"""A server on a CPU leaves a core to its event loop, audio and encoders (server.app.set_cpu_threads)."""

import os

import pytest
import torch

from server.app import load_model
from server.settings import Settings


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def test_default_is_all_cores_but_one(four_cores):
    torch.set_num_threads(4)
    load_model(Settings(model="tiny", device="cpu", max_running_jobs=0))
    assert torch.get_num_threads() == 3


def test_setting_wins(four_cores):
    torch.set_num_threads(4)
    load_model(Settings(model="tiny", device="cpu", max_running_jobs=0, cpu_threads=2))
    assert torch.get_num_threads() == 2


def test_omp_num_threads_is_left_alone(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    torch.set_num_threads(4)
    load_model(Settings(model="tiny", device="cpu", max_running_jobs=0))
    assert torch.get_num_threads() == 4


def test_env_and_flag_are_validated(monkeypatch, capsys):
    monkeypatch.setenv("FRAMECAST_CPU_THREADS", "1")
    assert Settings().cpu_threads == 1
    from client.cli import main

    assert main(["serve", "--cpu-threads", "0"]) != 0
    assert "invalid setting cpu_threads" in capsys.readouterr().err
