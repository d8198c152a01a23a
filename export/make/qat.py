"""Quantisation-aware training (QAT), a step of ``cakd export``: when post-training INT8 fails its gate
(``qat.mode: auto``) or always (``always``), the checkpoint is fake-quantised with NVIDIA ModelOpt, fine-tuned
under its supervisor, and exported in two forms that the export gates like any INT8: ModelOpt's QDQ ONNX
(``model.int8-qat.onnx``, TensorRT's form) and, for CPU runtimes, the fine-tuned weights quantised again by
onnxruntime in the CPU form the post-training INT8 uses (``model.int8-qat-cpu.onnx``: uint8 activations and
7-bit weights, onnxruntime's fast x86 path; TensorRT's symmetric int8 activations run several times slower
there, see docs/QAT.md).

Why ModelOpt, and not NNCF or hand-written fake quantisation: docs/QAT.md. Its INT8 default is TensorRT's
form (symmetric int8 activations with zero point 0, per-channel int8 weights, float biases), and the QDQ graph
that plain ``torch.onnx.export`` writes from it runs the same on onnxruntime and OpenVINO.

The fine-tune is ``fit``, the pipeline's own training loop, with a KD distiller (the supervisor's logits and
the labels): fingerprinted, checkpointed every epoch in ``qat_dir`` (outside the export's temporary folder, so
a killed export resumes), and a NaN loss ends it as a rejected artefact, never a traceback. ModelOpt is
imported only when QAT runs: exporting a student whose post-training INT8 passes never loads it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ...pipeline.data import build_datasets, load_manifest, resolve_workers
from ...pipeline.distill.kd import KD
from ...pipeline.errors import CakdError
from ...pipeline.files.fileio import file_sha256
from ...pipeline.models import StagedModel, load_model
from ...pipeline.settings.fingerprint import fingerprint
from ...pipeline.settings.params import DistillParams, KDParams, Params
from ...pipeline.training import fit
from ...pipeline.training.loop import TrainingDiverged
from ...pipeline.training.placement import place, shutdown
from ..runtimes.base import INPUT_NAME, OUTPUT_NAME

EXTRA = "pip install 'cakd[qat]'"
LIBRARY = "nvidia-modelopt"
CONFIG = "INT8_DEFAULT_CFG"  # per-channel int8 weights, per-tensor int8 activations, both symmetric; max calibration
CALIB_BATCH = 64


@dataclass(frozen=True)
class QatJob:
    """What QAT needs besides the checkpoint: the params (``qat``, the training recipe, the data), the manifest
    the training set is rebuilt from, the teacher (``--teacher``; supervises with ``qat.supervisor: teacher``)
    and the folder that keeps the resumable training state."""

    params: Params
    manifest: Path
    teacher: Path | None
    qat_dir: Path

    @property
    def mode(self) -> str:
        return self.params.qat.mode

    @property
    def supervisor(self) -> Path | None:
        """The teacher that supervises the fine-tune, or None: the FP32 model itself (``qat.supervisor: fp32``,
        or no teacher given, as for the teacher's own export)."""
        return self.teacher if self.params.qat.supervisor == "teacher" else None

    def key(self) -> str:
        """What QAT depends on besides the checkpoint and the export settings (part of the export's key)."""
        supervisor = file_sha256(self.supervisor) if self.supervisor is not None else None
        return fingerprint(self.params.qat, self.params.train, supervisor)


@dataclass
class QatResult:
    """The fine-tune finished (``reason`` None: ``weights`` holds the model with its fine-tuned weights, the
    quantisers removed) or not (``reason`` says why: a diverged fine-tune)."""

    reason: str | None
    details: dict = field(default_factory=dict)
    weights: StagedModel | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ModelOpt prints its quantiser count and warns about CUDA and transformers it does not need here; the
    TorchScript ONNX exporter warns that it is deprecated (the dynamo exporter cannot trace the quantisers)."""
    cpp = logging.getLogger("torch.utils.cpp_extension")
    level = cpp.level
    cpp.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        cpp.setLevel(level)


def modelopt_missing() -> str | None:
    """Why ModelOpt cannot be used here, or None. Imports it (several seconds): call only when QAT runs."""
    try:
        with _quiet():
            import modelopt.torch.quantization  # noqa: F401
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] == "modelopt":
            return f"{LIBRARY} is not installed ({EXTRA})"
        return f"{LIBRARY} cannot be imported ({type(err).__name__}: {err}; {EXTRA})"
    return None


def require_modelopt() -> None:
    """``qat.mode: always`` without the library is one line naming the extra, before any work is done."""
    why = modelopt_missing()
    if why is not None:
        raise CakdError(f"qat.mode: always needs quantisation-aware training, but {why}")


def _modelopt() -> tuple[ModuleType, str]:
    require_modelopt()
    import modelopt
    import modelopt.torch.quantization as mtq

    return mtq, modelopt.__version__


class QatKD(KD):
    """KD (the supervisor's logits at ``qat.temperature`` + CE on the labels) on a fake-quantised student whose
    BatchNorm statistics stay frozen: a short fine-tune of a trained model should move its weights to suit
    the quantisers, not re-estimate its normalisation from small training batches (which alone changes its
    predictions)."""

    name = "qat"

    def train(self, mode: bool = True) -> QatKD:
        super().train(mode)
        for module in self.student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def quantise(model: StagedModel, calib_images: torch.Tensor, mtq: ModuleType) -> StagedModel:
    """A fake-quantised copy of ``model``: ModelOpt's quantisers on every Conv and Linear (inputs and weights),
    ranges calibrated (max) on the training images the post-training INT8 is calibrated on."""
    student = copy.deepcopy(model).eval()

    def forward_loop(net: nn.Module) -> None:
        with torch.no_grad():
            for chunk in calib_images.split(CALIB_BATCH):
                net(chunk)

    with _quiet():
        return mtq.quantize(student, getattr(mtq, CONFIG), forward_loop)


def export_qdq(student: StagedModel, out: Path, opset: int) -> None:
    """The fake-quantised model as a QDQ ONNX with a dynamic batch axis (TorchScript exporter: ``dynamo=True``
    cannot trace ModelOpt's quantisers)."""
    spec = student.spec
    example = torch.zeros(1, spec.in_chans, spec.img_size, spec.img_size)
    with _quiet(), torch.no_grad():
        torch.onnx.export(student.eval(), (example,), str(out), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def fine_tuned_weights(model: StagedModel, quantised: nn.Module) -> StagedModel:
    """A copy of ``model`` holding the fine-tuned weights of its fake-quantised copy (every weight and buffer of
    the model; the quantisers' ranges are left out): what a CPU-form quantiser starts from."""
    plain = copy.deepcopy(model)
    missing, _ = plain.load_state_dict(quantised.state_dict(), strict=False)
    if missing:
        raise CakdError(f"the fine-tuned model lacks {len(missing)} of the model's tensors ({missing[0]}, ...)")
    return plain.eval()


def train_qat(job: QatJob, model: StagedModel, source: Path, calib_images: torch.Tensor, qdq_out: Path | None,
              opset: int) -> QatResult:
    """Quantise ``model`` (the FP32 checkpoint ``source``), fine-tune it under its supervisor, write ModelOpt's
    QDQ file to ``qdq_out`` when given; the result carries the fine-tuned weights for the CPU form."""
    started = time.perf_counter()
    mtq, version = _modelopt()
    params, qat = job.params, job.params.qat
    manifest = load_manifest(job.manifest)
    supervisor = load_model(job.supervisor) if job.supervisor is not None else copy.deepcopy(model)
    student = quantise(model, calib_images, mtq)
    kd = KDParams(temperature=qat.temperature, weight=qat.kd_weight, ce_weight=qat.ce_weight)
    distiller = QatKD(student, supervisor, DistillParams(method="kd", kd=kd))
    # A fine-tune starts at its learning rate; ModelOpt's quantisers are not compiled (untested there).
    recipe = params.train.model_copy(update={"warmup_epochs": 0, "compile": False})
    run_id = fingerprint(qat, recipe, params.data, params.seed, manifest["content_hash"], file_sha256(source),
                         file_sha256(job.supervisor) if job.supervisor is not None else None, len(calib_images),
                         LIBRARY, version, CONFIG)
    details = {"library": LIBRARY, "version": version, "config": CONFIG, "epochs": qat.epochs, "lr": qat.lr,
               "supervisor": str(job.supervisor) if job.supervisor is not None else "the FP32 model itself",
               "checkpoint": str(job.qat_dir / "checkpoint.pt")}
    train_ds, test_ds = build_datasets(params.data, manifest, params.seed)
    placement = place(params.machine.threads)
    try:
        result = fit(distiller, train_ds, test_ds, recipe, job.qat_dir, placement, seed=params.seed,
                     fingerprint=run_id, resume=True, epochs=qat.epochs, lr=qat.lr,
                     num_workers=resolve_workers(params.machine.num_workers, train_ds), label="qat")
    except TrainingDiverged as err:
        details["seconds"] = round(time.perf_counter() - started, 1)
        return QatResult(f"quantisation-aware training diverged: {err}", details)
    finally:
        shutdown(placement)
    if qdq_out is not None:
        export_qdq(distiller.student, qdq_out, opset)
    details.update(epochs_run=result.epochs_run, resumed_from_epoch=qat.epochs - result.epochs_run,
                   fake_quant_top1=result.accuracy.get("student"),
                   seconds=round(time.perf_counter() - started, 1))
    return QatResult(None, details, fine_tuned_weights(model, distiller.student))
