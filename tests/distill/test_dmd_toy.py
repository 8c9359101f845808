"""DMD on a 2-D Gaussian: a one-step generator provably moves toward the teacher's distribution.

Data p_real = N(mu, s^2 I). For a Gaussian, the flow-matching denoiser is analytic: with
x_t = (1 - sigma) x0 + sigma eps, E[x0 | x_t] = mu + (1 - sigma) s^2 / ((1 - sigma)^2 s^2 + sigma^2) (x_t - (1 - sigma) mu).
The generator x = a + b z (z ~ N(0, I)) has p_fake = N(a, b^2 I), so its denoiser is the same formula
with (a, b): both scores are exact, and following the DMD gradient must shrink |a - mu| and |b - s|.
"""

import torch

from distill.dmd import cfg_flow, dmd_gradient, dmd_generator_loss, flow_matching_loss


def gaussian_x0(x_t: torch.Tensor, sigma: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(mean, std^2 I); x_t [N, 2], sigma [N, 1]."""
    a = 1 - sigma
    gain = a * std**2 / (a**2 * std**2 + sigma**2)
    return mean + gain * (x_t - a * mean)


def test_dmd_moves_one_step_generator_to_the_teacher():
    torch.manual_seed(0)
    mu, s = torch.tensor([1.5, -0.5]), torch.tensor(0.5)
    a = torch.zeros(2, requires_grad=True)
    log_b = torch.zeros((), requires_grad=True)  # b = 1 at start
    opt = torch.optim.SGD([a, log_b], lr=0.05)
    start_dist = ((a - mu).norm().item(), abs(log_b.exp().item() - s.item()))
    for _ in range(300):
        z = torch.randn(256, 2)
        x = a + log_b.exp() * z  # [N, 2] generator samples
        sigma = torch.rand(256, 1) * 0.96 + 0.02
        x_t = (1 - sigma) * x.detach() + sigma * torch.randn_like(x)
        real = gaussian_x0(x_t, sigma, mu, s)
        fake = gaussian_x0(x_t, sigma, a.detach(), log_b.detach().exp())
        loss = dmd_generator_loss(x, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end_dist = ((a - mu).norm().item(), abs(log_b.exp().item() - s.item()))
    assert end_dist[0] < 0.2 * start_dist[0], (start_dist, end_dist)
    assert end_dist[1] < 0.3 * start_dist[1], (start_dist, end_dist)


def test_dmd_gradient_direction_and_normaliser():
    x = torch.zeros(2, 3)
    real = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    fake = torch.zeros(2, 3)
    g = dmd_gradient(x, real, fake)
    # (fake - real) / mean|x - real|: each sample normalised by its own mean distance
    assert torch.allclose(g, -torch.ones(2, 3))
    x.requires_grad_(True)
    dmd_generator_loss(x, real, fake).backward()
    assert torch.allclose(x.grad, g / x.numel())  # the surrogate's gradient is the DMD gradient / numel
    # a descent step on the surrogate moves x toward the real denoiser's x0
    assert (x.detach() - 0.1 * x.grad - real).abs().sum() < (x.detach() - real).abs().sum()


def test_a_weight_mask_scales_each_elements_gradient_and_leaves_the_normaliser():
    torch.manual_seed(0)
    x, real, fake = torch.randn(2, 6), torch.randn(2, 6), torch.randn(2, 6)
    judged = torch.tensor([[0.0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    weights = judged * torch.tensor([1.0, 1, 5, 5, 1, 1])  # an element weighted up, as an avatar's mouth
    # the eq. 8 normaliser is the plain mean over the judged elements, whatever their weights
    assert torch.allclose(dmd_gradient(x, real, fake, mask=weights), dmd_gradient(x, real, fake, mask=judged))
    g = dmd_gradient(x, real, fake, mask=judged)
    x.requires_grad_(True)
    dmd_generator_loss(x, real, fake, mask=weights).backward()
    assert torch.allclose(x.grad, weights * g / weights.sum())  # d/dx = w g / sum(w)
    assert x.grad[:, 0].abs().max() == 0  # an unjudged element gets nothing


def test_cfg_convention_matches_self_forcing():
    cond, uncond = torch.randn(4), torch.randn(4)
    # framecast: uncond + g (cond - uncond); Self-Forcing's cond + 3 (cond - uncond) is g = 4
    assert torch.allclose(cfg_flow(cond, uncond, 4.0), cond + 3 * (cond - uncond))
    assert torch.allclose(cfg_flow(cond, uncond, 1.0), cond)


def test_critic_flow_matching_loss_is_zero_at_the_true_flow():
    x0, eps = torch.randn(3, 4), torch.randn(3, 4)
    assert flow_matching_loss(eps - x0, x0, eps).item() == 0.0
    assert flow_matching_loss(torch.zeros(3, 4), x0, eps).item() > 0.0
