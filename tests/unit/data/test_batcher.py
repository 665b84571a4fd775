from itertools import islice

import pytest
import torch
import torch.nn.functional as F

from helpers.batches import assert_same_batches, batches
from trainer.data import Batcher, LoaderBatcher
from trainer.data.transforms import Augment, Normalize


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


# --- LoaderBatcher, augmentation, normalisation --------------------------------------------------------------------

CPU = torch.device("cpu")


def image_batcher(cls=Batcher, n=20, batch_size=6, augment=Augment(crop_padding=2, horizontal_flip=True), **options):
    """uint8 images (1..255, no zeros, so padding shows) whose label is their index, normalised per batch."""
    x = torch.randint(1, 256, (n, 3, 5, 5), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    if cls is LoaderBatcher:
        options.setdefault("device", CPU)
    return cls(x, torch.arange(n), batch_size, normalize=Normalize.fitted(x), augment=augment, **options)


LOADERS = [pytest.param({"num_workers": 0}, id="workers-0"), pytest.param({"num_workers": 2}, id="workers-2")]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("augment", [None, Augment(crop_padding=2, horizontal_flip=True)], ids=["plain", "augmented"])
def test_loader_batcher_yields_the_batches_of_batcher(loader, drop_last, augment):
    reference = image_batcher(seed=3, drop_last=drop_last, augment=augment)
    loaded = image_batcher(LoaderBatcher, seed=3, drop_last=drop_last, augment=augment, **loader)
    assert len(loaded) == len(reference) == (3 if drop_last else 4)
    for _ in range(2):
        assert_same_batches(batches(loaded), batches(reference))
    assert loaded.state_dict() == reference.state_dict() == {"seed": 3, "epoch": 2, "position": 0}


@pytest.mark.parametrize("loader", LOADERS)
def test_loader_batcher_resumes_mid_epoch_like_batcher(loader):
    reference = image_batcher(seed=5)
    expected = [batches(reference), batches(reference)]
    interrupted = image_batcher(LoaderBatcher, seed=5, **loader)
    first = batches(interrupted, 2)
    assert interrupted.state_dict() == {"seed": 5, "epoch": 0, "position": 2}
    resumed = image_batcher(LoaderBatcher, seed=0, **loader)
    resumed.load_state_dict(interrupted.state_dict())
    assert_same_batches(first + batches(resumed), expected[0])
    assert_same_batches(batches(resumed), expected[1])


def test_augmented_batches_repeat_for_the_same_seed_and_differ_for_another():
    assert_same_batches(batches(image_batcher(seed=1)), batches(image_batcher(seed=1)))
    other = batches(image_batcher(seed=2))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(batches(image_batcher(seed=1)), other))


@pytest.mark.parametrize("served", [1, 2])
def test_augmented_batcher_resumed_mid_epoch_yields_the_same_remaining_batches(served):
    reference = image_batcher(seed=7)
    expected = [batches(reference), batches(reference)]
    interrupted = image_batcher(seed=7)
    first = batches(interrupted, served)
    resumed = image_batcher(seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    rest = batches(resumed)
    assert_same_batches(first + rest, expected[0])
    assert_same_batches(batches(resumed), expected[1])


def test_training_batches_are_normalised_crops_or_mirrored_crops_of_their_samples():
    batcher = image_batcher(seed=0)
    normalize = batcher.normalize
    changed = 0
    for x, y in batcher:
        assert x.dtype == torch.float32
        pixels = x * normalize.std[:, None, None] + normalize.mean[:, None, None]
        assert torch.allclose(pixels, pixels.round(), atol=1e-3)
        pixels = pixels.round().to(torch.uint8)
        for image, index in zip(pixels, y):
            original = batcher.x[index]
            windows = [F.pad(candidate, (2, 2, 2, 2)).unfold(1, 5, 1).unfold(2, 5, 1).permute(1, 2, 0, 3, 4)
                       for candidate in (original, original.flip(-1))]
            assert any((window == image).flatten(2).all(-1).any() for window in windows)
            changed += not torch.equal(image, original)
    assert changed > 10


# --- the shares of each batch -----------------------------------------------------------------------------------

def shares(n: int, batch_size: int, world_size: int, **options) -> list[list[list[int]]]:
    """The labels (= sample indices) each process gets, batch by batch, in epoch 0."""
    x, y = torch.zeros(n, 1), torch.arange(n)
    return [[y.tolist() for _, y in Batcher(x, y, batch_size, seed=3, rank=rank, world_size=world_size, **options)]
            for rank in range(world_size)]


@pytest.mark.parametrize("n, batch_size, world_size", [(20, 4, 2), (21, 4, 2), (23, 6, 3), (10, 10, 4)])
def test_the_processes_shares_of_a_batch_are_the_batch_one_process_gets(n, batch_size, world_size):
    (alone,) = shares(n, batch_size, 1)
    together = shares(n, batch_size, world_size)
    assert len({len(batches) for batches in together}) == 1  # every process takes every step
    for step, batch in enumerate(together[0]):
        joined = sorted(sum((batches[step] for batches in together), []))
        assert joined == sorted(alone[step])


def test_a_last_batch_too_small_to_share_is_left_out_of_training_but_not_of_evaluation():
    assert [len(batches) for batches in shares(9, 4, 2)] == [2, 2]  # 4+4+1: the last batch has 1 sample for 2
    assert [len(batches) for batches in shares(9, 8, 2)] == [1, 1]
    evaluation = shares(9, 8, 2, shuffle=False)
    assert sorted(sum(evaluation[0] + evaluation[1], [])) == list(range(9))


def test_samples_in_counts_every_process_s_samples_of_those_batches():
    batcher = Batcher(torch.zeros(10, 1), torch.arange(10), 4, rank=1, world_size=2)
    assert [batcher.samples_in(0, 1), batcher.samples_in(0, 3), batcher.samples_in(2, 3)] == [4, 10, 2]
