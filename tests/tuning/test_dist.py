"""The tuner's use of accelerate: engines it refuses, devices, broadcast on one process."""

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from skvlm.tuning._dist import broadcast, check_engine, gather, process_device


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_sharded_engines_are_refused_with_the_fix(kind):
    with pytest.raises(ValueError, match="trains with DDP") as info:
        check_engine(SimpleNamespace(distributed_type=kind))
    assert kind.value in str(info.value) and "train='lora'" in str(info.value)


@pytest.mark.parametrize(
    "kind", [DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU]
)
def test_ddp_and_one_process_are_accepted(kind):
    check_engine(SimpleNamespace(distributed_type=kind))


def test_each_process_takes_its_own_gpu_when_the_device_is_auto():
    many = SimpleNamespace(num_processes=4, device="cuda:3")
    one = SimpleNamespace(num_processes=1, device="cuda:0")
    assert process_device(many, "auto") == "cuda:3"
    assert process_device(many, "cuda") == "cuda:3"
    assert process_device(many, "cpu") == "cpu"
    assert process_device(one, "auto") == "auto"  # the registry resolves it


def test_one_process_broadcasts_and_gathers_its_own_value():
    one = SimpleNamespace(num_processes=1)
    assert broadcast(one, ("a", 1)) == ("a", 1)
    assert gather(one, {"x": 2}) == [{"x": 2}]
