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
