"""Where and how a training runs: precision, the tf.distribute strategy, which worker is chief, seeds.

Shared by dfd.training.run (dfd.train) and dfd.tuning.search (dfd.tune). Imports TensorFlow at the top:
the entry points quiet its start-up (dfd.cli) before they import this package.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from dfd import backend


def resolve_precision(precision: str) -> str:
    """--precision as a Keras dtype policy name: "auto" is mixed_float16 with a GPU, float32 without."""
    if precision == "auto":
        return "mixed_float16" if backend.gpu_available() else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras's global dtype policy set to `precision` inside the block and restored after it, however it ends.

    Layers take the policy when they are constructed: build and compile a model inside the block (the
    model keeps its policy after it). keras.backend.clear_session() (keras-tuner calls it before every
    trial's build) resets the policy, so a trial's build enters the block again.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def make_strategy(name: str):
    """The tf.distribute strategy for --strategy; create it before any other TensorFlow work."""
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker); see the tf.distribute multi-worker guide")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.get_strategy()   # the default strategy: one device, no overhead


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a non-chief worker (the Keras multi-worker rule)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in config.get("cluster", {})


def seed_everything(seed: int, deterministic: bool) -> None:
    """--seed for Python, NumPy and TensorFlow; with --deterministic, deterministic TensorFlow ops too."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
