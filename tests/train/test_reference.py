"""Reference mode: the authors' way of embedding (every occurrence, full layer, fp32) against the fast path."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cache import layout
from train.cli import train_heads
from train.loop import LoadedStores, episode_embeddings, episode_scores, prepare_data, train_run
from train.loss import episode_loss
from train.model import TwoTower
from train.reference import full_layer_forward, occurrence_embeddings
from train.runs import RunConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import AUDIO_DIM, IMAGE_DIM, tiny_config, write_tiny_cache  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def batch(tiny_cache):
    """The data of an en+fr fp32 run and one batch of 8 episodes: many items drawn more than once."""
    data = prepare_data(tiny_config(tiny_cache), LoadedStores("cpu"))
    episodes = data.train.draw(data.train.anchors[:8], np.random.default_rng(0))
    assert len(np.unique(episodes.image)) < episodes.image.size  # repeats: the fast path shares them
    return data, episodes


def test_without_dropout_reference_and_fast_give_the_same_loss_and_gradients(batch):
    data, episodes = batch
    torch.manual_seed(0)
    model = TwoTower(AUDIO_DIM, IMAGE_DIM, 64, logit_mode="cap", dropout=0.0)
    losses, grads = [], []
    for reference in (False, True):
        model.zero_grad()
        loss = episode_loss(*episode_scores(model, data, episodes, bucket=5, reference=reference))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    # eval mode with the default dropout: the same answer too
    model = TwoTower(AUDIO_DIM, IMAGE_DIM, 64, dropout=0.1).eval()
    with torch.no_grad():
        fast, ref = (episode_loss(*episode_scores(model, data, episodes, 5, r)).item() for r in (False, True))
    assert fast == pytest.approx(ref, rel=1e-5)


def test_reference_gives_every_occurrence_its_own_dropout_mask(batch):
    data, episodes = batch
    torch.manual_seed(0)
    model = TwoTower(AUDIO_DIM, IMAGE_DIM, 64, dropout=0.5).train()
    image_items = episodes.image.reshape(-1)
    first, second = [np.flatnonzero(image_items == item)[:2] for item in image_items
                     if (image_items == item).sum() > 1][0]
    _, ref_image = occurrence_embeddings(model, data, episodes, bucket=7)
    _, fast_image = episode_embeddings(model, data, episodes, bucket=7)
    ref_image, fast_image = ref_image.reshape(-1, 64), fast_image.reshape(-1, 64)
    assert not torch.allclose(ref_image[first], ref_image[second])  # two occurrences, two masks
    assert torch.equal(fast_image[first], fast_image[second])       # the fast path shares one
    assert ref_image.shape == (episodes.image.size, 64)


def test_full_layer_forward_is_the_standard_layer_read_at_cls():
    torch.manual_seed(0)
    head = TwoTower(12, 12, 64).audio.eval()
    x, pad = torch.randn(3, 5, 12), torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 2:] = True
    with torch.no_grad():
        assert torch.allclose(full_layer_forward(head, x, pad), head(x, pad), atol=1e-5)


def test_reference_run_is_recorded_and_must_be_fp32(tiny_cache, tmp_path):
    run_dir = train_run(tiny_config(tiny_cache, ("en",), epochs=1, reference=True), tmp_path / "ref",
                        LoadedStores("cpu"), progress=False)
    assert json.loads((run_dir / "config.json").read_text())["reference"] is True
    with pytest.raises(RunConfigError, match="fp32"):
        train_run(tiny_config(tiny_cache, ("en",), epochs=1, reference=True, precision="bf16"), tmp_path / "bf",
                  LoadedStores("cpu"), progress=False)


def test_cli_reference_flag(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    tiny = ["--langs", "en", "--epochs", "1", "--width", "64", "--batch-size", "32", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(train_heads, [*tiny, "--reference"])
    assert result.exit_code == 0, result.output
    config = json.loads((vgsme_home / "runs" / "main" / "en-w64-s0" / "config.json").read_text())
    assert config["reference"] is True and config["precision"] == "fp32"
    result = CliRunner().invoke(train_heads, [*tiny, "--reference", "--precision", "bf16", "--study", "x"])
    assert result.exit_code == 1 and "--reference trains in fp32" in result.output
    assert "Traceback" not in result.output
