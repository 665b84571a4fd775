"""The models a config can pick. Each takes `input_shape` and `num_outputs` from the data, so sizes are never
typed twice; every other argument is a config key (`model.hidden_sizes=[256,128]`). `trainer.models.MLP` and the
others are the `_target_` paths of configs/model/."""

from trainer.models.mlp import MLP, DropoutNet, HiddenLayer
from trainer.models.resnet import ResidualBlock, ResNet
from trainer.models.transformer import Transformer, TransformerBlock

# Each class says it is trainer.models.X, the path configs name (Hydra's errors name the class by its __module__).
for _public in (MLP, DropoutNet, HiddenLayer, ResNet, ResidualBlock, Transformer, TransformerBlock):
    _public.__module__ = __name__

__all__ = ["DropoutNet", "HiddenLayer", "MLP", "ResNet", "ResidualBlock", "Transformer", "TransformerBlock"]
