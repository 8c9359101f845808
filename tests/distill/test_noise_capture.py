"""`distill.noise_capture`: the share of the noise a flow model returns, on flows whose answer is known."""

import pytest
import torch

from distill.noise_capture import noise_capture
from models.config import preset
from models.model_dir import random_transformer
from models.schedule import FlowMatchSchedule

SCHEDULE = FlowMatchSchedule(preset("tiny").schedule)


def _x0():
    return torch.randn(3, 4, 5, 6, 6, generator=torch.Generator().manual_seed(1))


def _exact(x0, share):
    """A flow that knows x0 and returns `share` of the noise: v = share * eps - x0, eps recovered from x_t."""
    def flow(x_t, t):
        sigma = (t / SCHEDULE.num_train_timesteps).clamp_min(1e-6)[:, None, :, None, None]  # [B, 1, F, 1, 1]
        eps = (x_t - (1 - sigma) * x0) / sigma
        return share * eps - x0
    return flow


@pytest.mark.parametrize("share", [1.0, 0.45, 0.0])
def test_a_flow_that_returns_a_share_of_the_noise_is_measured_at_that_share(share):
    x0 = _x0()
    for row in noise_capture(_exact(x0, share), SCHEDULE, x0, lead_frames=1):
        assert row["a"] == pytest.approx(share, abs=1e-6) and row["b"] == pytest.approx(-1.0, abs=1e-6)
        assert row["residual_rms"] < 1e-6


def test_lead_frames_stay_clean_and_out_of_the_fit():
    x0 = _x0()
    seen = {}

    def flow(x_t, t):
        seen["t"], seen["x_t"] = t, x_t
        return torch.where(torch.arange(x0.shape[2])[None, None, :, None, None] < 1, torch.randn_like(x0) * 9, -x0)

    row = noise_capture(flow, SCHEDULE, x0, sigmas=(0.5,), lead_frames=1)[0]
    assert torch.equal(seen["x_t"][:, :, 0], x0[:, :, 0]) and (seen["t"][:, 0] == 0).all() and (seen["t"][:, 1:] > 0).all()
    assert row["a"] == pytest.approx(0.0, abs=1e-6) and row["b"] == pytest.approx(-1.0, abs=1e-6)  # frame 0's junk ignored


def test_a_random_transformer_returns_almost_none_of_the_noise():
    cfg = preset("tiny")
    model = random_transformer(cfg, seed=0).eval()
    text = torch.zeros(3, 4, cfg.transformer.text_dim)
    x0 = torch.randn(3, cfg.transformer.in_channels, 3, cfg.latent_height, cfg.latent_width, generator=torch.Generator().manual_seed(2))
    rows = noise_capture(lambda x, t: model(x, t, text), SCHEDULE, x0)
    assert all(abs(r["a"]) < 0.2 for r in rows)
