"""Same frames (or same seed + prompt) -> byte-identical decoded frames, in separate processes.

libx264 picks its thread count from the CPUs a process may use, and its output depends on that
count, so the second process of each pair runs pinned to one CPU: with the encoder's default
threading these pairs decode to different frames (up to ~16 levels apart).
"""

import os
import subprocess
import sys
import av
import numpy as np
import pytest

from tests.server_harness import REPO, clean_env

ENCODE = r"""
import sys
import numpy as np
from client.mp4_writer import Mp4Writer
from server.encoders import Fmp4ChunkEncoder
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (1, 480, 832, 3), dtype=np.uint8)
frames = np.concatenate([np.roll(base, 3 * i, axis=2) for i in range(16)])  # [16, 480, 832, 3] moving texture
frames = (frames // 2 + rng.integers(0, 128, frames.shape, dtype=np.uint8) // 2).astype(np.uint8)
with Mp4Writer(sys.argv[1] + ".mp4", fps=16) as writer:
    writer.write(frames)
encoder = Fmp4ChunkEncoder(fps=16)
with open(sys.argv[1] + ".fmp4", "wb") as out:
    for start in range(0, 16, 8):
        out.write(encoder.encode(frames[start:start + 8], start))
"""

needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to vary the thread count")


def _run(argv, pin_one_cpu: bool, **kwargs):
    preexec = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if pin_one_cpu else None
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=clean_env(), preexec_fn=preexec, check=True,
                          capture_output=True, text=True, **kwargs)


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [T, H, W, 3]


@needs_two_cpus
def test_encoders_give_the_same_frames_in_every_process(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(["-c", ENCODE, str(a)], pin_one_cpu=False)
    _run(["-c", ENCODE, str(b)], pin_one_cpu=True)
    for suffix in (".mp4", ".fmp4"):
        first, second = decode(f"{a}{suffix}"), decode(f"{b}{suffix}")
        assert first.shape == (16, 480, 832, 3)
        np.testing.assert_array_equal(first, second, err_msg=suffix)


@needs_two_cpus
def test_generate_same_seed_same_frames_across_processes(tmp_path):
    outputs = []
    for i, pin in enumerate((False, True)):
        out = tmp_path / f"clip{i}.mp4"
        _run(["-m", "client.cli", "generate", "a red circle", "--model", "tiny", "--seed", "3", "--frames", "9",
              "--device", "cpu", "-o", str(out)], pin_one_cpu=pin)
        outputs.append(decode(out))
    assert outputs[0].shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(outputs[0], outputs[1])
