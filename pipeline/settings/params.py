"""params.yaml's schema: one for every stage, with the defaults params.yaml ships.

Reading a file and ``-S`` overrides are ``loading.py`` and ``overrides.py``; a bad file ends in one line naming
the key path and what is allowed (``CakdError``, exit 2). Fingerprints of settings are ``fingerprint.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import CakdError
from ..files.fileio import bounded
from ..files.layout import TARGET_BENCH, TARGET_SHORTLIST, TEACHER

# Sizes a model is built and fed at: params.yaml's data.img_size, and every spec read back from a checkpoint,
# export.json or ONNX file, share these bounds (one 60000 px spec in a 1.5 KB checkpoint allocated until killed).
ImgSize = Annotated[int, Field(ge=8, le=1024)]
NumClasses = Annotated[int, Field(ge=1, le=100_000)]
InChans = Annotated[int, Field(ge=1, le=4)]

# The names a params file may use for these keys belong to their owners (the model registry, the
# distillation methods, the data sources). The CLI passes them in as pydantic's validation context,
# {"models": [...], "methods": [...], "datasets": [...]}, so this module imports none of them.
KnownNames = dict[str, list[str]]


def _known(value: str, info: ValidationInfo, kind: str, what: str) -> str:
    """``value`` checked against the owners' names in the context; params built in code (no context) are
    taken as given and fail where the owner looks the name up."""
    names = (info.context or {}).get(kind)
    if names is not None and value not in names:
        raise ValueError(f"unknown {what} {bounded(repr(value))}; available: {', '.join(names)}")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataParams(Section):
    name: str = "digits"  # a source of pipeline.data (available_sources())
    root: str = "data"  # imagefolder: folder with train/ and val/ (or test/); torchvision sets: download dir
    img_size: ImgSize = 12
    test_fraction: float = Field(0.25, gt=0, lt=1)  # digits only: fixed stratified split
    train_per_class: int = Field(0, ge=0)  # 0 = all; else a fixed, seeded per-class subset
    test_per_class: int = Field(0, ge=0)
    augment: Literal["pad-crop", "random-resized-crop", "none"] = "pad-crop"
    hflip: bool = False
    mixup: float = Field(0.0, ge=0)  # timm Mixup alpha; 0 = off
    cutmix: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    on_corrupt: Literal["error", "skip"] = "error"

    @field_validator("name")
    @classmethod
    def _known_source(cls, name: str, info: ValidationInfo) -> str:
        return _known(name, info, "datasets", "data source")


# timm arguments cakd sets itself from the data and the spec: a kwargs value would silently build a model for
# other images or classes than the data's (or, for img_size, bypass its bounds).
OWNED_KWARGS = ("img_size", "num_classes", "in_chans", "pretrained")


def own_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    taken = [key for key in OWNED_KWARGS if key in kwargs]
    if taken:
        raise ValueError(f"kwargs may not set {', '.join(taken)}: cakd sets it from data.img_size, the dataset's "
                         f"classes and channels, and the weights source")
    return kwargs


class ModelShape(BaseModel):
    """The sizes a model read back from a file is built, fed and timed at (an export.json, an ONNX input)."""

    model_config = ConfigDict(extra="ignore")
    num_classes: NumClasses
    img_size: ImgSize
    in_chans: InChans = 3


class SpecSchema(ModelShape):
    """A saved ``ModelSpec`` (a checkpoint's ``spec``): the shape bounds, a name and the timm kwargs."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kwargs")
    @classmethod
    def _not_owned(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return own_kwargs(kwargs)


def check_model_shape(in_chans: object, img_size: object, num_classes: object, where: str) -> None:
    """One line when sizes read from a file leave params.yaml's bounds: an ONNX input of 60000x60000 px would
    allocate 43 GB for one random batch. ``num_classes`` None: not known (a dynamic output dimension)."""
    try:
        classes = 1 if num_classes is None else num_classes
        ModelShape.model_validate({"in_chans": in_chans, "img_size": img_size, "num_classes": classes})
    except ValidationError as err:
        raise CakdError(f"{where}: {validation_line(err)}") from None


class ModelParams(Section):
    model: str
    pretrained: bool = False  # timm hub weights (the local Hugging Face cache when offline)
    weights: str | None = None  # a local timm / Hugging Face weights file or folder (safetensors, pth, bin)
    checkpoint: str | None = None  # a cakd checkpoint of this very model to start from
    kwargs: dict[str, Any] = Field(default_factory=dict)  # extra timm kwargs, e.g. {drop_path_rate: 0.1}

    @field_validator("kwargs")
    @classmethod
    def _not_owned(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return own_kwargs(kwargs)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str, info: ValidationInfo) -> str:
        return _known(name, info, "models", "model")

    @model_validator(mode="after")
    def _one_source(self) -> ModelParams:
        chosen = [key for key in ("pretrained", "weights", "checkpoint") if getattr(self, key)]
        if len(chosen) > 1:
            raise ValueError(f"set only one of pretrained, weights, checkpoint (got {' and '.join(chosen)})")
        return self


class StudentParams(ModelParams):
    # This student's epochs, for its baseline and its distillation alike (one recipe for both); null =
    # distill.epochs. Students converge at different speeds: a CNN that learns fast alone can use more.
    epochs: int | None = Field(None, ge=1)


class TrainParams(Section):
    """The optimisation recipe shared by teacher, baseline and distillation (distill may override)."""

    epochs: int = Field(6, ge=0)  # 0: the teacher is used as is (evaluated and written, not trained)
    batch_size: int = Field(64, ge=1)
    opt: str = "adamw"  # any timm optimizer name
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    sched: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float = Field(0.0, ge=0)
    amp: Literal["auto", "off"] = "auto"  # auto = bf16/fp16 autocast when CUDA is present
    compile: bool = False  # torch.compile the trained and frozen models' pieces (docs/GPU.md); rounding differs
    eval_every: int = Field(5, ge=1)  # test-set evaluation and best.pt every N epochs and after the last


class KDParams(Section):
    """mdistiller's KD (mdistiller/engine/cfg.py:60-64): t 4, CE weight 0.1, KD weight 0.9."""

    temperature: float = Field(4.0, gt=0)
    weight: float = Field(0.9, ge=0)  # of the KD term
    ce_weight: float = Field(0.1, ge=0)  # of CE on the labels


class DKDParams(Section):
    """mdistiller's DKD (mdistiller/engine/cfg.py:162-167): CE weight 1, alpha 1, beta 8, t 4; its warm-up is
    20 of 240 epochs, here 1 epoch of a short run."""

    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    warmup_epochs: int = Field(1, ge=0)  # DKD's linear ramp of its loss weight


class FitNetParams(Section):
    weight: float = Field(100.0, ge=0)
    stage: int = Field(2, ge=0, le=3)  # which stage's output is matched (hint layer)


class OFAParams(Section):
    """Defaults are OFAKD's (github Hao840/OFAKD train.py:82-92, README CIFAR example): see distill/ofa.py."""

    eps: float = Field(1.0, gt=0)  # target enhancement exponent (>1 up-weights the true class)
    temperature: float = Field(1.0, gt=0)
    weight: float = Field(1.0, ge=0)  # of the stage projectors' OFA losses (--ofa-loss-weight)
    logits_weight: float = Field(1.0, ge=0)  # of the OFA loss on the student's logits (--kd-loss-weight)
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])  # 1-based stages with a projector


Pair = Literal["ts", "tf", "fs"]  # (teacher side, learner): T->S, T->F, F->S


class FBTParams(Section):
    pairs: list[Pair] = Field(default_factory=lambda: ["ts", "tf", "fs"])  # [ts] = no assistant at all
    feature_loss: Literal["infonce", "mse"] = "infonce"  # "mse" = the paper's ablation
    w_nce: float = Field(1.0, ge=0)  # 0 = "without InfoNCE" ablation
    w_ofa: float = Field(1.0, ge=0)  # 0 = "without OFA" ablation
    ofa_eps: float = Field(1.5, gt=0)
    ofa_temperature: float = Field(1.0, gt=0)
    nce_tau: float = Field(0.07, gt=0)  # initial temperature (learnable, in log space)
    nce_tau_min: float = Field(0.01, gt=0)
    nce_tau_max: float = Field(1.0, gt=0)
    proj_dim: int = Field(128, ge=8)
    use_tf: bool = True  # False = "without L(T,F)" ablation
    detach_assistant: bool = True  # F's knowledge is detached when F teaches S
    assistant_attention: bool = True  # False = "without the attention stage of F" (L2G without Swin block)
    l2g_heads: int = Field(4, ge=1)
    l2g_window: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _tau_range(self) -> FBTParams:
        if not self.nce_tau_min <= self.nce_tau <= self.nce_tau_max:
            raise ValueError("need nce_tau_min <= nce_tau <= nce_tau_max")
        if not self.pairs or len(set(self.pairs)) != len(self.pairs):
            raise ValueError("pairs must name at least one of ts, tf, fs, each once")
        return self

    @property
    def active_pairs(self) -> list[str]:
        """The pairs that contribute losses: ``pairs``, less (T,F) when ``use_tf`` is off."""
        return [pair for pair in self.pairs if pair != "tf" or self.use_tf]


class DistillParams(Section):
    method: str = "fbt"  # a method of pipeline.distill (METHODS)
    epochs: int | None = Field(25, ge=1)  # None = train.epochs
    lr: float | None = Field(None, gt=0)  # None = train.lr
    kd: KDParams = Field(default_factory=KDParams)
    dkd: DKDParams = Field(default_factory=DKDParams)
    fitnet: FitNetParams = Field(default_factory=FitNetParams)
    ofa: OFAParams = Field(default_factory=OFAParams)
    fbt: FBTParams = Field(default_factory=FBTParams)

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str, info: ValidationInfo) -> str:
        return _known(method, info, "methods", "distillation method")


class TRTParams(Section):
    precision: Literal["fp16", "int8", "fp32"] = "fp16"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32])  # min / opt / max of the profile
    workspace_mb: int = Field(1024, ge=16)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("batch sizes must be positive integers")
        return sorted(v)


class ExportParams(Section):
    """How ``cakd export`` makes and gates the artefacts ``deploy`` asks for."""

    opset: int = Field(18, ge=13)
    atol: float = Field(1e-4, gt=0)  # FP32 parity: max |logit diff| vs PyTorch, per unit of max(1, max |logit|)
    fp16_atol: float = Field(5e-2, gt=0)  # FP16 parity: max |logit diff| (top-1 agreement reported, not required)
    # Activation form of the CPU runtimes' INT8 ONNX: "uint8" (asymmetric) is onnxruntime's fast x86 path;
    # TensorRT's INT8 form is always symmetric int8 with float biases (a separate artefact).
    int8_activations: Literal["uint8", "int8"] = "uint8"
    # Weights in 7 bits (onnxruntime's reduce_range): on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
    # onnxruntime's u8 x s8 kernels add pairs of products into a saturating int16, which 8-bit per-channel
    # weights overflow (a ResNet-10-T on digits kept 74% of FP32's answers; 7 bits: 100%).
    int8_reduce_range: bool = True
    calib_images: int = Field(256, ge=1)
    # The INT8 forms tried for each CPU runtime's own file (export/make/int8_forms.py): each is gated on that
    # runtime at every serving batch size and timed; the fastest that passes ships (docs/INT8_RUNTIMES.md).
    int8_forms: list[Literal["all", "all-8bit", "conv-gemm-matmul", "minus-mishandled", "k-sensitive-float",
                             "nncf"]] = Field(default_factory=lambda: ["all", "all-8bit", "conv-gemm-matmul", "nncf"],
                                              min_length=1)
    int8_sensitive_k: int = Field(2, ge=1)  # k-sensitive-float: the k layers with the largest weight error stay float
    int8_form_runs: int = Field(20, ge=1)  # timing of each passing form: calls per round (batch 1, largest bench batch)
    int8_form_rounds: int = Field(3, ge=1)  # interleaved rounds: each form and FP32 once per round
    int8_max_drop: float = Field(1.0, ge=0)  # INT8 gate: allowed top-1 drop (points) below FP32 on the test set
    int8_min_agreement: float = Field(95.0, ge=0, le=100)  # INT8 gate: % of test images where INT8 top-1 = FP32's
    strict: bool = False  # a rejected INT8 stops `cakd export` (non-zero exit) instead of being recorded
    parity_images: int = Field(256, ge=1)
    golden_images: int = Field(16, ge=1)  # test images in the bundle's golden/ (run.py --self-test)
    triton: bool = False  # also a Triton model repository in the bundle (triton/)
    trt: TRTParams = Field(default_factory=TRTParams)


class QATParams(Section):
    """Quantisation-aware training, a step of ``cakd export`` (``pip install 'cakd[qat]'``: NVIDIA ModelOpt): the
    checkpoint, fake-quantised (symmetric int8 activations, per-channel int8 weights), is fine-tuned under its
    supervisor and exported as a QDQ ONNX that goes through the same INT8 gate as post-training INT8."""

    mode: Literal["auto", "always", "off"] = "auto"  # auto: only when a post-training INT8 form was rejected
    # fp32: the checkpoint itself, unquantised (what the gate compares with); teacher: the one --teacher names
    # (moves the student towards the teacher: on digits it cost 25-50 points of agreement with FP32)
    supervisor: Literal["fp32", "teacher"] = "fp32"
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-5, gt=0)  # low: Adam moves every weight by ~lr a step; at 1e-4 agreement with FP32 fell
    temperature: float = Field(1.0, gt=0)  # of the KD term
    kd_weight: float = Field(1.0, ge=0)  # KL to the supervisor's logits
    ce_weight: float = Field(0.0, ge=0)  # CE on the labels (where FP32 is wrong, it pulls INT8 away from FP32)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, mode: object) -> object:
        """YAML reads a bare ``off`` (``-S qat.mode=off``) as false."""
        return "off" if mode is False else mode


class DeployParams(Section):
    """Where the models will run: ``cakd export`` makes every artefact these runtimes consume in these
    precisions, and ``cakd bench-latency`` times them there."""

    runtimes: list[str] = Field(default_factory=lambda: ["torch", "onnxruntime", "openvino"])  # RUNTIMES' names
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp32", "int8"])

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, names: list[str], info: ValidationInfo) -> list[str]:
        return [_known(name, info, "runtimes", "runtime") for name in names]


class BenchParams(Section):
    """How latency is measured, how each runtime's accuracy is checked, and what the pick deploys."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    warmup: int = Field(5, ge=0)
    runs: int = Field(34, ge=1)  # timed calls per round; p99 is reported once rounds x runs >= 100
    rounds: int = Field(3, ge=1)  # interleaved rounds: every (model, runtime) is timed once per round
    threads: int = Field(2, ge=1)
    openvino_hint: Literal["f32", "bf16", "f16"] = "f32"  # OpenVINO INFERENCE_PRECISION_HINT
    runtime_max_drop: float = Field(1.0, ge=0)  # a runtime's top-1 may fall this far below its reference runtime's
    pick_tolerance: float = Field(1.0, ge=0)  # no budget: the fastest artefact within this of the most accurate
    budget_ms: float | None = Field(None, gt=0)  # the pick: the most accurate artefact whose batch-1 p50 fits
    min_speedup: float | None = Field(2.0, gt=0)  # ... and that runs this many times faster than the teacher
    keep_slower_int8: bool = False  # an INT8 row no faster than its FP32 is never picked, unless this says keep it

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if not sizes or any(b < 1 for b in sizes):
            raise ValueError("batch sizes must be positive integers")
        return sorted(set(sizes))


class MachineParams(Section):
    """How a run uses this machine, never what it computes: no DVC stage lists it, so changing it re-runs
    nothing. No fingerprint hashes it, except that a checkpoint resumes only under the training process count
    (``gpus`` x ``nnodes``) that made it (docs/GPU.md)."""

    threads: int = Field(0, ge=0)  # torch CPU threads; 0 = torch default
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"  # DataLoader processes; auto: docs/GPU.md
    gpus: int = Field(1, ge=1)  # training processes per node (CUDA GPUs; on CPU, gloo processes): >1 runs torchrun
    nnodes: int = Field(1, ge=1)  # nodes of a multi-node training run, each running the same cakd command
    rdzv_endpoint: str = ""  # host:port every node reaches (node 0's) when nnodes > 1




class TargetParams(Section):
    """Figures measured on the deployment target by the bundles' ``run.py`` (see docs/TARGET.md): when named, the
    shortlist ranks and the bench picks from them; when not, both measure on this machine."""

    shortlist: str | None = None  # results of `python run.py --bench --out FILE` in a `cakd shortlist --bundle` folder
    bundle: str | None = None  # that bundle's folder (its manifest's hashes check the results)
    bench: list[str] = Field(default_factory=list)  # export bundles' `run.py --bench --accuracy DIR --out FILE`

    @model_validator(mode="after")
    def _bundle_named(self) -> TargetParams:
        if self.shortlist is not None and self.bundle is None:
            raise ValueError("target.shortlist needs target.bundle: the folder its results were timed from")
        named = [("target.shortlist", self.shortlist, TARGET_SHORTLIST),
                 ("target.bundle", self.bundle, TARGET_SHORTLIST),
                 *(("target.bench", path, TARGET_BENCH) for path in self.bench)]
        for key, path, folder in named:
            if path is not None and not _inside(path, folder):
                raise ValueError(f"{key}: {path} is not inside {folder}/, the folder dvc.yaml lists as its stage's "
                                 "dependency: move it there, so that new results re-run the stage")
        return self


def _inside(path: str, folder: Path) -> bool:
    """A relative path under ``folder`` that stays there (no ``..``), as dvc.yaml's dependency sees it."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    return parts[:len(folder.parts)] == folder.parts and len(parts) > len(folder.parts) and ".." not in parts


STUDENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # whole name (fullmatch): no trailing newline
RESERVED_LABELS = {TEACHER}  # artifacts/export/teacher is the teacher's export


def check_student_names(names: Iterable[str], what: str = "student") -> None:
    """Student names name folders and DVC stages (``baseline@NAME``): letters, digits, '-', '_', not 'teacher'."""
    for name in names:
        if not STUDENT_NAME.fullmatch(name) or name in RESERVED_LABELS:
            raise ValueError(f"{what} name {bounded(repr(name))} must be letters, digits, '-' or '_' and not "
                             f"{'/'.join(sorted(RESERVED_LABELS))} (it names folders)")


class CandidateParams(Section):
    """A student candidate of ``cakd shortlist``: a registered model and its timm kwargs. ``--apply`` copies
    it into ``students:`` as it is (untrained: the shortlist measures latency, which weights do not change)."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str, info: ValidationInfo) -> str:
        return _known(name, info, "models", "model")


class ShortlistParams(Section):
    """``cakd shortlist``: candidate students timed untrained on the target runtime, filtered by a budget."""

    runtime: str = "onnxruntime"  # one of RUNTIMES: where the students will run
    precision: Literal["fp32", "fp16", "int8"] = "fp32"  # int8: post-training, calibrated for latency only
    batch_size: int = Field(1, ge=1)
    budget_ms: float | None = Field(None, gt=0)  # p50 at batch_size on runtime must be <= this
    min_speedup: float | None = Field(2.0, gt=0)  # and/or at least this many times faster than the teacher
    top_k: int = Field(2, ge=1)  # how many ranked candidates the report calls the shortlist
    train_budget_min: float | None = Field(None, gt=0)  # estimated baseline + distillation minutes must be <= this
    calib_images: int = Field(16, ge=1)  # the FP32 parity check's images and INT8's calibration (no accuracy gate)
    jobs: int = Field(1, ge=1)  # exports at once (processes): a machine setting, hashed nowhere, listed by no stage
    candidates: dict[str, CandidateParams]  # params.yaml's grid is the only one (no second copy in code)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, name: str, info: ValidationInfo) -> str:
        return _known(name, info, "runtimes", "runtime")

    @field_validator("candidates")
    @classmethod
    def _usable_names(cls, candidates: dict[str, CandidateParams]) -> dict[str, CandidateParams]:
        if not candidates:
            raise ValueError("name at least one candidate")
        check_student_names(candidates, "candidate")  # --apply makes them student names
        return candidates


class Params(Section):
    seed: int = Field(0, ge=0)
    data: DataParams = Field(default_factory=DataParams)
    teacher: ModelParams
    students: dict[str, StudentParams]  # NAME -> student; each gets its own baseline, distill, eval, export
    train: TrainParams = Field(default_factory=TrainParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    export: ExportParams = Field(default_factory=ExportParams)
    qat: QATParams = Field(default_factory=QATParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    bench: BenchParams = Field(default_factory=BenchParams)
    machine: MachineParams = Field(default_factory=MachineParams)
    shortlist: ShortlistParams | None = None  # cakd shortlist needs it; no other command reads it
    target: TargetParams = Field(default_factory=TargetParams)

    @field_validator("students")
    @classmethod
    def _usable_names(cls, students: dict[str, StudentParams]) -> dict[str, StudentParams]:
        if not students:
            raise ValueError("name at least one student")
        check_student_names(students)
        return students

    def student(self, name: str | None = None) -> Student:
        """The student a command works on: ``--student NAME``, else the first in params.yaml."""
        if name is None:
            name = next(iter(self.students))
        if name not in self.students:
            raise CakdError(f"unknown student {bounded(repr(name))}; params.yaml names: {', '.join(self.students)}")
        return Student(name, self.students[name])


class Student(NamedTuple):
    name: str
    params: StudentParams


def validation_line(err: ValidationError) -> str:
    """The first problem pydantic found, as one bounded line naming the key path."""
    first = err.errors()[0]
    path = bounded(".".join(str(p) for p in first["loc"]) or "(top level)")
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{path}'"
    if kind == "missing":
        return f"missing key '{path}'"
    msg = bounded(first["msg"].removeprefix("Value error, "), 400)
    return f"'{path}': {msg} (got {bounded(repr(first.get('input')))})"
