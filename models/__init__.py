"""The causal Wan DiT, its rolling KV cache, schedule, VAE, text encoders and the streaming generator."""

from models.transformer import CausalWanTransformer

__all__ = ["CausalWanTransformer"]
