"""Test-wide settings: quiet TensorFlow, CPU only, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CI has no GPU; hiding devices also keeps a developer's GPU out of unit tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
