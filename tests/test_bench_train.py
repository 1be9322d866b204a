"""`python -m dfd.bench train`: each feed's round is one fit call whose warm-up epoch is left out of its sample.
Structure only, no timed assertions."""

from dfd.bench import train as bench_train


class _FakeModel:
    """Calls the callbacks as fit does, epoch by epoch, and records what it was asked."""

    def __init__(self):
        self.calls = []

    def fit(self, epochs, verbose, callbacks, **fit_args):
        self.calls.append((epochs, sorted(fit_args)))
        for epoch in range(epochs):
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
                callback.on_epoch_end(epoch)


def test_a_feed_round_is_one_fit_of_a_warm_up_and_the_timed_epochs():
    model = _FakeModel()
    side = bench_train._fit_side("feed", model, epochs=3, clips_per_epoch=64, x="dataset", steps_per_epoch=2)
    first, second = side.run(), side.run()
    assert model.calls == [(4, ["steps_per_epoch", "x"])] * 2   # one warm-up epoch + 3 timed, per round
    assert first.items == second.items == 3 * 64   # the warm-up epoch is not in the sample
    assert first.wall_s > 0 and first.cpu_s >= 0


def test_the_report_ends_with_p2_by_cpu_time_then_wall_time(capsys):
    from dfd import bench
    from dfd.bench._rounds import Sample, Side

    values = bench.parse(bench_train.Settings, ["bench", "--epochs=2"])
    feeds = [Side("records", lambda: None, [Sample(64, 2.0, 4.0)] * 5),
             Side("memory", lambda: None, [Sample(64, 1.0, 3.0)] * 5),
             Side("memory + flip", lambda: None, [Sample(64, 1.0, 6.0)] * 5)]
    bench_train._report(values, 1000, 64, "float32", feeds, ["flip"], [("flip", (12.0, 20.0))], None)
    lines = capsys.readouterr().out.splitlines()
    assert "5 interleaved rounds of one warm-up and 2 timed epochs per feed" in lines[0]
    assert lines[-3].startswith("on-device flip: in memory + it / in memory by CPU time = 0.50")
    assert lines[-2] == "augmentation layer alone, per batch: flip 12.0 ms CPU (20.0 ms wall)"
    assert lines[-1] == ("P2 fit on TFRecord pipeline / fit on in-memory batches by CPU time = 0.75 (rounds 0.75-0.75) "
                         "(target >= 0.95); by wall time = 0.50 (rounds 0.50-0.50)")
