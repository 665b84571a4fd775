import math

import pytest
import torch
from torch import nn

from trainer.config import ConfigError
from trainer.models import MLP, DropoutNet, HiddenLayer, ResNet, Transformer, TransformerBlock
from trainer.models.mlp import ACTIVATIONS, NORMS

IMAGE, VECTOR = (1, 8, 8), (30,)
MODELS = {
    "mlp": lambda shape, outputs: MLP(shape, outputs, hidden_sizes=(32, 16)),
    "dropout_net": lambda shape, outputs: DropoutNet(shape, outputs, hidden_sizes=(32, 16)),
    "transformer": lambda shape, outputs: Transformer(shape, outputs, d_model=16, num_heads=2, num_layers=1,
                                                      dim_feedforward=32),
}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("input_shape", [IMAGE, VECTOR], ids=["image", "vector"])
@pytest.mark.parametrize("num_outputs", [1, 10])
def test_output_has_one_row_per_sample_and_num_outputs_columns(name, input_shape, num_outputs):
    model = MODELS[name](input_shape, num_outputs)
    assert model(torch.randn(5, *input_shape)).shape == (5, num_outputs)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("init", ["default", "he", "xavier"])
@pytest.mark.parametrize("residual", [False, True])
def test_mlp_builds_and_runs_with_every_option(activation, norm, init, residual):
    model = MLP(VECTOR, 3, hidden_sizes=(16, 16), activation=activation, norm=norm, init=init, residual=residual)
    out = model(torch.randn(4, *VECTOR))
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    layer = model.hidden[1]
    assert isinstance(layer.activation, ACTIVATIONS[activation])
    assert isinstance(layer.norm, NORMS[norm] or nn.Identity)
    assert layer.residual is residual  # 16 -> 16: widths match
    assert model.hidden[0].residual is False  # 30 -> 16: they do not


def zeroed(layer: HiddenLayer) -> HiddenLayer:
    nn.init.zeros_(layer.linear.weight)
    nn.init.zeros_(layer.linear.bias)
    return layer


def test_residual_layer_adds_its_input():
    x = torch.rand(4, 8)
    layer = HiddenLayer(8, 8, "relu", "none", 0.0, residual=True)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.eye(8) * 2)
        layer.linear.bias.zero_()
        assert torch.allclose(layer(x), x + torch.relu(2 * x))  # x + relu(2x) = 3x for x >= 0
        assert torch.allclose(zeroed(layer)(x), x)


def test_plain_layer_does_not_add_its_input():
    x = torch.rand(4, 8)
    with torch.no_grad():
        assert torch.equal(zeroed(HiddenLayer(8, 8, "relu", "none", 0.0, residual=False))(x), torch.zeros(4, 8))


def test_residual_is_skipped_where_the_widths_differ():
    x = torch.rand(4, 8)
    layer = HiddenLayer(8, 5, "relu", "none", 0.0, residual=True)
    assert layer.residual is False
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.relu(layer.linear(x)))


def test_residual_mlp_with_zeroed_hidden_layers_passes_its_input_to_the_head():
    model = MLP(VECTOR, 2, hidden_sizes=(30, 30), residual=True)
    x = torch.rand(4, *VECTOR)
    with torch.no_grad():
        for layer in model.hidden:
            zeroed(layer)
        assert torch.allclose(model.hidden(x), x)
        assert torch.allclose(model(x), model.head(x))


def test_he_init_draws_weights_with_std_sqrt_2_over_fan_in_and_zero_biases():
    model = MLP(IMAGE, 10, hidden_sizes=(512, 256), init="he")
    for linear in linears(model)[:2]:
        fan_in = linear.in_features
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
        assert linear.weight.mean().abs().item() < 0.1 * math.sqrt(2 / fan_in)
    for linear in linears(model):
        assert torch.all(linear.bias == 0)


@pytest.mark.parametrize("activation, gain", [("tanh", 5 / 3), ("sigmoid", 1.0), ("relu", math.sqrt(2))])
def test_xavier_init_draws_weights_with_glorot_std_for_the_activation(activation, gain):
    model = MLP(IMAGE, 10, hidden_sizes=(512, 256), activation=activation, init="xavier")
    for linear in linears(model)[:2]:
        expected = gain * math.sqrt(2 / (linear.in_features + linear.out_features))
        assert linear.weight.std().item() == pytest.approx(expected, rel=0.05)
        assert torch.all(linear.bias == 0)


def test_default_init_keeps_torch_initialisation():
    model = MLP(IMAGE, 10, hidden_sizes=(512, 256), init="default")
    for linear in linears(model):
        bound = 1 / math.sqrt(linear.in_features)
        assert linear.weight.abs().max().item() <= bound
        assert linear.bias.abs().max().item() > 0


@pytest.mark.parametrize("name", ["dropout_net", "transformer"])
def test_dropout_is_active_in_train_mode_and_off_in_eval_mode(name):
    model = MODELS[name](VECTOR, 4)
    x = torch.randn(8, *VECTOR)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_mlp_without_dropout_is_deterministic_in_train_mode():
    model = MLP(VECTOR, 4, hidden_sizes=(32, 16)).train()
    x = torch.randn(8, *VECTOR)
    assert torch.equal(model(x), model(x))


def test_dropout_net_defaults_to_dropout_after_each_hidden_activation():
    model = DropoutNet(VECTOR, 2)
    assert [layer.dropout.p for layer in model.hidden] == [0.3, 0.3]
    assert [linear.out_features for linear in linears(model)] == [512, 256, 2]


@pytest.mark.parametrize("d_model, num_heads", [(10, 3), (64, 5)])
def test_transformer_block_rejects_d_model_not_divisible_by_num_heads(d_model, num_heads):
    with pytest.raises(ValueError, match=rf"d_model={d_model}.*num_heads={num_heads}"):
        TransformerBlock(d_model, num_heads, dim_feedforward=16)
    with pytest.raises(ValueError, match=rf"d_model={d_model}.*num_heads={num_heads}"):
        Transformer(VECTOR, 2, d_model=d_model, num_heads=num_heads)


def test_post_norm_block_outputs_layer_normalised_tokens():
    block = TransformerBlock(16, 4, dim_feedforward=32, norm_first=False).eval()
    with torch.no_grad():
        out = block(torch.randn(3, 5, 16) * 4 + 2)
    assert torch.allclose(out.mean(dim=-1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(out.std(dim=-1, unbiased=False), torch.ones(3, 5), atol=1e-3)


def test_pre_norm_block_keeps_the_residual_stream_unnormalised():
    block = TransformerBlock(16, 4, dim_feedforward=32, norm_first=True).eval()
    x = torch.randn(3, 5, 16) * 4 + 2
    with torch.no_grad():
        out = block(x)
        # Pre-norm: x + attention(norm1(x)) + feed_forward(norm2(...)); the input's offset of 2 survives.
        h = x + block._attend(block.norm1(x))
        assert torch.allclose(out, h + block.feed_forward(block.norm2(h)), atol=1e-5)
    assert out.mean().item() > 1


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("input_shape", [IMAGE, VECTOR], ids=["image", "vector"])
def test_transformer_runs_both_norm_placements(norm_first, input_shape):
    model = Transformer(input_shape, 3, d_model=16, num_heads=2, num_layers=2, dim_feedforward=32,
                        norm_first=norm_first)
    assert all(block.norm_first is norm_first for block in model.blocks)
    assert isinstance(model.final_norm, nn.LayerNorm if norm_first else nn.Identity)
    out = model(torch.randn(4, *input_shape))
    assert out.shape == (4, 3) and torch.isfinite(out).all()


def test_transformer_stacks_num_layers_blocks():
    model = Transformer(VECTOR, 2, d_model=8, num_heads=2, num_layers=3, dim_feedforward=16)
    assert len(model.blocks) == 3 and all(isinstance(block, TransformerBlock) for block in model.blocks)


def test_tokens_turn_image_rows_into_tokens_of_all_channels():
    model = Transformer((2, 3, 4), 2, d_model=8, num_heads=2)
    x = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 2, 3, 4)
    tokens = model.tokens(x)
    assert tokens.shape == (2, 3, 8)
    for b in range(2):
        for row in range(3):
            assert torch.equal(tokens[b, row], torch.cat([x[b, 0, row], x[b, 1, row]]))


def test_tokens_turn_each_feature_into_a_token():
    model = Transformer(VECTOR, 2, d_model=8, num_heads=2)
    x = torch.randn(4, 30)
    tokens = model.tokens(x)
    assert tokens.shape == (4, 30, 1)
    assert torch.equal(tokens[..., 0], x)


def test_transformer_embeds_one_token_per_image_row():
    model = Transformer(IMAGE, 2, d_model=8, num_heads=2)
    assert model.embed.in_features == 8 and model.position.shape == (1, 8, 8)
    model = Transformer(VECTOR, 2, d_model=8, num_heads=2)
    assert model.embed.in_features == 1 and model.position.shape == (1, 30, 8)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("input_shape", [IMAGE, VECTOR], ids=["image", "vector"])
def test_model_fits_a_tiny_batch(name, input_shape):
    x, y = torch.randn(16, *input_shape), torch.arange(16) % 4
    model = MODELS[name](input_shape, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return loss_fn(model(x), y).item()

    before = eval_loss()
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.25 * before, (before, after)


# --- ResNet and patch tokens ----------------------------------------------------------------------------------------

def small_resnet(input_shape, num_outputs=10, **options):
    return ResNet(input_shape, num_outputs, **{"channels": (8, 16), "blocks_per_stage": 1, **options})


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8)], ids=["cifar", "mnist", "digits"])
@pytest.mark.parametrize("options", [{}, {"channels": (4,)}, {"channels": (4, 8, 16), "blocks_per_stage": 2}],
                         ids=["two-stages", "one-stage", "three-stages-two-blocks"])
def test_resnet_outputs_one_row_per_sample_and_num_outputs_columns(input_shape, options):
    model = small_resnet(input_shape, 7, **options)
    out = model(torch.randn(3, *input_shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    channels = options.get("channels", (8, 16))
    assert len(model.blocks) == len(channels) * options.get("blocks_per_stage", 1)
    assert model.head.in_features == channels[-1]


def test_resnet_halves_the_resolution_in_each_stage_after_the_first():
    model = small_resnet((3, 32, 32), channels=(4, 8, 16), blocks_per_stage=2)
    with torch.no_grad():
        maps = model.blocks(model.stem(torch.randn(2, 3, 32, 32)))
    assert maps.shape == (2, 16, 8, 8)


def test_resnet_has_batchnorm_and_grows_with_its_channels():
    model = small_resnet((3, 32, 32))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    def size(channels):
        return sum(p.numel() for p in small_resnet((3, 32, 32), channels=channels).parameters())

    assert size((4, 8)) < size((8, 16)) < size((16, 32))


def test_resnet_fits_a_tiny_batch():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 4
    model = small_resnet((3, 8, 8), 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_resnet_on_tabular_input_is_a_config_error_naming_model():
    with pytest.raises(ConfigError) as error:
        ResNet(VECTOR, 2)
    assert error.value.key == "model"
    assert str(error.value).startswith("model: got 'ResNet', expected image data of shape (C, H, W)")
    assert "(30,)" in str(error.value)


def test_patch_tokens_are_the_channel_first_patches_in_row_major_order():
    model = Transformer((3, 32, 32), 10, d_model=8, num_heads=2, patch_size=4)
    assert model.embed.in_features == 48 and model.position.shape == (1, 64, 8)
    x = torch.randn(2, 3, 32, 32)
    tokens = model.tokens(x)
    assert tokens.shape == (2, 64, 48)
    assert torch.equal(tokens[:, 0], x[:, :, :4, :4].reshape(2, 48))
    for row, col in [(0, 1), (1, 0), (7, 7), (3, 5)]:
        assert torch.equal(tokens[:, 8 * row + col], x[:, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4].reshape(2, 48))
    assert model(x).shape == (2, 10)


def test_a_patch_size_that_does_not_divide_the_image_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        Transformer((1, 28, 28), 10, d_model=8, num_heads=2, patch_size=5)
    assert str(error.value) == ("model.patch_size: got 5, expected a divisor of both the height and the width of "
                                "the 28x28 images")
