"""On an accelerator (GPU/TPU; skipped on CPU): the parity fixtures' spectra on the device equal the
float64 goldens within the float32 tolerance, and the CPU result within float32 rounding."""
import jax
import numpy as np
import pytest

import loopjax
from conftest import FIXTURES, expected
from test_parity import _benettin_args

pytestmark = pytest.mark.device


@pytest.mark.parametrize("case", ["ouro-tiny", "huginn-tiny"])
def test_spectrum_on_the_device_matches_goldens_and_cpu(case):
    tokens, kw = _benettin_args(case)
    model = loopjax.load(FIXTURES / case)
    dev = loopjax.spectrum(model, tokens, **kw)
    assert dev.exponents.devices() == {jax.devices()[0]}
    np.testing.assert_allclose(np.asarray(dev.exponents), expected(case)["lyap_exponents"], atol=1e-4)
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = loopjax.spectrum(jax.device_put(model, jax.devices("cpu")[0]), tokens, **kw)
    np.testing.assert_allclose(np.asarray(dev.exponents), np.asarray(cpu.exponents), atol=1e-4)
