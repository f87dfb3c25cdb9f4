"""Converter entry points a user runs from a checkout (the library never imports this folder):

    python -m convert SRC OUT [--revision REV] [--dtype D]      HF checkpoint (dir or hub id) -> orbax dir
    python -m convert --to-hf SRC OUT [--shards N]              any loopjax source -> HF safetensors dir

Installed users have the same as `loopjax convert`. The name tables live with the models
(loopjax/models/<name>/params.py); the conversion itself is `loopjax.convert` / `loopjax.save_hf`.
"""
