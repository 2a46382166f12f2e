"""`bench/gpu_check.py` (`make gpu-check`) in its CPU smoke mode: every step runs, as the GPU check will, so the
script a GPU loan depends on cannot rot between loans."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


def load_script(monkeypatch):
    """The script as a module (bench/ is not a package), registered so that its dataclasses resolve."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_runs_every_step_and_writes_every_figure(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--workers", "2",
                             "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check = json.loads(out.read_text())
    name = check["machine"]["device_name"]
    figure_lines = [line for line in result.stdout.splitlines() if ": " in line and not line.startswith("precision")]
    assert figure_lines and all(line.startswith(f"[{name}]") for line in figure_lines if line.startswith("["))

    extraction = check["steps"]["extraction"]
    assert extraction["status"] == "ok", extraction
    compared = [f for f in extraction["figures"] if "relative_difference" in f]
    # tiny WavLM + ResNet (en, fr, image), tiny ViT (image), the offline pair (en, fr, image), whisper-base-hf (en)
    assert len(compared) == 8
    assert all(f["within_tolerance"] and f["relative_difference"] <= 1e-2 for f in compared)
    assert {f["store"] for f in compared} >= {"audio-en.tiny-wavlm.h5", "image.tiny-vit.h5",
                                              "audio-fr.whisper-base.h5", "image.efficientnet-lite0.h5"}

    training = check["steps"]["training"]
    assert training["status"] in ("ok", "partial"), training
    if training["status"] == "partial":  # only the packed sweep may be missing (train-heads without --executor)
        assert "--executor" in training["reason"]
    paper = next(f for f in training["figures"] if "paper_run_seconds" in f)
    assert paper["paper_run_seconds"] > 0 and paper["how"] == "measured" and paper["target_met"] is None
    if training["status"] == "ok":
        sweep = next(f for f in training["figures"] if "runs_per_hour" in f)
        assert sweep["runs"] == 2 and sweep["runs_per_hour"] > 0

    train_step = check["steps"]["train_step"]
    assert train_step["status"] == "ok", train_step
    assert any(f["text"].startswith("vgsme fp32") for f in train_step["figures"])
    assert check["smoke"] is True and check["check_target_met"] is None


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, one_torch_thread):
    gpu_check = load_script(monkeypatch)

    def broken(report, device, sizes, work):
        raise RuntimeError("CTranslate2 was built without CUDA")

    monkeypatch.setattr(gpu_check, "extraction", broken)
    out = tmp_path / "check.json"
    status = gpu_check.main(["--device", "cpu", "--smoke", "--only", "extraction", "training", "--out", str(out)])
    assert status == 1
    steps = json.loads(out.read_text())["steps"]
    assert steps["extraction"]["status"] == "failed" and "without CUDA" in steps["extraction"]["error"]
    assert steps["training"]["status"] in ("ok", "partial")  # ran after the failure, to its end
    assert any("paper_run_seconds" in f for f in steps["training"]["figures"])
    assert "train_step" not in steps


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the full check would run")
def test_without_a_gpu_the_full_check_says_how_to_run_the_smoke_mode(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_script(monkeypatch).main(["--out", str(tmp_path / "check.json")])
    assert stopped.value.code == 2
    assert "--device cpu --smoke" in capsys.readouterr().err
    assert not (tmp_path / "check.json").exists()
