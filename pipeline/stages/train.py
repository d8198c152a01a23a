"""``cakd train-teacher`` and ``cakd distill``: one stage that trains a model by its role.

The teacher is trained alone (``ce``), fine-tuned from weights it already has, or used as is
(``train.epochs: 0``); a student is trained with ``distill.method`` (``ce`` = the student-alone baseline),
with the teacher only when the method says it needs one. Accuracies are named by role on the console and
in dvclive (``acc_teacher``, ``acc_student``, FBT's ``acc_assistant``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from ..data import build_datasets, build_mixup, load_manifest, resolve_workers
from ..distill import METHODS, Distiller, build_distiller
from ..errors import CakdError
from ..files.fileio import file_sha256, write_json
from ..models import ModelSource, StagedModel, load_model, model_from_params
from ..reporting import profiling
from ..reporting.ui import console
from ..settings.fingerprint import fingerprint
from ..settings.params import ModelParams, Params, Student
from ..training import FitResult, fit
from ..training.placement import Placement, place, seed_everything, shutdown

Role = Literal["teacher", "student"]


@dataclass(frozen=True)
class Plan:
    """What a role trains, and how: the model's params section, the method, the budget, the fingerprint parts."""

    role: Role
    section: ModelParams
    method: str
    epochs: int
    lr: float | None
    label: str  # the console's name for the run
    run_parts: tuple  # settings that make a checkpoint resumable (besides the data and the starting weights)


def plan_for(role: Role, params: Params, student: Student | None = None) -> Plan:
    if role == "teacher":
        return Plan(role, params.teacher, "ce", params.train.epochs, None, "teacher",
                    (params.teacher, params.train, params.data, params.seed))
    method = params.distill.method
    student = student or params.student()
    epochs = next(e for e in (student.params.epochs, params.distill.epochs, params.train.epochs) if e is not None)
    if epochs == 0:
        raise CakdError("a student needs at least one epoch: set distill.epochs (train.epochs: 0 only means "
                        "'use the teacher as is')")
    method_params = getattr(params.distill, method, None)
    return Plan(role, student.params, method, epochs, params.distill.lr, method,
                (student.params, params.train, params.data, params.seed, method, params.distill.epochs,
                 params.distill.lr, method_params))


def teacher_for(plan: Plan, teacher_path: Path | None, expected: str) -> StagedModel | None:
    """The trained teacher a student's method learns from; None when the method does not need one. A model
    other than params.yaml's ``teacher.model`` (a student's checkpoint given by mistake) is said in one line."""
    if plan.role == "teacher" or not METHODS[plan.method].needs_teacher:
        return None
    if teacher_path is None:
        raise CakdError(f"distillation method '{plan.method}' needs a teacher: pass --teacher PATH")
    teacher = load_model(teacher_path)
    if teacher.spec.name != expected:
        console.print(f"warning: --teacher {teacher_path} is a {teacher.spec.name}, not params.yaml's teacher.model "
                      f"{expected}: distilling from it as the teacher", markup=False)
    return teacher


def run(role: Role, params: Params, manifest_path: Path, out_dir: Path, teacher_path: Path | None = None,
        resume: bool = False, metrics_path: Path | None = None, student: Student | None = None) -> dict:
    """Train ``role`` (for a student: ``student``, default the first) into ``out_dir``; its metrics JSON goes to
    ``metrics_path`` (default out_dir/metrics.json)."""
    profiling.mark_ready()
    plan = plan_for(role, params, student)
    manifest = load_manifest(manifest_path)
    teacher = teacher_for(plan, teacher_path, params.teacher.model)
    placement = place(params.machine.threads)
    try:
        with profiling.phase("data"):
            train_ds, test_ds = build_datasets(params.data, manifest, params.seed)
        seed_everything(params.seed)
        model, source = model_from_params(plan.section, manifest["num_classes"], params.data.img_size)
        if plan.epochs == 0 and source.file is None:
            raise CakdError(f"train.epochs: 0 uses the {role} as is, but {plan.section.model} has no weights: set "
                            f"{role}.weights, {role}.pretrained or {role}.checkpoint")
        if placement.is_main and source.report:
            console.print(source.report)
        distiller = build_distiller(plan.method, model, teacher, params.distill)
        # Several processes draw each step's images as one does, but BatchNorm sees each process's share:
        # a checkpoint resumes only under the process count that made it (one process: the key it always had).
        processes = (placement.world_size,) if placement.distributed else ()
        run_id = fingerprint(*plan.run_parts, manifest["content_hash"], source.sha256,
                             file_sha256(teacher_path) if teacher is not None else None, *processes)
        result = fit(distiller, train_ds, test_ds, params.train, out_dir, placement, seed=params.seed,
                     fingerprint=run_id, resume=resume, epochs=plan.epochs, lr=plan.lr,
                     mixup=build_mixup(params.data, manifest["num_classes"]),
                     num_workers=resolve_workers(params.machine.num_workers, train_ds, placement.local_world),
                     role=role, label=plan.label)
        summary = summarise(plan, params, result, distiller, source, placement)
        if placement.is_main:
            if role == "student":
                distiller.save_extras(out_dir / "extras.pt")
            write_json(metrics_path or out_dir / "metrics.json", summary)
            prefix = f"{plan.label}: " if plan.label != role else ""
            console.print(f"{prefix}{role} {plan.section.model} test top-1 {summary['accuracy']:.2f}% "
                          f"-> {out_dir / 'model.pt'}")
        return summary
    finally:
        shutdown(placement)


def summarise(plan: Plan, params: Params, result: FitResult, distiller: Distiller, source: ModelSource,
              placement: Placement) -> dict:
    """metrics.json: accuracy and cost for every role; the teacher's source, or the student's method."""
    common = {
        "accuracy": result.accuracy.get(plan.role),
        "best_accuracy": result.best_accuracy,
        "epochs": plan.epochs,
        "seconds_per_epoch": result.seconds_per_epoch,
        "world_size": placement.world_size,
        "effective_batch_size": params.train.batch_size,  # the global batch, split over the processes
        "recipe": result.recipe,
        "gpu_memory_mb": (round(torch.cuda.max_memory_allocated(placement.device) / 2**20)
                          if placement.device.type == "cuda" else None),  # this process's peak
        "rank_digests": result.rank_digests,
    }
    if plan.role == "teacher":
        teacher_source = {"file": source.file, "sha256": source.sha256, "timm_name": plan.section.model,
                          "fine_tuned": plan.epochs > 0}
        return {"model": plan.section.model, **common, "teacher_source": teacher_source}
    student = distiller.student
    return {
        "method": plan.method,
        "student": plan.section.model,
        "teacher": distiller.teacher.spec.name if distiller.teacher is not None else None,
        "assistant_accuracy": result.accuracy.get("assistant"),
        **common,
        "extra_parameters": distiller.num_extra_parameters(),
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "student_source": {k: v for k, v in asdict(source).items() if k != "report"},
    }
