"""The pooling heads: CLS-only block == the standard layer, parameter counts, logit-scale modes."""
import math

import pytest
import torch

from train.model import LOGIT_SCALE_MAX, TwoTower, cls_block, expected_parameter_count
from train.loss import episode_logits, episode_loss
from train.schedule import make_optimizer


@pytest.mark.parametrize("width", [128, 256])
def test_cls_only_block_equals_standard_layer(width):
    torch.manual_seed(0)
    model = TwoTower(48, 32, width).eval()
    head = model.audio
    x = torch.randn(6, 17, 48)
    pad = torch.zeros(6, 17, dtype=torch.bool)
    pad[1, 9:] = True
    pad[4, 2:] = True
    tokens, token_pad = head.tokens(x, pad)
    with torch.no_grad():
        # the full layer over every position, its CLS row; with a padding mask and without one
        reference = head.layer(tokens, src_key_padding_mask=token_pad)[:, 0]
        ours = cls_block(head.layer, tokens, token_pad)
        assert (reference - ours).abs().max() < 1e-5
        reference_unmasked = head.layer(tokens)[:, 0]
        assert (reference_unmasked - cls_block(head.layer, tokens, None)).abs().max() < 1e-5
        # padding really is ignored: changing padded frames changes nothing
        x2 = x.clone()
        x2[4, 2:] = 100.0
        assert torch.allclose(head(x, pad), head(x2, pad), atol=1e-6)


def test_block_uses_standard_layer_layout():
    model = TwoTower(768, 2048, 256)
    standard = torch.nn.TransformerEncoderLayer(256, 4, 1024, activation="gelu", norm_first=True, batch_first=True)
    ours = {k[len("audio.layer."):]: v.shape for k, v in model.state_dict().items() if k.startswith("audio.layer.")}
    assert ours == {k: v.shape for k, v in standard.state_dict().items()}
    # a standard layer's weights load 1:1 and give the same CLS output
    model.audio.layer.load_state_dict(standard.state_dict())
    tokens = torch.randn(3, 9, 256)
    standard.eval(), model.eval()
    with torch.no_grad():
        assert (standard(tokens)[:, 0] - cls_block(model.audio.layer, tokens, None)).abs().max() < 1e-5


@pytest.mark.parametrize("width,paper", [(128, 790_785), (256, 2_433_537), (512, 8_274_945)])
def test_parameter_count_matches_paper(width, paper):
    model = TwoTower(768, 2048, width)
    assert model.parameter_count() == expected_parameter_count(768, 2048, width) == paper
    if width == 256:
        assert abs(model.parameter_count() - 2.5e6) / 2.5e6 < 0.10


def test_embeddings_are_unit_vectors_and_cls_init_scaled():
    torch.manual_seed(1)
    model = TwoTower(400, 900, 128)
    assert model.audio.cls.std().item() == pytest.approx(400 ** -0.5, rel=0.3)
    e = model.embed_image(torch.randn(5, 7, 900).half())
    assert torch.allclose(e.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_fixed100_is_exactly_100_and_not_trained():
    model = TwoTower(16, 16, 64, logit_mode="fixed100")
    assert model.logit_scale().item() == LOGIT_SCALE_MAX
    assert not model.log_scale.requires_grad
    assert all(p is not model.log_scale for group in make_optimizer(model).param_groups for p in group["params"])


def test_cap_mode_starts_at_1_over_007_and_never_exceeds_100():
    torch.manual_seed(0)
    model = TwoTower(16, 16, 64, logit_mode="cap")
    assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    optimizer = torch.optim.Adam([model.log_scale], lr=0.5)
    a = torch.nn.functional.normalize(torch.randn(8, 12, 16), dim=-1)
    a[:, 0] = a[:, 0] * 0 + torch.nn.functional.normalize(torch.ones(16), dim=0)  # perfect positives:
    for _ in range(20):  # the loss keeps asking for a larger scale; push hard
        loss = episode_loss(*episode_logits(a, a, model.logit_scale()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale()
        assert model.logit_scale().item() <= LOGIT_SCALE_MAX
    assert model.logit_scale().item() == pytest.approx(LOGIT_SCALE_MAX)
    with torch.no_grad():
        model.log_scale.fill_(math.log(1e4))  # even with s pushed past the cap by hand
    assert model.logit_scale().item() == LOGIT_SCALE_MAX
