"""Self-Forcing rollouts are the inference loop: same latents as streaming, gradients only at exit steps."""

import numpy as np
import torch

from distill.rollout import rollout, score_windows, split_windows
from tests.distill.tiny_recipe import tiny_recipe
from models.generator import StreamingGenerator
from models.model_dir import random_transformer
from models.text_encoders import build_text_encoder
from models.vae import VideoVAE, frames_to_uint8


def make_gen(tmp_path, max_batch=2):
    cfg = tiny_recipe(tmp_path).model_config()
    torch.manual_seed(0)
    vae = VideoVAE.from_config(cfg.vae).eval()
    return StreamingGenerator(cfg, random_transformer(cfg, seed=0), vae, build_text_encoder(cfg.text_encoder),
                              max_batch=max_batch)


def test_rollout_without_grad_equals_streaming_output(tmp_path):
    gen = make_gen(tmp_path)
    c, cache_frames = gen.cfg.stream.chunk_frames, gen.cfg.stream.sink_frames + gen.cfg.stream.window_frames
    chunks = cache_frames // c + 2  # longer than the cache: the window rolls (frames are evicted)
    with torch.no_grad():
        latents = rollout(gen, ["a red circle on black", "two blue squares"], [7, 8], chunks)
    assert latents.shape[2] == chunks * c
    # the same prompt and seed streamed by the generator (decoded frames) ...
    stream = gen.stream("two blue squares", seed=8)
    streamed = np.concatenate([next(stream).frames for _ in range(chunks)])
    stream.close()
    # ... equal the rollout's latents decoded in one go
    decoded = frames_to_uint8(gen.vae.decode(latents[1:2]))[0]
    assert decoded.shape == streamed.shape
    assert np.abs(decoded.astype(int) - streamed.astype(int)).max() <= 1
    # and a batched rollout equals single rollouts (streams are independent)
    with torch.no_grad():
        single = rollout(gen, ["a red circle on black"], [7], chunks)
    assert torch.allclose(single[0], latents[0], atol=1e-5)
    assert gen.free_rows == [0, 1]  # every stream was closed


def test_rollout_gradient_flows_only_through_exit_steps(tmp_path):
    gen = make_gen(tmp_path)
    student = gen.transformer
    chunks = 3
    x = rollout(gen, ["a red circle"], [1], chunks, exit_steps=[0, 2, 1], grad=True)
    assert x.requires_grad
    x.pow(2).mean().backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    # with an exit at step 0 the chunk is the first x0 prediction: differs from running all steps
    student.zero_grad()
    with torch.no_grad():
        full = rollout(gen, ["a red circle"], [1], 1)
        early = rollout(gen, ["a red circle"], [1], 1, exit_steps=[0])
    assert not torch.allclose(full, early)
    # no gradient at all without grad=True
    assert not rollout(gen, ["a red circle"], [1], 1).requires_grad


def test_score_windows_tile_the_rollout():
    assert score_windows(15, 6) == [0, 6, 9]
    assert score_windows(12, 6) == [0, 6]
    assert score_windows(4, 6) == [0]
    x = torch.arange(15.0).view(1, 1, 15, 1, 1)
    w = split_windows(x, 6)
    assert w.shape == (3, 1, 6, 1, 1)
    assert w[2, 0, :, 0, 0].tolist() == list(range(9, 15))
