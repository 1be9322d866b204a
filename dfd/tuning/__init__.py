"""Hyperparameter search with keras-tuner over simplified variants of the dfd models (`python -m dfd.tune`).

    search_space.py  define_search_space(hp, model, base_hparams, input_shape): the space, in one place
    hypermodel.py    DfdHyperModel: builds trials with dfd.training.model.build_and_compile, returns best-epoch metrics
    tuners.py        Hyperband / Bayesian / Random tuners recording gaps, params, --max_gap, progress
    board.py         TensorBoard HParams dashboard under <run_dir>/tb/
    results.py       ranked table, <run_dir>/tuner/trials.csv, best.flags
    search.py        run_search(config, options): the whole search, importable
    flags.py         the tune flags, on top of dfd.train_flags

The data pipeline (dfd.data.pipeline.make_train_dataset) and the model builders (dfd.models via
dfd.training.model.build_and_compile) are the trainer's: a trial trains what dfd.train would train.
"""
