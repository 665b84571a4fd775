import math

import pytest
import torch
from sklearn.metrics import r2_score

from trainer.training.metrics import accuracy, class_probabilities, regression_errors


def test_accuracy_of_multiclass_logits_takes_the_argmax():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.1, 0.9], [1.0, 0.0, -1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, labels).item() == pytest.approx(0.5)


def test_accuracy_of_two_logits_is_multiclass_with_two_classes():
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert accuracy(logits, torch.tensor([1, 0, 0])).item() == pytest.approx(2 / 3)


def test_accuracy_of_a_single_binary_logit_predicts_class_1_above_zero():
    logits = torch.tensor([[2.0], [-1.0], [0.3], [-0.2], [0.0]])
    labels = torch.tensor([1, 0, 0, 0, 0])  # 0.0 is not > 0: class 0
    assert accuracy(logits, labels).item() == pytest.approx(0.8)
    assert accuracy(logits, 1 - labels).item() == pytest.approx(0.2)


def test_accuracy_is_one_and_zero_at_the_extremes():
    labels = torch.tensor([0, 2, 1])
    perfect = torch.nn.functional.one_hot(labels, 3).float()
    assert accuracy(perfect, labels).item() == 1.0
    assert accuracy(perfect, (labels + 1) % 3).item() == 0.0


def test_regression_errors_known_values():
    output = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([[1.0], [2.0], [5.0]])
    errors = regression_errors(output, target)
    assert errors["mse"].item() == pytest.approx(4 / 3)
    assert errors["rmse"].item() == pytest.approx(math.sqrt(4 / 3))
    # SS_res = 4; the target mean is 8/3, so SS_tot = (25 + 4 + 49) / 9 = 26/3: R^2 = 1 - 12/26 = 7/13.
    assert errors["r2"].item() == pytest.approx(7 / 13)


def test_r2_matches_sklearn_averaged_over_targets():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(50, 3, generator=generator)
    output = target + 0.5 * torch.randn(50, 3, generator=generator)
    expected = r2_score(target.numpy(), output.numpy(), multioutput="uniform_average")
    assert regression_errors(output, target)["r2"].item() == pytest.approx(expected, rel=1e-5)


def test_target_std_scales_mse_by_its_square_and_leaves_r2_alone():
    output = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([[1.0], [2.0], [5.0]])
    plain = regression_errors(output, target)
    scaled = regression_errors(output, target, target_std=torch.tensor([3.0]))
    assert scaled["mse"].item() == pytest.approx(plain["mse"].item() * 9)
    assert scaled["rmse"].item() == pytest.approx(plain["rmse"].item() * 3)
    assert scaled["r2"].item() == pytest.approx(plain["r2"].item())


def test_target_std_scales_each_target_by_its_own_std():
    output = torch.zeros(2, 2)
    target = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    errors = regression_errors(output, target, target_std=torch.tensor([2.0, 10.0]))
    assert errors["mse"].item() == pytest.approx((4 + 100) / 2)


def test_r2_is_one_for_a_perfect_prediction_and_zero_for_predicting_the_mean():
    target = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 0.0], [7.0, 30.0]])
    assert regression_errors(target.clone(), target)["r2"].item() == pytest.approx(1.0)
    assert regression_errors(target.clone(), target)["mse"].item() == 0.0
    mean = target.mean(dim=0, keepdim=True).expand_as(target)
    assert regression_errors(mean, target)["r2"].item() == pytest.approx(0.0, abs=1e-6)



def test_class_probabilities_of_one_logit_are_its_sigmoid_and_complement_and_of_several_their_softmax():
    one = class_probabilities(torch.tensor([[0.0], [math.log(3.0)]]))
    assert torch.allclose(one, torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    several = class_probabilities(torch.tensor([[0.0, math.log(3.0), 0.0]]))
    assert torch.allclose(several, torch.tensor([[0.2, 0.6, 0.2]]))
