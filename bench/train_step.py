"""Training-step speed: vgsme's step against the authors' way, on synthetic features of the paper's shapes.

    .venv/bin/python bench/train_step.py                  # CPU, the paper configuration (W=256, batch 60)
    .venv/bin/python bench/train_step.py --device cuda    # on a GPU
    .venv/bin/python bench/train_step.py --demo-sweep -- --width 128 --epochs 12   # the demo's 12 runs

Both sides run the paper's objective: 60 audio anchors, each with 1 positive + 11 negative images and
11 negative audios (720 image and 780 audio sequences per step), on the same episodes drawn from a pool
of 13 concepts × `--per-concept` items (audio ~U[25, 75] × 768 frames, images 64 × 2048), large enough
that few draws repeat.

- reference (the authors' way): a `Dataset` reading every item of an episode from a per-item HDF5 group
  (float32, one group per item), a `DataLoader`, fp32, every sampled sequence through a full
  `nn.TransformerEncoderLayer`, Adam.
- vgsme: features in memory (`cache.memory.InMemoryFeatures`), index gathers, each distinct item embedded
  once, the CLS-only block, bf16 autocast (`train.loop.train_step`).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train-heads: sleeping, not spinning, OpenMP waits

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cache.memory import InMemoryFeatures
from train.loop import AudioPool, TrainingData, autocast_factory, train_step
from train.model import TwoTower
from train.sampler import EpisodeSampler
from train.schedule import make_optimizer

CONCEPTS = 13
AUDIO_DIM, IMAGE_DIM, POSITIONS = 768, 2048, 64


class ReferenceHead(nn.Module):
    """The authors' TransformerPooling: the full encoder layer over [CLS; tokens], CLS output kept."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * dim**-0.5)
        self.layer = nn.TransformerEncoderLayer(width, width // 64, 4 * width, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([self.cls.expand(len(x), -1, -1), self.proj(x)], 1)
        if pad is not None:
            pad = torch.cat([pad.new_zeros(len(pad), 1), pad], 1)
        return F.normalize(self.out(self.norm(self.layer(h, src_key_padding_mask=pad)[:, 0])), dim=-1)


class PerItemEpisodes(Dataset):
    """Episode k of a pre-drawn list, each item read from its own HDF5 group, as the authors' loader does."""

    def __init__(self, path: Path, audio: np.ndarray, image: np.ndarray):
        self.path, self.audio, self.image, self.file = path, audio, image, None

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, k: int):
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        audio = [torch.from_numpy(self.file[f"audio/{i}/feature"][()]) for i in self.audio[k]]
        image = torch.stack([torch.from_numpy(self.file[f"image/{i}/feature"][()]) for i in self.image[k]])
        return audio, image


def collate(batch):
    audio = [a for episode, _ in batch for a in episode]
    lengths = torch.tensor([len(a) for a in audio])
    x = nn.utils.rnn.pad_sequence(audio, batch_first=True)
    pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    return x, pad, torch.cat([image for _, image in batch])


def reference_loss(audio_head, image_head, xa, pad, xi, batch: int) -> torch.Tensor:
    a = audio_head(xa, pad).view(batch, 12, -1)
    i = image_head(xi).view(batch, 12, -1)
    to_image = 100 * torch.einsum("be,bke->bk", a[:, 0], i)
    to_audio = 100 * torch.einsum("be,bke->bk", i[:, 0], a)
    logits = torch.cat([to_image, to_audio])
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def make_pool(per_concept: int, rng: np.random.Generator):
    n = CONCEPTS * per_concept
    lengths = rng.integers(25, 76, n)
    audio = torch.randn(int(lengths.sum()), AUDIO_DIM, dtype=torch.float16).numpy()
    images = torch.randn(n, POSITIONS, IMAGE_DIM, dtype=torch.float16).relu_().numpy()  # post-ReLU maps
    codes = np.arange(n) % CONCEPTS
    return audio, lengths, images, codes


def timed(step, n_warmup: int, n_timed: int, device: str) -> list[float]:
    times = []
    for k in range(n_warmup + n_timed):
        start = time.perf_counter()
        step(k)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if k >= n_warmup:
            times.append(time.perf_counter() - start)
    return times


def demo_sweep(train_options: list[str]) -> None:
    """Time `train-heads` on the demo's 12 runs over synthetic stores of the demo's shapes (whisper-base
    512-d audio of ~25 frames per word, efficientnet-lite0 1280-d images of 49 positions; 13 familiar and
    19 novel concepts, 40 words per concept and language, 60 images per concept; 60/20/20 % splits for
    familiar concepts). Features are a concept prototype plus noise: the accuracies say little, the
    times are the point (use the real demo stores when they exist: `make demo` prints its own)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.synthetic
    from tests.synthetic import FAMILIAR, NOVEL, synthetic_items, write_synthetic_store

    concepts = list(FAMILIAR + NOVEL)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as home:
        folder = Path(home) / "cache" / "demo"
        folder.mkdir(parents=True)
        splits = ("train", "train", "train", "valid", "test")
        for modality, dim, per in (("audio", 512, 40), ("image", 1280, 60)):
            proto = rng.standard_normal((len(concepts), dim))
            for lang in ("en", "fr", "nl") if modality == "audio" else (None,):
                items = synthetic_items(len(concepts) * per, modality, lang=lang or "", concepts=concepts, splits=splits)
                code = [concepts.index(c) for c in items.concept]
                sizes = rng.integers(15, 36, len(code)) if modality == "audio" else np.full(len(code), 49)
                feats = [proto[c] + 3.0 * rng.standard_normal((n, dim)) for c, n in zip(code, sizes)]
                name = f"audio-{lang}.synthetic.h5" if lang else "image.synthetic.h5"
                write_synthetic_store(folder / name, modality, items, feats, lang=lang or "en")
        command = [str(Path(sys.executable).parent / "train-heads"), "--corpus", "demo", "--configs", "en", "fr", "nl",
                   "en+fr", "en+nl", "fr+nl", "--seeds", "0-1", "--study", "demo", "--quiet", *train_options]
        print(" ".join(command[1:]))
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "VGSME_HOME": home})
        print(f"12 runs in {time.perf_counter() - start:.0f} s (wall, including start-up and loading)")


def main() -> None:
    if "--demo-sweep" in sys.argv:
        options = sys.argv[sys.argv.index("--demo-sweep") + 1:]
        return demo_sweep(options[1:] if options[:1] == ["--"] else options)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--per-concept", type=int, default=300, help="pool items per concept and modality")
    parser.add_argument("--steps", type=int, default=8, help="timed vgsme steps (after 2 warm-up steps)")
    parser.add_argument("--reference-steps", type=int, default=2, help="timed reference steps (after 1 warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, device_type = args.device, "cuda" if args.device.startswith("cuda") else "cpu"
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    audio, lengths, images, codes = make_pool(args.per_concept, rng)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sampler = EpisodeSampler(codes, codes, [f"c{k}" for k in range(CONCEPTS)])
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    mem_audio = InMemoryFeatures.from_numpy("audio", audio, lengths, offsets, device=device, dtype=dtype)
    mem_image = InMemoryFeatures.from_numpy("image", images, device=device, dtype=dtype)
    data = TrainingData(AudioPool([mem_audio], [lengths]), mem_image, sampler, sampler, {})
    n_steps = 2 + args.steps
    episodes = [sampler.draw(rng.choice(sampler.anchors, args.batch, replace=False), rng) for _ in range(n_steps)]
    distinct = statistics.mean(len(np.unique(e.image)) / e.image.size for e in episodes)
    print(f"pool: {len(lengths)} audio (mean {lengths.mean():.1f} frames) and {len(images)} images; "
          f"{distinct:.0%} of a step's image draws are distinct")

    # vgsme
    model = TwoTower(AUDIO_DIM, IMAGE_DIM, args.width).to(device)
    optimizer = make_optimizer(model)
    scaler = torch.amp.GradScaler(device_type, enabled=args.precision == "fp16" and device_type == "cuda")
    autocast = autocast_factory(device_type, args.precision)
    ours = timed(lambda k: train_step(model, optimizer, scaler, data, episodes[k], autocast, 256), 2, args.steps, device)

    # reference: write the items of its episodes to a per-item float32 HDF5 file, then read them back per item
    ref_n = 1 + args.reference_steps
    ref_audio = np.concatenate([e.audio for e in episodes[:ref_n]])
    ref_image = np.concatenate([e.image for e in episodes[:ref_n]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        with h5py.File(path, "w") as f:
            for i in np.unique(ref_audio):
                f.create_dataset(f"audio/{i}/feature", data=audio[offsets[i]: offsets[i] + lengths[i]].astype(np.float32))
            for i in np.unique(ref_image):
                f.create_dataset(f"image/{i}/feature", data=images[i].astype(np.float32))
        loader = DataLoader(PerItemEpisodes(path, ref_audio, ref_image), batch_size=args.batch,
                            num_workers=args.workers, collate_fn=collate)
        batches = iter(loader)
        heads = [ReferenceHead(AUDIO_DIM, args.width).to(device), ReferenceHead(IMAGE_DIM, args.width).to(device)]
        ref_optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=2e-4, weight_decay=5e-7)

        def reference_step(_: int) -> None:
            xa, pad, xi = next(batches)
            loss = reference_loss(*heads, xa.to(device), pad.to(device), xi.to(device), args.batch)
            ref_optimizer.zero_grad()
            loss.backward()
            ref_optimizer.step()

        reference = timed(reference_step, 1, args.reference_steps, device)

    rows = [("reference (per-item HDF5 fp32, full layer, fp32)", statistics.median(reference)),
            (f"vgsme (in memory, unique items, CLS-only, {args.precision})", statistics.median(ours))]
    print(f"W={args.width}, batch {args.batch} anchors (720 image + 780 audio sequences), device {device}, "
          f"torch threads {torch.get_num_threads()}")
    for name, seconds in rows:
        print(f"{name:58s} {seconds * 1000:8.0f} ms/step  {1 / seconds:6.2f} steps/s  "
              f"{args.batch / seconds:7.1f} audio samples/s")
    print(f"speed-up: {rows[0][1] / rows[1][1]:.1f}x   (steps timed: reference {len(reference)}, vgsme {len(ours)}; "
          f"medians; vgsme step times {', '.join(f'{t * 1000:.0f}' for t in ours)} ms)")
    paper_steps = 7200  # the English run: ~18k anchors per epoch / 60 × 24 epochs
    print(f"a paper-scale 24-epoch English run ({paper_steps} steps) at this rate: "
          f"{paper_steps * rows[1][1] / 60:.0f} min (reference {paper_steps * rows[0][1] / 3600:.1f} h)")


if __name__ == "__main__":
    main()
