"""`python -m dfd.bench models`: one interleaved table over every backend, its ratio lines, and the child process
that holds another backend and answers one round at a time. Structure only, no timed assertions."""

import sys

import pytest

from dfd import bench
from dfd.bench import models as bench_models
from dfd.bench._rounds import Sample, Side


def _side(key: str, seconds_per_step: list[float], cpu_per_step: list[float]) -> Side:
    samples = [Sample(2, 2 * wall, 2 * cpu) for wall, cpu in zip(seconds_per_step, cpu_per_step, strict=True)]
    return Side(bench_models._label(key), lambda: None, samples)


def test_bench_models_gathers_backends_into_one_table_with_the_ratios(capsys):
    """`bench models --backend=tensorflow,torch --inference`: one table, then the three ratio lines."""
    values = bench.parse(bench_models.Settings, ["bench", "--backend=tensorflow,torch", "--inference"])
    five = [1.0] * 5
    sides = {"tensorflow/train/jit-off": _side("tensorflow/train/jit-off", [0.3] * 5, [0.6] * 5),
             "tensorflow/train/jit-on": _side("tensorflow/train/jit-on", five, [1.2] * 5),
             "tensorflow/inference/keras": _side("tensorflow/inference/keras", [0.1] * 5, [0.2] * 5),
             "tensorflow/inference/onnxruntime": _side("tensorflow/inference/onnxruntime", [0.125] * 5, [0.1] * 5),
             "torch/train/jit-off": _side("torch/train/jit-off", [0.6] * 5, [2.4] * 5)}
    bench_models._print_sides(values, sides, "CPU")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("onnxruntime / keras tensorflow inference clips/s (cnn_lstm, batch 32) by CPU time "
                                "= 2.00 (rounds 2.00-2.00); by wall time = 0.80")
    assert lines[-2].startswith("jit_compile speedup (cnn_lstm, batch 32) by CPU time = 0.50")
    assert "by wall time = 0.30" in lines[-2]
    assert lines[-1].startswith("torch / tensorflow train-step time (cnn_lstm, batch 32, jit off) by CPU time = 4.00")
    assert lines[-1].endswith("by wall time = 2.00 (rounds 2.00-2.00)")
    rows = [line.split(":")[0] for line in lines if line.startswith(("tensorflow:", "torch:"))]
    assert rows == ["tensorflow"] * 4 + ["torch"]
    with pytest.raises(ValueError, match="--backend takes tensorflow, torch"):
        bench_models.main(["bench", "--backend=jax"])
    with pytest.raises(ValueError, match="--rounds=2: at least 5"):
        bench_models.main(["bench", "--rounds=2"])


def test_a_backend_child_answers_one_round_per_request():
    # A tensorflow child (the protocol is the same for torch): ready line with its keys, then one Sample of
    # --steps steps per key asked for, until its stdin closes.
    argv = ["dfd.bench models", "--model=cnn_lstm", "--input_shape=2,32,32,3", "--batch_size=2", "--steps=2",
            "--precision=float32"]
    child = bench_models._Child("tensorflow", argv)
    try:
        assert child.keys == ["tensorflow/train/jit-off", "tensorflow/train/jit-on"]
        samples = [child.round(key) for key in ("tensorflow/train/jit-off", "tensorflow/train/jit-off")]
        assert [sample.items for sample in samples] == [2, 2]
        assert all(sample.wall_s > 0 and sample.cpu_s > 0 for sample in samples)
    finally:
        child.close()
    assert child.process.returncode == 0
    assert sys.executable in child.process.args and "--child" in child.process.args
