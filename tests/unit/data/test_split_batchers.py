import pytest
import torch
from omegaconf import OmegaConf

from trainer.data import DataDescription, DataSplits
from trainer.data import batchers
from trainer.data.transforms import Augment, Normalize

CPU = torch.device("cpu")


@pytest.mark.parametrize("pipeline", ["device", "dataloader"])
def test_eval_batchers_serve_samples_in_order_normalised_and_not_augmented(pipeline):
    x = torch.randint(1, 256, (30, 3, 6, 6), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    y = torch.arange(30)
    normalize = Normalize.fitted(x[:20])
    described = DataDescription(task="multiclass", input_shape=(3, 6, 6), num_classes=30, pixels=normalize)
    data = DataSplits(train=(x[:20], y[:20]), val=(x[20:25], y[20:25]), test=(x[25:], y[25:]), description=described,
                      augment=Augment(crop_padding=2, horizontal_flip=True))
    cfg = OmegaConf.create({"pipeline": pipeline, "num_workers": 0, "pin_memory": False, "batch_size": 4,
                            "drop_last": False})
    train, val, test = batchers(cfg, data, torch.nn.Linear(1, 1), CPU, seed=0, eval_batch_size=2)
    for batcher, (x_part, y_part) in ((val, data.val), (test, data.test)):
        served = list(batcher)
        assert [len(labels) for _, labels in served] == [2, 2, 1]
        assert torch.equal(torch.cat([labels for _, labels in served]), y_part)
        assert torch.equal(torch.cat([images for images, _ in served]), normalize(x_part))
    train_x, train_y = map(torch.cat, zip(*train))
    assert not torch.equal(train_x, normalize(x[:20])[train_y])  # the training batches are augmented
