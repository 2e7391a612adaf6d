"""The train-step benchmark runs end to end (quick mode, one small model, JAX only, bfloat16 column) and writes its JSON."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_quick_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), "--quick",
                         "--models=ws_mlp", "--no-torch", "--bfloat16", f"--out={out}"], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  (row,) = result["rows"]
  assert row["model"] == "ws_mlp" and row["params"] == 269_322 and row["steps_per_s"] > 0
  assert "torch_steps_per_s" not in row and result["peak_matmul_gflops"] > 0
  assert row["bf16_steps_per_s"] > 0 and row["bf16_speedup"] == row["bf16_steps_per_s"] / row["steps_per_s"]
  assert result["input_pipeline"]["images_per_s_by_batch"]["64"] > 0
  assert result["input_pipeline"]["ratio_to_step_by_model"]["ws_mlp"] > 0
  assert "| ws_mlp |" in proc.stdout
