"""Does the Wan2.1-1.3B student fit a 24 GB card? Peak memory per component under a memory cap.

Run by scripts/gpu-check.sh. On a CUDA device it caps this process at `--cap-gb` with
torch.cuda.set_per_process_memory_fraction, then adds, one at a time and measuring allocated
bytes after each: the umT5-XXL text encoder (random weights of the released size, bf16), one
prompt encoded (512 tokens), the streaming generator (transformer, VAE, KV cache; random weights
of the preset), and `--chunks` streamed chunks (peak). If anything runs out of memory it retries
with the text encoder offloaded to the CPU after encoding. `--dry` runs the same steps with the
tiny preset and a tiny encoder on the CPU (byte counts from parameter sizes; checks the script).
Writes one JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

UMT5_XXL = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
                feed_forward_proj="gated-gelu", is_encoder_decoder=False)
UMT5_TINY = dict(d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32, vocab_size=1000,
                 feed_forward_proj="gated-gelu", is_encoder_decoder=False)


def _bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _allocated(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def _peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def attempt(args, device: torch.device, offload_text: bool) -> dict:
    from transformers import UMT5Config, UMT5EncoderModel

    from models import load_generator

    gib = 2**30
    report: dict = dict(offload_text_encoder=offload_text, components_bytes={}, allocated_after={})
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    base = _allocated(device)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        with torch.device(device):
            encoder = UMT5EncoderModel(UMT5Config(**(UMT5_TINY if args.dry else UMT5_XXL))).eval()
    finally:
        torch.set_default_dtype(default)
    report["components_bytes"]["text_encoder"] = _bytes(encoder)
    report["allocated_after"]["text_encoder"] = _allocated(device) - base
    tokens = torch.randint(0, encoder.config.vocab_size, (1, args.text_tokens), device=device)
    with torch.no_grad():
        states = encoder(input_ids=tokens).last_hidden_state  # [1, L, d_model]
    report["text_states_shape"] = list(states.shape)
    report["peak_after_encode"] = _peak(device) - base
    if offload_text:
        encoder.to("cpu")
    gen = load_generator(args.model, device=device, max_batch=args.batch)
    report["components_bytes"].update(transformer=_bytes(gen.transformer), vae=_bytes(gen.vae),
                                      kv_cache=gen.cache.nbytes())
    report["allocated_after"]["generator"] = _allocated(device) - base
    streams = [gen.open_stream(f"memory check {i}", seed=i) for i in range(args.batch)]
    t0 = time.perf_counter()
    for _ in range(args.chunks):
        gen.step(streams)
    report["stream_s"] = time.perf_counter() - t0
    for s in streams:
        gen.close_stream(s)
    report["peak_bytes"] = _peak(device) - base
    report["peak_gib"] = report["peak_bytes"] / gib
    del gen, encoder, states
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wan2.1-t2v-1.3b")
    p.add_argument("--cap-gb", type=float, default=24.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--chunks", type=int, default=3)
    p.add_argument("--text-tokens", type=int, default=512)
    p.add_argument("--dry", action="store_true", help="tiny preset and encoder on the CPU (checks the script)")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if args.dry:
        args.model, args.text_tokens, args.chunks = "tiny", 8, 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    result: dict = dict(model=args.model, cap_gb=args.cap_gb, batch=args.batch, device=str(device))
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        result.update(device=torch.cuda.get_device_name(device), total_gib=total / 2**30,
                      fraction=min(1.0, args.cap_gb * 2**30 / total))
        torch.cuda.set_per_process_memory_fraction(result["fraction"], device)
    result["attempts"] = []
    for offload in (False, True):
        try:
            result["attempts"].append(attempt(args, device, offload))
            result["fits"] = True
            break
        except torch.cuda.OutOfMemoryError as exc:
            result["attempts"].append(dict(offload_text_encoder=offload, error=str(exc).splitlines()[0][:300]))
            result["fits"] = False
            torch.cuda.empty_cache()
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    last = result["attempts"][-1]
    print(f"memory cap {args.cap_gb} GB on {result['device']}: fits={result['fits']} "
          f"offload_text_encoder={last['offload_text_encoder']} peak={last.get('peak_gib', float('nan')):.2f} GiB "
          f"components={ {k: round(v / 2**30, 2) for k, v in last.get('components_bytes', {}).items()} } GiB")
    return 0 if result["fits"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
