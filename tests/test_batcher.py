from itertools import islice

import pytest
import torch

from trainer.data import Batcher


def make_batcher(n=10, batch_size=3, **options):
    """Samples whose label is their index, so a batch's labels say which samples it holds."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10
    y = torch.arange(n)
    return Batcher(x, y, batch_size, **options)


def reference_batches(batcher, epoch):
    """The sample indices of each batch: plain slices of that epoch's permutation."""
    order = batcher.order(epoch)
    n, size = len(order), batcher.batch_size
    stop = n - n % size if batcher.drop_last else n
    return [order[i:i + size] for i in range(0, stop, size)]


def labels(batches):
    return [y.tolist() for _, y in batches]


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (10, 10, False),
                                                      (10, 16, False)])
def test_yields_the_reference_slices_of_the_epoch_permutation(n, batch_size, drop_last):
    batcher = make_batcher(n, batch_size, drop_last=drop_last, seed=4)
    for epoch in range(3):
        expected = reference_batches(batcher, epoch)
        batches = list(batcher)
        assert len(batches) == len(expected) == len(batcher)
        for (x, y), index in zip(batches, expected):
            assert torch.equal(y, batcher.y[index])
            assert torch.equal(x, batcher.x[index])


def test_every_sample_exactly_once_per_epoch():
    batcher = make_batcher(n=50, batch_size=7, seed=1)
    for _ in range(3):
        seen = torch.cat([y for _, y in batcher])
        assert sorted(seen.tolist()) == list(range(50))


def test_order_is_a_shuffled_permutation():
    order = make_batcher(n=100, seed=0).order(0)
    assert sorted(order.tolist()) == list(range(100))
    assert order.tolist() != list(range(100))


def test_last_batch_is_short_without_drop_last():
    sizes = [len(y) for _, y in make_batcher(n=10, batch_size=4)]
    assert sizes == [4, 4, 2]


def test_drop_last_drops_the_short_batch():
    batches = list(make_batcher(n=10, batch_size=4, drop_last=True))
    assert [len(y) for _, y in batches] == [4, 4]
    assert len(set(torch.cat([y for _, y in batches]).tolist())) == 8


@pytest.mark.parametrize("n, batch_size, drop_last, expected", [
    (10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3), (2, 5, False, 1), (2, 5, True, 0),
])
def test_len_is_batches_per_epoch(n, batch_size, drop_last, expected):
    assert len(make_batcher(n, batch_size, drop_last=drop_last)) == expected


def test_different_epochs_give_different_orders():
    batcher = make_batcher(n=100, seed=0)
    first, second = labels(batcher), labels(batcher)
    assert first != second
    assert not torch.equal(batcher.order(0), batcher.order(1))


def test_same_seed_and_epoch_give_the_same_order():
    one, other = make_batcher(n=100, seed=7), make_batcher(n=100, seed=7)
    assert torch.equal(one.order(5), other.order(5))
    assert [labels(one) for _ in range(3)] == [labels(other) for _ in range(3)]


def test_different_seeds_give_different_orders():
    assert not torch.equal(make_batcher(n=100, seed=1).order(0), make_batcher(n=100, seed=2).order(0))


def test_without_shuffle_keeps_the_sample_order():
    batcher = make_batcher(n=10, batch_size=4, shuffle=False)
    for _ in range(2):
        assert labels(batcher) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_counts_epochs_and_position():
    batcher = make_batcher(n=10, batch_size=3)
    assert batcher.state_dict() == {"seed": 0, "epoch": 0, "position": 0}
    list(islice(iter(batcher), 2))
    assert batcher.state_dict() == {"seed": 0, "epoch": 0, "position": 2}
    list(batcher)
    assert batcher.state_dict() == {"seed": 0, "epoch": 1, "position": 0}


@pytest.mark.parametrize("served", [0, 1, 3])
def test_state_dict_round_trip_mid_epoch_resumes_identically(served):
    uninterrupted = make_batcher(n=11, batch_size=3, seed=5)
    expected_epochs = [labels(uninterrupted) for _ in range(3)]

    interrupted = make_batcher(n=11, batch_size=3, seed=5)
    first_part = labels(islice(iter(interrupted), served))
    state = interrupted.state_dict()
    assert all(isinstance(v, int) for v in state.values())

    resumed = make_batcher(n=11, batch_size=3, seed=999)  # the seed comes back with the state
    resumed.load_state_dict(state)
    rest_of_epoch = labels(resumed)
    assert first_part + rest_of_epoch == expected_epochs[0]
    assert rest_of_epoch == expected_epochs[0][served:]
    assert labels(resumed) == expected_epochs[1]
    assert labels(resumed) == expected_epochs[2]


def test_rejects_features_and_labels_of_different_lengths():
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        Batcher(torch.zeros(4, 2), torch.zeros(3), batch_size=2)
