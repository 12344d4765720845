"""benchmarks/gpu_check.py runs end to end on a CPU (the GPU numbers come from a lent GPU)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.training

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_table_matches_card_names():
    gpu_check = load_script()
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.4
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.peak_tflops("Some Future GPU") is None


def test_cpu_run_reports_throughput_and_memory(tmp_path):
    gpu_check = load_script()
    report = gpu_check.main([
        "--device", "cpu", "--steps", "1", "--batch-size", "2", "--model", "part_fvit_tiny",
        "--precision", "fp32", "--classes", "8", "--json", str(tmp_path / "out.json"),
        "model.overrides={depth: 1, dim: 64, heads: 2, head_dim: 32, mlp_dim: 128, "
        "num_landmarks: 16}"])
    for section in ("model_only", "engine"):
        numbers = report[section]
        assert numbers["images_per_s"] > 0 and numbers["peak_memory_gib"] > 0
        assert numbers["mfu"] is None  # no peak for a CPU
        assert numbers["achieved_tflops"] == pytest.approx(
            3 * report["gflops_forward_per_image"] * numbers["images_per_s"] / 1000)
    assert (tmp_path / "out.json").is_file()
