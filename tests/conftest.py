"""Test-wide settings: quiet TensorFlow, CPU only, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CI has no GPU; hiding devices also keeps a developer's GPU out of unit tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")


import keras  # noqa: E402  (after the environment above)
import pytest  # noqa: E402


@pytest.fixture
def mixed_precision():
    """The mixed_float16 policy for one test, float32 again afterwards (whatever the test does)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
