"""The two patches of Keras private internals that multi-worker training needs, and their version check.

    from dfd.training import keras_patches
    keras_patches.build_from_local_batch(model, strategy)   # after compile, before fit

Keras 3.15's `fit` fails under tf.distribute.MultiWorkerMirroredStrategy in two places, both in
private code (`Trainer._maybe_symbolic_build`, `keras.src.backend.tensorflow.trainer.reduce_per_replica`).
The patches replace exactly those two functions; private code changes between Keras releases
without notice, so they are applied only on the Keras versions they were tested on
(TESTED_KERAS, checked by tests/test_multi_worker.py with two real worker processes). Any other
version is refused with an error naming the tested ones, unless ALLOW_UNTESTED_ENV=1 is set.
"""

from __future__ import annotations

import os

# Keras release lines (major.minor) the patches were tested on, two CPU workers on 127.0.0.1.
TESTED_KERAS = ("3.15",)
# Set to 1 to apply the patches on an untested Keras anyway (then check one epoch by hand first).
ALLOW_UNTESTED_ENV = "DFD_ALLOW_UNTESTED_KERAS"


def check_keras_version(version: str | None = None) -> None:
    """Raises RuntimeError unless `version` (default: the installed Keras) is a tested release line."""
    if version is None:
        import keras
        version = keras.__version__
    line = ".".join(version.split(".")[:2])
    if line in TESTED_KERAS or os.environ.get(ALLOW_UNTESTED_ENV, "") == "1":
        return
    tested = ", ".join(f"{v}.x" for v in TESTED_KERAS)
    raise RuntimeError(
        f"multi-replica training patches two private Keras functions (_maybe_symbolic_build, "
        f"reduce_per_replica) and was tested on Keras {tested} only; this is Keras {version}. Install a "
        f"tested Keras (pip install 'keras~={TESTED_KERAS[-1]}.0'), or set {ALLOW_UNTESTED_ENV}=1 to try "
        "the patches anyway (then check that one epoch trains and the logged loss is finite), or train "
        "with one replica (--strategy=one_device)")


def build_from_local_batch(model, strategy) -> None:
    """Makes `model.fit` work under MultiWorkerMirroredStrategy (and several replicas) on Keras 3.15.

    1. Before the first step Keras builds the model from one batch it reduces with
       strategy.reduce("MEAN", (x, y)); the collective strategy refuses a nested (x, y) structure
       ("Attempt to convert a value (PerReplica ...) to a Tensor"). Only the batch's shapes and dtypes
       matter for that build, so this model builds from this worker's local batch instead.
    2. Keras also averages each step's scalar logs with strategy.reduce("MEAN", v, axis=0), which
       fails on scalars ("Invalid reduction dimension 0 for input with 0 dimensions"). Averaging
       across workers without an axis is what is meant. The replacement acts only under the
       collective multi-worker strategy and defers to Keras otherwise; it is installed once per process.
    """
    check_keras_version()
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = model._maybe_symbolic_build

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues) else value, batch)
                break
        return original(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build

    original_reduce = tf_trainer.reduce_per_replica
    if getattr(original_reduce, "dfd_patched", False):
        return

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy_):
            return tree.map_structure(lambda value: strategy_.reduce("MEAN", value, axis=None), values)
        return original_reduce(values, strategy_, reduction)

    reduce_per_replica.dfd_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
