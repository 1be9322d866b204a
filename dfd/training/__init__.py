"""The training library behind `python -m dfd.train` and `python -m dfd.tune` (both CLIs only parse flags).

    setup.py          TrainingSetup: the data's metadata opened once and checked; datasets, steps, class weights
    runtime.py        precision (precision_policy), the tf.distribute strategy, the chief, seeds and determinism
    model.py          build_and_compile: the model of a TrainConfig, as every run and every tuner trial gets it
    callbacks.py      RaiseOnNaN, EpochLog (history.json), BestCheckpoint (best.keras)
    run.py            train(config): one run into its run dir, resumable
    keras_patches.py  the two patches of private Keras code multi-worker fit needs

The modules import TensorFlow at the top: the entry points quiet its start-up (dfd.cli) first.
"""
