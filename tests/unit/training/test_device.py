import pytest
import torch

from trainer.config import ConfigError
from trainer.training.device import available_devices, resolve_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a machine with the given accelerators: machine(cuda=..., mps=...)."""
    def set_up(cuda=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_up


def test_auto_picks_cpu_without_accelerators(machine):
    machine()
    assert resolve_device("auto") == torch.device("cpu")
    assert available_devices() == ["cpu"]


def test_auto_picks_the_first_available_device_here():
    assert resolve_device("auto").type == available_devices()[0]
    assert available_devices()[-1] == "cpu"


def test_auto_picks_cuda_when_it_is_available(machine):
    machine(cuda=True, mps=True)
    assert resolve_device("auto") == torch.device("cuda")
    assert available_devices() == ["cuda", "mps", "cpu"]


def test_auto_picks_mps_without_cuda(machine):
    machine(cuda=False, mps=True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize("accelerators", [{}, {"cuda": True}, {"mps": True}, {"cuda": True, "mps": True}])
def test_cpu_always_works(machine, accelerators):
    machine(**accelerators)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, accelerators, listed", [
    ("cuda", {}, "auto, cpu"),
    ("mps", {}, "auto, cpu"),
    ("cuda", {"mps": True}, "auto, mps, cpu"),
    ("mps", {"cuda": True}, "auto, cuda, cpu"),
])
def test_an_unavailable_device_is_a_config_error_naming_key_value_and_choices(machine, name, accelerators, listed):
    machine(**accelerators)
    with pytest.raises(ConfigError) as error:
        resolve_device(name)
    message = str(error.value)
    assert message.startswith(f"trainer.device: got {name!r}")
    assert listed in message
    assert error.value.key == "trainer.device" and error.value.value == name


@pytest.mark.parametrize("name, accelerators", [("cuda", {"cuda": True}), ("mps", {"mps": True})])
def test_an_available_device_is_used_by_name(machine, name, accelerators):
    machine(**accelerators)
    assert resolve_device(name) == torch.device(name)
