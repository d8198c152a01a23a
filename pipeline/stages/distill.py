"""``cakd distill``: train the student with a distillation method (``ce`` = the student-alone baseline)."""

from __future__ import annotations

from pathlib import Path

from pipeline.data import build_datasets, build_mixup, load_manifest
from pipeline.distill import build_distiller
from pipeline.fileio import file_hash, write_json
from pipeline.models import load_model, model_from_params
from pipeline.params import Params, fingerprint
from pipeline.training import fit
from pipeline.training.runtime import init_runtime, seed_everything, shutdown
from pipeline.ui import console


def run(params: Params, manifest_path: Path, teacher_path: Path | None, out_dir: Path,
        resume: bool = False, metrics_path: Path | None = None) -> dict:
    """Train ``params.student`` into ``out_dir``; its metrics JSON goes to ``metrics_path`` (default
    out_dir/metrics.json)."""
    method = params.distill.method
    manifest = load_manifest(manifest_path)
    teacher = load_model(teacher_path) if method != "ce" else None
    runtime = init_runtime(params.runtime.threads)
    try:
        train_ds, test_ds = build_datasets(params.data, manifest, params.seed)
        seed_everything(params.seed)
        student = model_from_params(params.student, manifest["num_classes"], params.data.img_size)
        distiller = build_distiller(method, student, teacher, params.distill)
        method_params = getattr(params.distill, method, None)
        run_id = fingerprint(params.student, params.train, params.data, params.seed, method,
                             params.distill.epochs, params.distill.lr, method_params, manifest["content_hash"],
                             file_hash(teacher_path) if teacher is not None else None)
        result = fit(
            distiller, train_ds, test_ds, params.train, out_dir, runtime, seed=params.seed,
            fingerprint=run_id, resume=resume, epochs=params.distill.epochs, lr=params.distill.lr,
            mixup=build_mixup(params.data, manifest["num_classes"]), num_workers=params.runtime.num_workers,
            label=method)
        summary = {
            "method": method,
            "student": params.student.model,
            "teacher": teacher.spec.name if teacher is not None else None,
            "accuracy": result.accuracy.get("student"),
            "assistant_accuracy": result.accuracy.get("assistant"),
            "best_accuracy": result.best_accuracy,
            "epochs": params.distill.epochs or params.train.epochs,
            "seconds_per_epoch": result.seconds_per_epoch,
            "extra_parameters": distiller.num_extra_parameters(),
            "student_parameters": sum(p.numel() for p in student.parameters()),
            "world_size": runtime.world_size,
            "rank_digests": result.rank_digests,
        }
        if runtime.is_main:
            distiller.save_extras(out_dir / "extras.pt")
            write_json(metrics_path or out_dir / "metrics.json", summary)
            console.print(f"{method}: student {params.student.model} test top-1 {summary['accuracy']:.2f}% "
                          f"-> {out_dir / 'model.pt'}")
        return summary
    finally:
        shutdown(runtime)
