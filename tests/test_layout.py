"""The shape of the package: the public API imports no plotting or CLI code, the data flows one way, and
every architecture is one registered folder implementing the protocol."""
import subprocess
import sys

import jax
import numpy as np
import pytest

import loopjax
from loopjax.models import ARCHITECTURES, Architecture, config_from_hf
from loopjax.models.presets import PRESETS, preset


def test_import_loopjax_loads_no_matplotlib_or_cli():
    code = ("import sys, loopjax; bad = [m for m in sys.modules if m.startswith(('matplotlib', 'loopjax.cli', "
            "'loopjax.cli.plots', 'loopjax.cli.report', 'convert'))]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_library_never_imports_the_convert_folder():
    import pathlib
    import re

    root = pathlib.Path(loopjax.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "loopjax_convert" not in text and not re.search(r"^\s*(import convert|from convert)", text, re.M), f


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_every_architecture_implements_the_protocol(arch):
    assert isinstance(arch, Architecture) and arch.model_types and arch.table
    # (Parcae's config.json has no model_type: it is recognised by its _class_name)
    name = next(n for n, c in PRESETS.items() if c.get("model_type") in arch.model_types
                or c.get("_class_name") in arch.class_names)
    config = config_from_hf(preset(name))
    model = loopjax.random_model(config, jax.random.key(0))
    assert model.arch is arch
    pairs = arch.sublayers(config)
    assert all(isinstance(n, str) and callable(fn) for n, fn in pairs)
    assert model.sublayer_names == tuple(n for n, _ in pairs)
    logits = loopjax.logits(model, np.array([[1, 2, 3]]), key=jax.random.key(0))
    assert logits.shape == (1, 3, config.vocab_size)


def test_early_exit_is_ouros_alone():
    huginn = loopjax.load("builtin:huginn-tiny-random")
    with pytest.raises(ValueError, match="Ouro"):
        loopjax.early_exit(huginn, np.array([[1, 2]]))
    out = loopjax.early_exit(loopjax.load("builtin:ouro-tiny-random"), np.array([[1, 2]]))
    np.testing.assert_allclose(np.asarray(out["exit_pdf"]).sum(-1), 1.0, rtol=1e-5)


def test_config_type_errors_are_named():
    cfg = preset("ouro-tiny")
    cfg["hidden_size"] = "64"
    with pytest.raises(ValueError, match=r"hidden_size='64' \(expected a positive integer\)"):
        config_from_hf(cfg)
    with pytest.raises(ValueError, match="JSON object"):
        config_from_hf([1, 2])
