"""Which INT8 form runs each exported model right and fastest on each CPU runtime (not a test; issues 20 and 33).

    python benchmarks/int8_scope.py /work/fresh/artifacts/export/{teacher,deit,convnext} \
        --params /work/fresh/params.yaml --manifest /work/fresh/artifacts/data/manifest.json \
        --out benchmarks/results/int8_scope.json

Per runtime (onnxruntime, OpenVINO) and export folder, it runs cakd's own INT8 form search
(``export/make/int8_search.py``, the exporter's code, imported) with every form of ``int8_forms.FORMS`` on the
folder's FP32 ``model.onnx``: each form is gated on that runtime at batch 1, 8 and 64 and the passing ones are
timed at batch 1 and 8 in interleaved rounds with FP32. It reports each form's top-1, agreement, p50 at batch 1
and 8 against FP32's and the form the exporter would choose. The ``all`` form is the recipe of the
``model.int8.onnx`` cakd shipped before per-runtime forms, so "every chosen form is at least as fast as the old
file" reads off the ``all`` row. One ``--manifest`` serves every folder, or give one per folder (CIFAR-10 pair A
with its own manifest, say).

``--onnxruntime-scope`` adds issue 20's question for the first folder (onnxruntime only):

``qat_cifar.py`` found cakd's INT8 files (post-training and QAT alike, every op quantised in QDQ form) no faster
than FP32 at batch 8 for the CIFAR-10 pair-A ConvNeXt-Atto. This asks whether a narrower or different
quantisation would be: from the export folder's FP32 ``model.onnx`` it makes, with onnxruntime's own
``quantize_static`` (cakd's calibration images and settings: per-channel 7-bit weights, uint8 activations),

- ``all-qdq``: every op (cakd's ``onnx-int8`` form); ``all-qoperator``: the same in QOperator form;
- ``conv-qdq``: only ``Conv`` (LayerNorm, GELU, residual adds stay float, no Q/DQ churn between them);
- ``pointwise-qdq`` / ``pointwise-qoperator``: only the 1x1 (pointwise) convolutions, depthwise ones float;
- ``pointwise-8bit``: as ``pointwise-qdq`` with 8-bit weights (this CPU has AVX512-VNNI, where onnxruntime's
  u8s8 kernels do not saturate),

scores each on the test set (top-1, agreement with FP32) and times FP32 and every form on onnxruntime at
batch 1 and 8 in interleaved rounds (cakd's bench timer), then profiles FP32 and each form at batch 8 per
operator type (onnxruntime's profiler): how long the convolutions alone take in FP32 vs INT8 is the ceiling
no quantisation scope can beat. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from rich.console import Console
from rich.table import Table

from cakd.export.exported import read_export
from cakd.export.make.gate_data import GateData, gate_data
from cakd.export.make.int8 import ImageCalibrationReader, int8_gate, logits_on
from cakd.export.make.int8_forms import FORMS as FORM_TABLE
from cakd.export.make.int8_search import search
from cakd.export.make.runtime_gate import Serving
from cakd.export.measure.bench import Timing, measure, pinned_threads
from cakd.export.measure.sysinfo import load_average, system_info
from cakd.export.runtimes.base import Settings
from cakd.export.runtimes.ort_cpu import options as ort_options
from cakd.export.runtimes.ort_cpu import ort_runner
from cakd.pipeline.files.fileio import write_json
from cakd.pipeline.settings.loading import load_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qat_cifar import data_overrides  # noqa: E402  (the manifest's data section, as qat_cifar.py reads it)

RUNTIME_KINDS = {"onnxruntime": "onnx-int8", "openvino": "onnx-int8-openvino"}  # each CPU runtime's own file
RUNTIME_KINDS_ORDER = tuple(RUNTIME_KINDS)

# issue 20's onnxruntime scope study: name -> (op types to quantise or None for all, exclude depthwise convs,
# format, 7-bit weights)
FORMS = {
    "all-qdq": (None, False, QuantFormat.QDQ, True),
    "all-qoperator": (None, False, QuantFormat.QOperator, True),
    "conv-qdq": (["Conv"], False, QuantFormat.QDQ, True),
    "pointwise-qdq": (["Conv"], True, QuantFormat.QDQ, True),
    "pointwise-qoperator": (["Conv"], True, QuantFormat.QOperator, True),
    "pointwise-8bit": (["Conv"], True, QuantFormat.QDQ, False),
}


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def quantise(prepared: Path, out: Path, form: str, calib: torch.Tensor) -> Path:
    ops, pointwise_only, fmt, reduce_range = FORMS[form]
    exclude = depthwise_convs(onnx.load(prepared)) if pointwise_only else []
    quantize_static(str(prepared), str(out), ImageCalibrationReader(calib), quant_format=fmt, per_channel=True,
                    reduce_range=reduce_range, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=ops, nodes_to_exclude=exclude,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out


def op_profile(path: Path, batch: int, threads: int, depthwise: list[str], calls: int = 200) -> dict[str, float]:
    """Microseconds per call spent in each operator type; convolutions named in ``depthwise`` (the FP32 graph's
    depthwise ones: onnxruntime's fused and quantised nodes keep their source node's name) counted apart."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.profile_file_prefix = True, str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((batch, *inp.shape[1:]), dtype=np.float32)
    for _ in range(calls):
        session.run(None, {inp.name: x})
    trace = Path(session.end_profiling())
    events, totals = json.loads(trace.read_text()), Counter()
    trace.unlink()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op, node = event["args"]["op_name"], event["name"].removesuffix("_kernel_time")
            is_depthwise = "Conv" in op and any(node.startswith(name) for name in depthwise)
            totals[op + (" (depthwise)" if is_depthwise else "")] += event["dur"]
    return {op: us / calls for op, us in totals.most_common()}


def run(args: argparse.Namespace) -> dict:
    manifest = args.manifest.resolve()
    data = gate_data(load_params(args.params, data_overrides(manifest)), manifest)
    fp32_path = args.export / "model.onnx"
    fp32_logits, labels = logits_on(fp32_path, data.test_loader)
    with tempfile.TemporaryDirectory(prefix="int8_scope-", dir=args.work.expanduser()) as tmp:
        rows = measure_forms(args, fp32_path, Path(tmp), data, fp32_logits, labels)
    ceiling = min(conv_us(rows[f]["profile_b8_us"]) for f in FORMS) / conv_us(rows["fp32"]["profile_b8_us"])
    return {"export": str(args.export), "manifest": str(manifest), "threads": args.threads, "rows": rows,
            "conv_only_ratio_b8": ceiling, "target_vs_fp32_b8": 0.7, "load_average": load_average(),
            "system": system_info(args.threads), "command": " ".join(sys.argv)}


def conv_us(profile: dict[str, float]) -> float:
    """Microseconds per call in the convolutions (FP32 or INT8, depthwise or not)."""
    return sum(us for op, us in profile.items() if "Conv" in op)


def measure_forms(args: argparse.Namespace, fp32_path: Path, work: Path, data: GateData, fp32_logits: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, dict]:
    """Every form made in ``work`` (removed afterwards), scored, timed and profiled; FP32 first."""
    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared))
    paths = {"fp32": fp32_path} | {form: quantise(prepared, work / f"{form}.onnx", form, data.calib_images)
                                   for form in FORMS}
    scores = {form: int8_gate(fp32_logits, logits_on(path, data.test_loader)[0], labels, max_drop=1.0,
                              min_agreement=95.0) for form, path in paths.items()}
    settings = Settings(args.threads, work, (1, 8), 0, "f32")
    runners = [ort_runner(path, ort_options(settings)) for path in paths.values()]
    with pinned_threads(args.threads):
        stats = measure(runners, Timing((1, 8), args.warmup, args.runs, args.rounds))
        depthwise = depthwise_convs(onnx.load(prepared))
        profiles = {form: op_profile(path, 8, args.threads, depthwise) for form, path in paths.items()}
    rows = {}
    for i, form in enumerate(paths):
        b1, b8 = stats[(i, 1)], stats[(i, 8)]
        rows[form] = {"top1": scores[form]["top1"], "agreement": scores[form]["agreement"],
                      "p50_ms_b1": b1["p50_ms"], "p50_ms_b8": b8["p50_ms"],
                      "b8_round_spread_ms": [b8["p50_round_min_ms"], b8["p50_round_max_ms"]],
                      "vs_fp32_b8": b8["p50_ms"] / stats[(0, 8)]["p50_ms"],
                      "profile_b8_us": profiles[form]}
    return rows


def print_table(result: dict) -> None:
    table = Table(title="onnxruntime CPU, INT8 forms of one FP32 model (p50 ms)")
    for col in ("form", "top-1 %", "agreement %", "b1 ms", "b8 ms", "b8 vs FP32", "convs b8 us", "rest b8 us"):
        table.add_column(col, justify="left" if col == "form" else "right")
    for form, r in result["rows"].items():
        conv = conv_us(r["profile_b8_us"])
        rest = sum(r["profile_b8_us"].values()) - conv
        table.add_row(form, f"{r['top1']:.2f}", f"{r['agreement']:.1f}", f"{r['p50_ms_b1']:.3f}",
                      f"{r['p50_ms_b8']:.3f}", f"{r['vs_fp32_b8']:.2f}", f"{conv:.0f}", f"{rest:.0f}")
    Console(width=140).print(table)
    print(f"convolutions alone, best INT8 form vs FP32 at batch 8: {result['conv_only_ratio_b8']:.2f}x "
          f"(target for the whole model: <= {result['target_vs_fp32_b8']}x)")


def per_runtime(args: argparse.Namespace, folder: Path, manifest: Path) -> dict:
    """cakd's form search on one export's FP32 ``model.onnx``, every form, on onnxruntime and OpenVINO."""
    params = load_params(args.params, data_overrides(manifest))
    cfg = params.export.model_copy(update={"int8_forms": list(FORM_TABLE), "int8_form_runs": args.runs,
                                           "int8_form_rounds": args.rounds})
    data = gate_data(params, manifest)
    exported = read_export(folder)
    serving = Serving(RUNTIME_KINDS_ORDER, (1, 8, 64), args.threads, "f32", (1, 8))
    with tempfile.TemporaryDirectory(prefix="int8_scope-", dir=args.work.expanduser()) as tmp:
        shutil.copyfile(folder / "model.onnx", Path(tmp) / "model.onnx")
        fp32 = logits_on(Path(tmp) / "model.onnx", data.test_loader)
        found = search(Path(tmp), list(RUNTIME_KINDS.values()), cfg, data.calib_images, data.test_loader, fp32,
                       serving, (exported.img_size, exported.in_chans))
    result = {}
    for runtime, kind in RUNTIME_KINDS.items():
        status, reason, details = found[kind]
        fp32_ms = details.get("fp32_p50_ms") or {}
        forms = {name: {key: row.get(key) for key in ("status", "quantiser", "top1", "agreement", "batch_sizes",
                                                        "p50_ms", "p50_round_ms", "reason")}
                 | {"vs_fp32": {b: ms / fp32_ms[b] for b, ms in (row.get("p50_ms") or {}).items()}}
                 for name, row in details.get("forms", {}).items()}
        result[runtime] = {"status": status, "reason": reason, "chosen": details.get("chosen"),
                           "fp32_p50_ms": fp32_ms, "forms": forms}
    return result


def _ms(values: dict, batch: str, digits: int = 3) -> str:
    return f"{values[batch]:.{digits}f}" if batch in values else "-"


def print_forms(label: str, result: dict) -> None:
    table = Table(title=f"{label}: INT8 forms per runtime (p50 ms; x = vs FP32; * = the exporter's choice)")
    for col in ("runtime", "form", "status", "top-1 %", "agreement %", "b1 ms", "b1 x", "b8 ms", "b8 x"):
        table.add_column(col, justify="left" if col in ("runtime", "form", "status") else "right")
    for runtime, found in result.items():
        fp32 = found["fp32_p50_ms"]
        table.add_row(runtime, "FP32", "", "", "", _ms(fp32, "1"), "", _ms(fp32, "8"), "")
        for name, row in found["forms"].items():
            p50, vs = row["p50_ms"] or {}, row["vs_fp32"]
            scores = [f"{row[key]:.2f}" if row[key] is not None else "-" for key in ("top1", "agreement")]
            table.add_row(runtime, name + (" *" if name == found["chosen"] else ""), row["status"], *scores,
                          _ms(p50, "1"), _ms(vs, "1", 2), _ms(p50, "8"), _ms(vs, "8", 2))
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", type=Path, nargs="+", help="export folders holding the FP32 model.onnx")
    parser.add_argument("--manifest", type=Path, action="append", required=True,
                        help="the manifest the models were trained on: one for all folders, or one per folder")
    parser.add_argument("--onnxruntime-scope", action="store_true",
                        help="also issue 20's onnxruntime-only scope study on the first folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="calibration and timing settings")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_scope.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (onnxruntime scope study)")
    parser.add_argument("--runs", type=int, default=40, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("~/.cache/cakd"), help="where the INT8 files go")
    args = parser.parse_args()
    if len(args.manifest) not in (1, len(args.exports)):
        parser.error("give one --manifest for every export folder, or one for all")
    manifests = [m.resolve() for m in args.manifest] * (len(args.exports) if len(args.manifest) == 1 else 1)
    result = {"per_runtime": {}, "threads": args.threads, "runs": args.runs, "rounds": args.rounds,
              "system": system_info(args.threads), "command": " ".join(sys.argv)}
    for folder, manifest in zip(args.exports, manifests, strict=True):
        result["per_runtime"][folder.name] = found = per_runtime(args, folder, manifest)
        print_forms(folder.name, found)
    result["load_average"] = load_average()
    if args.onnxruntime_scope:
        args.export, args.manifest = args.exports[0], manifests[0]
        result["onnxruntime_scope"] = run(args)
        print_table(result["onnxruntime_scope"])
    write_json(args.out, result)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
