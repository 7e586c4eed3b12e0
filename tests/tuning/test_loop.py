"""The training loop's train/eval switch (``skvlm.tuning._loop``)."""

import torch
from torch import nn

from skvlm.tuning._loop import Loop


def test_frozen_batch_norms_keep_their_running_statistics():
    # a frozen convolutional tower (FastVLM's FastViT) before a trained head
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2), nn.BatchNorm1d(2))
    net[0].requires_grad_(False)
    loop = Loop.__new__(Loop)  # only the switch: no model to train
    loop.model = net
    loop._train_mode(True)
    assert [m.training for m in net] == [False, True, True]
    frozen = net[0].running_mean.clone()
    trained = net[2].running_mean.clone()
    net(torch.randn(8, 4) + 3.0)
    assert torch.equal(net[0].running_mean, frozen)  # the frozen one kept them
    assert not torch.equal(net[2].running_mean, trained)  # the trained one updates
    loop._train_mode(False)
    assert not any(m.training for m in net.modules())
