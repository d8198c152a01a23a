"""``cakd train-teacher``: train (or fine-tune) the teacher with the shared loop."""

from __future__ import annotations

from pathlib import Path

from pipeline.data import build_datasets, build_mixup, load_manifest
from pipeline.distill import build_distiller
from pipeline.fileio import write_json
from pipeline.models import model_from_params
from pipeline.params import Params, fingerprint
from pipeline.training import fit
from pipeline.training.runtime import init_runtime, seed_everything, shutdown
from pipeline.ui import console


def run(params: Params, manifest_path: Path, out_dir: Path, resume: bool = False,
        metrics_path: Path | None = None) -> dict:
    """Train the teacher into ``out_dir``; its metrics JSON goes to ``metrics_path`` (default out_dir/metrics.json)."""
    manifest = load_manifest(manifest_path)
    runtime = init_runtime(params.runtime.threads)
    try:
        train_ds, test_ds = build_datasets(params.data, manifest, params.seed)
        seed_everything(params.seed)
        teacher = model_from_params(params.teacher, manifest["num_classes"], params.data.img_size)
        trainer = build_distiller("ce", teacher, None, params.distill)
        result = fit(
            trainer, train_ds, test_ds, params.train, out_dir, runtime, seed=params.seed,
            fingerprint=fingerprint(params.teacher, params.train, params.data, params.seed, manifest["content_hash"]),
            resume=resume, mixup=build_mixup(params.data, manifest["num_classes"]),
            num_workers=params.runtime.num_workers, label="teacher")
        summary = {
            "model": params.teacher.model,
            "accuracy": result.accuracy.get("student"),
            "best_accuracy": result.best_accuracy,
            "epochs": params.train.epochs,
            "seconds_per_epoch": result.seconds_per_epoch,
            "world_size": runtime.world_size,
            "effective_batch_size": params.train.batch_size * runtime.world_size,
            "rank_digests": result.rank_digests,
        }
        if runtime.is_main:
            write_json(metrics_path or out_dir / "metrics.json", summary)
            console.print(f"teacher {params.teacher.model}: test top-1 {summary['accuracy']:.2f}% "
                          f"-> {out_dir / 'model.pt'}")
        return summary
    finally:
        shutdown(runtime)
