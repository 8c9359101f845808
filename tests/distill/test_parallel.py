"""Two ranks on the CPU (gloo, torchrun): FSDP2 training equals one process with the doubled batch,
ranks draw different samples, and `distill all` through every stage writes a student that streams."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("parallel_worker.py")


def torchrun(*args: str, cwd: Path = ROOT, timeout: int = 900) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def ranks_differ(history: list[dict]) -> bool:
    """Every logged step shows two ranks with different sample ids."""
    return all(len(r["rank_samples"]) == 2 and r["rank_samples"][0] != r["rank_samples"][1] for r in history)


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_the_doubled_batch(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import parallel_worker
    from distill.ode_pairs import sample_ode_pairs
    from tests.distill.tiny_recipe import tiny_recipe
    from models.model_dir import random_transformer
    from models.schedule import FlowMatchSchedule
    from models.text_encoders import build_text_encoder

    recipe = tiny_recipe(tmp_path / "pairs-recipe")
    cfg = recipe.model_config()
    pairs = tmp_path / "pairs"
    sample_ode_pairs(random_transformer(cfg, seed=1), build_text_encoder(cfg.text_encoder),
                     FlowMatchSchedule(cfg.schedule), (cfg.transformer.in_channels, 4, 2, 2), recipe.ode_pairs,
                     parallel_worker.PROMPTS, pairs, progress=False)
    torchrun(str(WORKER), str(tmp_path / "two" / "out.pt"), str(pairs), "2")  # 2 ranks x batch 2
    parallel_worker.train(tmp_path / "one" / "out.pt", pairs, 4)  # 1 process x batch 4
    two = torch.load(tmp_path / "two" / "out.pt", weights_only=False)
    one = torch.load(tmp_path / "one" / "out.pt", weights_only=False)
    for stage in ("ode_init", "self_forcing"):
        assert ranks_differ(two[stage]["history"]), two[stage]["history"]
        assert len(two[stage]["history"]) == len(one[stage]["history"]) > 0
        for a, b in zip(two[stage]["history"], one[stage]["history"]):
            for key, value in b.items():
                if key != "elapsed_s":
                    assert a[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (stage, key, a, b)
        for key, value in one[stage]["weights"].items():
            assert torch.allclose(two[stage]["weights"][key], value, atol=1e-5), (stage, key)


@pytest.mark.slow
def test_torchrun_distill_all_tiny_two_ranks(tmp_path):
    from models import load_generator

    out, work = tmp_path / "model", tmp_path / "work"
    torchrun("-m", "client.cli", "distill", "all", "--config", "configs/tiny.yaml", "--device", "cpu",
             "--out", str(out), "--work-dir", str(work))
    summary = json.loads((work / "summary.json").read_text())
    assert list(summary) == ["vae", "vae-decoder", "teacher", "ode-pairs", "ode-init", "self-forcing"]
    # each rank wrote its own ODE-pair shards (batch j by rank j % 2)
    assert summary["ode-pairs"]["pairs"] == 4 and summary["ode-pairs"]["written_by_rank0"] == 2
    assert len(list((work / "ode-pairs").glob("batch-*.safetensors"))) == 2
    for stage in ("ode-init", "self-forcing"):
        history = [json.loads(ln) for ln in (work / stage / "log.jsonl").read_text().splitlines()]
        assert ranks_differ(history), history
    gen = load_generator(str(out), device="cpu")
    frames = []
    for _ in range(2):
        stream = gen.stream("a red circle", seed=3)
        frames.append([next(stream).frames for _ in range(2)])
        stream.close()
    assert frames[0][0].shape[1:] == (32, 32, 3) and frames[0][0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(*frames))


def two_ranks_run(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """`script` run by torchrun on two ranks (both ranks' stdout teed back); asserts it exits 0."""
    path = tmp_path / "two_ranks.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--tee", "3",
           str(path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


EXIT_CHECK = """
import atexit, torch, torch.distributed as dist
from distill.parallel import init_distributed
atexit.register(lambda: print("initialised at exit:", dist.is_initialized(), flush=True))  # runs last (LIFO)
init_distributed(torch.device("cpu"))
x = torch.ones(4)
dist.all_reduce(x)
print("sum", int(x[0]), flush=True)
"""


def test_every_rank_leaves_the_process_group_at_exit(tmp_path):
    """A rank that ends while gloo's threads live can abort (SIGABRT, "terminate called without an
    active exception"; one torchrun in six here, and once in CI) and torchrun then fails a finished
    run: `init_distributed` registers an exit hook that leaves the group."""
    done = two_ranks_run(tmp_path, EXIT_CHECK)
    assert done.stdout.count("sum 2") == 2, done.stdout
    assert done.stdout.count("initialised at exit: False") == 2, done.stdout


FINISH_CHECK = """
import time, torch, torch.distributed as dist
from distill.parallel import exit_finished_rank, init_distributed, rank
init_distributed(torch.device("cpu"))
x = torch.ones(4)
dist.all_reduce(x)
if rank() == 0:
    time.sleep(1.0)  # the other rank reaches the end first and must wait here, not leave
print("finished rank", rank(), "sum", int(x[0]))
exit_finished_rank()
print("after the exit", flush=True)
"""


def test_finished_ranks_leave_together_and_exit_at_once(tmp_path):
    done = two_ranks_run(tmp_path, FINISH_CHECK)
    assert "finished rank 0 sum 2" in done.stdout and "finished rank 1 sum 2" in done.stdout, done.stdout
    assert "after the exit" not in done.stdout


def test_shutdown_leaves_the_process_group(monkeypatch):
    import torch.distributed as dist

    from distill.parallel import init_distributed, shutdown_distributed

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}.items():
        monkeypatch.setenv(key, value)
    init_distributed(torch.device("cpu"))
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()  # a second call (the exit hook after an explicit one) is a no-op
