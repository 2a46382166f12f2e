"""The learning-rate schedule: 1e-6 → 2e-4 linearly over 1/6 of the steps, cosine back to 1e-6."""
import pytest
import torch

from train.schedule import LR_MAX, LR_MIN, make_optimizer, make_schedule
from train.model import TwoTower


def test_paper_schedule_shape():
    s = make_schedule(24, 10)
    assert (s.total_steps, s.warmup_steps) == (240, 40)
    assert s.lr(0) == pytest.approx(LR_MIN)
    assert s.lr(20) == pytest.approx((LR_MIN + LR_MAX) / 2)
    assert s.lr(40) == pytest.approx(LR_MAX)
    assert s.lr(140) == pytest.approx((LR_MIN + LR_MAX) / 2)
    assert s.lr(239) == pytest.approx(LR_MIN, abs=1e-7)
    lrs = [s.lr(t) for t in range(240)]
    assert all(a <= b for a, b in zip(lrs[:40], lrs[1:41])) and all(a >= b for a, b in zip(lrs[40:], lrs[41:]))


def test_fewer_epochs_keep_the_warmup_share():
    assert make_schedule(12, 10).warmup_steps == 20


def test_adam_with_coupled_weight_decay():
    opt = make_optimizer(TwoTower(16, 16, 64))
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 5e-7
