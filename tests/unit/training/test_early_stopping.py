import pytest

from trainer.training.early_stopping import EarlyStopping


def first_stop(values, **options):
    """Feed one value per epoch (epochs counted from 0); return the epoch at which it says stop, or None."""
    stopper = EarlyStopping(**options)
    for epoch, value in enumerate(values):
        stopper.update(value, epoch)
        if stopper.should_stop:
            return epoch
    return None


@pytest.mark.parametrize("values, options, stops_at", [
    ([6, 5, 5, 5, 5, 5], {"patience": 3}, 4),
    ([6, 5, 4, 3, 2, 1], {"patience": 1}, None),
    ([1, 2, 3, 4, 5], {"patience": 2}, 2),
    ([1, 2, 3, 4, 5], {"patience": 2, "mode": "max"}, None),
    ([0.9, 0.95, 0.95, 0.94], {"patience": 2, "mode": "max"}, 3),
    ([10, 9.95, 9.92, 9.91, 9.905], {"patience": 3, "min_delta": 0.1}, 3),
    ([10, 9.95, 9.9, 9.85, 9.8], {"patience": 3, "min_delta": 0.01}, None),
    ([5, 5, 5, 5, 5, 5, 5], {"patience": None}, None),
    ([3, 2, 3, 1, 3, 3], {"patience": 2}, 5),
])
def test_stops_after_patience_epochs_without_improvement(values, options, stops_at):
    assert first_stop(values, **options) == stops_at


def test_a_non_finite_value_is_never_an_improvement():
    stopper = EarlyStopping(mode="min", patience=10)
    assert [stopper.update(v, e) for e, v in enumerate([float("nan"), 5.0, float("-inf"), 4.0])] == [
        False, True, False, True]
    assert (stopper.best, stopper.best_epoch) == (4.0, 3)


def test_remembers_best_value_and_epoch():
    stopper = EarlyStopping(mode="min", patience=10)
    for epoch, value in enumerate([4.0, 2.0, 3.0, 2.5]):
        stopper.update(value, epoch)
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (2.0, 1, 2)


def test_update_reports_a_new_best():
    stopper = EarlyStopping(mode="max")
    assert [stopper.update(v, e) for e, v in enumerate([0.5, 0.7, 0.6, 0.8])] == [True, True, False, True]


def test_message_carries_the_numbers():
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
    for epoch, value in enumerate([0.5, 0.6, 0.7]):
        stopper.update(value, epoch)
    assert stopper.message() == (
        "early stopping: val_loss did not improve by more than 0.01 for 2 epochs; best 0.5 at epoch 0")


def test_state_dict_round_trip_continues_identically():
    values = [5, 4, 4.5, 4.2, 4.1, 4.3, 4.4]
    uninterrupted = EarlyStopping(patience=3)
    resumed = EarlyStopping(patience=3)
    for epoch, value in enumerate(values):
        uninterrupted.update(value, epoch)
        if epoch < 3:
            resumed.update(value, epoch)
        if epoch == 3:
            restored = EarlyStopping(patience=3)
            restored.load_state_dict(resumed.state_dict())
            resumed = restored
            resumed.update(value, epoch)
        elif epoch > 3:
            resumed.update(value, epoch)
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert resumed.should_stop == uninterrupted.should_stop


def test_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")
