"""File formats and sources: safetensors / sharded HF checkpoints, orbax, the hub, tokenizers, prompt sets."""
