"""benchmarks/bench_gpu.py in its tiny CPU mode: it runs end to end in a subprocess, and what it
writes holds up against independent checks (hand-counted parameters, the optimizer steps and
examples asked for, numpy's mean of the averaged inputs, the model's own arg-max)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_gpu.py"
STEPS, WARMUP, BATCH, SEQ_LEN, INPUTS, EXAMPLES = 4, 2, 8, 32, 3, 80


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny run: (its JSON report, its markdown, the out folder, the kept work folder)."""
    root = tmp_path_factory.mktemp("bench-gpu")
    out, work = root / "out", root / "work"
    command = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--steps", str(STEPS),
               "--warmup-steps", str(WARMUP), "--batch-size", str(BATCH), "--seq-len", str(SEQ_LEN),
               "--average-inputs", str(INPUTS), "--predict-examples", str(EXAMPLES), "--max-seconds", "120",
               "--out-dir", str(out), "--work-dir", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads((out / "gpu-script-cpu-tiny.json").read_text())
    return report, (out / "gpu-script-cpu-tiny.md").read_text(), out, work


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_the_report_names_device_versions_and_command(bench):
    import torch
    import transformers

    report, markdown, _, _ = bench
    environment = report["environment"]
    assert environment["device"]["type"] == "cpu" and environment["device"]["peak_bf16_tflops"] is None
    assert environment["torch"] == torch.__version__ and environment["transformers"] == transformers.__version__
    assert environment["command"].startswith("python benchmarks/bench_gpu.py --tiny --device cpu")
    assert report["errors"] == {} and report["elapsed_seconds"] < report["max_seconds"]
    for text in (environment["device"]["name"], environment["command"], "Ratio producers / Trainer", "GB/s"):
        assert text in markdown


def test_parameters_and_flops_match_a_hand_count(bench):
    model = bench[0]["model"]
    shape = model["shape"]
    layers, hidden, ffn, vocab = (shape[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                     "vocab_size"))
    # per layer: Q, K, V and the attention output (weights and biases), two LayerNorms, the feed-forward pair
    per_layer = 4 * (hidden * hidden + hidden) + 2 * 2 * hidden + (hidden * ffn + ffn) + (ffn * hidden + hidden)
    head = (hidden * hidden + hidden) + (hidden * 3 + 3)
    non_embedding = layers * per_layer + 2 * hidden + head  # + the embeddings' LayerNorm
    embeddings = vocab * hidden + shape["max_position_embeddings"] * hidden + 1 * hidden  # word, position, type
    assert model["non_embedding_parameters"] == non_embedding
    assert model["parameters"] == non_embedding + embeddings
    assert model["flops"]["per_token"] == 6 * non_embedding + 12 * layers * hidden * SEQ_LEN


def test_both_loops_train_the_asked_steps_on_the_same_examples(bench):
    training = bench[0]["training"]
    total = WARMUP + STEPS
    assert training["asked_optimizer_steps"] == total
    for loop in ("producers", "transformers.Trainer"):
        run = training[loop]
        assert run["optimizer_steps"] == total and run["timed_steps"] == STEPS and not run["stopped_early_by_budget"]
        assert run["forward_passes"] == total
        assert run["examples"] == total * BATCH and run["tokens"] == total * BATCH * SEQ_LEN
        assert run["timed_examples"] == STEPS * BATCH and run["timed_tokens"] == STEPS * BATCH * SEQ_LEN
        # an untrained 3-way classifier on balanced labels: a cross-entropy near ln 3
        assert abs(run["final_loss"] - math.log(3)) < 0.3
        assert positive(run["timed_seconds"]) and positive(run["tokens_per_second"])
        assert run["tokens_per_second"] == pytest.approx(run["timed_tokens"] / run["timed_seconds"])
        assert run["samples_per_second"] == pytest.approx(run["timed_examples"] / run["timed_seconds"])
        assert run["mfu"] is None  # no known peak for a CPU
    ratio = training["producers"]["tokens_per_second"] / training["transformers.Trainer"]["tokens_per_second"]
    assert training["ratio_tokens_per_second"] == pytest.approx(ratio)


def test_the_average_is_the_mean_of_the_inputs(bench):
    from safetensors.numpy import load_file

    averaging, work = bench[0]["averaging"], bench[3]
    inputs = sorted((work / "inputs").glob("*.safetensors"))
    assert len(inputs) == averaging["inputs"] == INPUTS
    assert averaging["bytes_read"] == sum(p.stat().st_size for p in inputs)
    states = [load_file(str(p)) for p in inputs]
    average = load_file(str(work / "average.safetensors"))
    assert set(average) == set(states[0])
    for name, tensor in average.items():
        expected = np.mean([s[name].astype(np.float64) for s in states], axis=0)
        np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-7, err_msg=name)
    for measured in (averaging["streaming"], averaging["baseline"]):
        assert positive(measured["seconds"])
        assert measured["gb_per_second"] == pytest.approx(averaging["bytes_read"] / measured["seconds"] / 1e9)


def test_materialized_predictions_are_the_averaged_models_arg_max(bench):
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    sys.path.insert(0, str(SCRIPT.parent))
    from bench_gpu import eval_features  # the same synthetic inputs

    report, _, _, work = bench
    prediction = report["prediction"]
    assert prediction["examples"] == EXAMPLES
    for path in ("predict", "bare_forward", "materialize_step"):
        assert positive(prediction[path]["examples_per_second"])
    shape = report["model"]["shape"]
    config = XLMRobertaConfig(**shape, type_vocab_size=1, num_labels=3, pad_token_id=1)
    model = XLMRobertaForSequenceClassification(config)
    model.load_state_dict(load_file(str(work / "average.safetensors")))
    model.eval()
    features = eval_features(EXAMPLES, SEQ_LEN, shape["vocab_size"])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([f["input_ids"] for f in features])).logits
    table = pq.read_table(work / "predictions" / prediction["materialize_step"]["tables"][0]).to_pydict()
    assert table["example_id"] == [f"bench-{i}" for i in range(EXAMPLES)]
    assert table["label"] == logits.argmax(-1).tolist()


def test_known_gpus_have_a_peak_and_others_none():
    sys.path.insert(0, str(SCRIPT.parent))
    from bench_gpu import peak_bf16_tflops

    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_bf16_tflops("NVIDIA H200") == 989.4
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") is None
