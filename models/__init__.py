"""The causal Wan DiT, its rolling KV cache, schedule, VAE, text encoders and the streaming generator."""

from models.generator import CapacityError, Chunk, ModelInfo, StreamingGenerator, StreamState, load_generator
from models.transformer import CausalWanTransformer

__all__ = [
    "CausalWanTransformer", "CapacityError", "Chunk", "ModelInfo", "StreamingGenerator", "StreamState", "load_generator",
]
