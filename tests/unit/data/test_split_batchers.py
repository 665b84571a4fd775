import pytest
import torch
from omegaconf import OmegaConf

from helpers.batches import assert_same_batches, batches
from trainer.data import Batcher, DataDescription, DataSplits, batchers, limit_batches
from trainer.data.split_batchers import batches_allowed
from trainer.data.transforms import Augment, Normalize

CPU = torch.device("cpu")


def thirty_images(pipeline: str):
    """30 colour 6x6 images labelled 0..29, split 20 / 5 / 5 with augmentation, and a data config of batch 4: the
    pixels, the labels, the train split's normalisation, the splits and the config."""
    x = torch.randint(1, 256, (30, 3, 6, 6), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    y = torch.arange(30)
    normalize = Normalize.fitted(x[:20])
    described = DataDescription(task="multiclass", input_shape=(3, 6, 6), num_classes=30, pixels=normalize)
    data = DataSplits(train=(x[:20], y[:20]), val=(x[20:25], y[20:25]), test=(x[25:], y[25:]), description=described,
                      augment=Augment(crop_padding=2, horizontal_flip=True))
    cfg = OmegaConf.create({"pipeline": pipeline, "num_workers": 0, "pin_memory": False, "batch_size": 4,
                            "drop_last": False})
    return x, y, normalize, data, cfg


@pytest.mark.parametrize("pipeline", ["device", "dataloader"])
def test_eval_batchers_serve_samples_in_order_normalised_and_not_augmented(pipeline):
    x, y, normalize, data, cfg = thirty_images(pipeline)
    train, val, test = batchers(cfg, data, torch.nn.Linear(1, 1), CPU, seed=0, eval_batch_size=2)
    for batcher, (x_part, y_part) in ((val, data.val), (test, data.test)):
        served = list(batcher)
        assert [len(labels) for _, labels in served] == [2, 2, 1]
        assert torch.equal(torch.cat([labels for _, labels in served]), y_part)
        assert torch.equal(torch.cat([images for images, _ in served]), normalize(x_part))
    train_x, train_y = map(torch.cat, zip(*train))
    assert not torch.equal(train_x, normalize(x[:20])[train_y])  # the training batches are augmented


# --- limits: trainer.limit_*_batches, fast_dev_run, overfit_batches ----------------------------------------------

@pytest.mark.parametrize("limit, available, allowed", [
    (3, 20, 3),         # a count
    (1, 20, 1),         # an int 1 is one batch...
    (1.0, 20, 20),      # ...a float 1.0 all of them
    (50, 20, 20),       # a count beyond the epoch: all of them
    (0.25, 20, 5),      # a fraction
    (0.33, 10, 3),      # rounded down
    (0.01, 20, 1),      # but at least one batch
    (1e-9, 1, 1),
])
def test_batches_allowed_counts_and_fractions(limit, available, allowed):
    assert batches_allowed(limit, available) == allowed


def toy_batcher(samples: int = 20, batch_size: int = 4, seed: int = 0) -> Batcher:
    return Batcher(torch.arange(samples, dtype=torch.float32)[:, None], torch.arange(samples), batch_size, seed=seed)


@pytest.mark.parametrize("limit, expected", [(2, 2), (0.5, 2), (0.1, 1), (1.0, 5)])
def test_a_limited_batcher_serves_the_first_batches_of_each_epoch_s_order(limit, expected):
    whole, limited = toy_batcher(), toy_batcher()
    limit_batches(limited, limit)
    assert len(limited) == expected
    for _ in range(3):  # each epoch ends after the limit, and the next has an order of its own
        epoch = limited.epoch
        assert_same_batches(batches(limited), batches(whole)[:expected])
        assert (limited.epoch, limited.position) == (epoch + 1, 0)


def test_a_limited_batcher_resumed_mid_epoch_serves_the_rest_of_the_limited_epoch():
    uninterrupted, first_start = toy_batcher(), toy_batcher()
    for batcher in (uninterrupted, first_start):
        limit_batches(batcher, 3)
    batches(uninterrupted)
    expected = batches(uninterrupted)  # epoch 1, whole
    batches(first_start)
    list(zip(range(1), first_start))  # one batch into epoch 1, then the run stops
    resumed = toy_batcher()
    limit_batches(resumed, 3)
    resumed.load_state_dict(first_start.state_dict())
    assert_same_batches(batches(resumed), expected[1:])
    assert resumed.epoch == 2


@pytest.mark.parametrize("pipeline", ["device", "dataloader"])
def test_overfit_batches_train_and_validate_on_the_same_first_training_batches_every_epoch(pipeline):
    x, y, normalize, data, cfg = thirty_images(pipeline)
    train, val, test = batchers(cfg, data, torch.nn.Linear(1, 1), CPU, seed=0, eval_batch_size=2, overfit_batches=2)
    first = batches(train)
    assert [labels.tolist() for _, labels in first] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # in order
    assert torch.equal(first[0][0], normalize(x[:4]))  # unaugmented
    assert_same_batches(batches(train), first)
    assert_same_batches(batches(val), first)
    assert torch.equal(torch.cat([labels for _, labels in test]), y[25:])  # the test split as usual


def test_overfit_batches_beyond_the_train_split_s_batches_are_all_of_them_with_a_warning(caplog):
    x, y = torch.rand(10, 2), torch.arange(10)
    described = DataDescription(task="multiclass", input_shape=(2,), num_classes=10)
    data = DataSplits(train=(x, y), val=(x[:2], y[:2]), test=(x[:2], y[:2]), description=described)
    cfg = OmegaConf.create({"pipeline": "device", "num_workers": 0, "pin_memory": False, "batch_size": 4,
                            "drop_last": False})
    train, val, _ = batchers(cfg, data, torch.nn.Linear(1, 1), CPU, seed=0, eval_batch_size=2, overfit_batches=1000)
    assert len(train) == len(val) == 3
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        "trainer.overfit_batches=1000: the train split has only 3 batches of data.batch_size=4; all of them are "
        "trained and validated on"]
