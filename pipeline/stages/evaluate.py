"""``cakd evaluate``: test-set report for one student: teacher, its baseline, the distilled student, the assistant.

Writes the metrics JSON (what ``dvc metrics show`` and ``dvc exp show`` read: top-1/top-5/ECE per model
and the distillation gain over the baseline; the pipeline puts it under git-tracked ``reports/``), and
into ``out_dir`` ``report.json`` (per-class accuracy, confusion matrices), ``confusion_<model>.png`` and
``predictions.csv`` (the distilled student's, for ``dvc plots`` confusion).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # picks the Agg backend by itself on a machine without a display
import numpy as np
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from ..data import build_datasets, load_manifest, resolve_workers
from ..distill import load_assistant
from ..files.fileio import atomic_path, write_json, write_text
from ..models import load_model
from ..reporting import profiling
from ..reporting.metrics import classification_report, predict
from ..reporting.ui import console
from ..settings.params import Params, Student


def plot_confusion(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(classes), 0.8 + 0.45 * len(classes)), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
           title=title)
    ax.set_xticklabels(classes, rotation=90, fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    if len(classes) <= 20:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(params: Params, chosen: Student, manifest_path: Path, teacher: Path, baseline: Path, student: Path,
        extras: Path | None, out_dir: Path, metrics_path: Path) -> dict:
    profiling.mark_ready()
    manifest = load_manifest(manifest_path)
    classes = [str(c) for c in manifest["classes"]]
    with profiling.phase("data"):
        _, test_ds = build_datasets(params.data, manifest, params.seed, train_augment=False)
    loader = DataLoader(test_ds, batch_size=256, num_workers=resolve_workers(params.machine.num_workers, test_ds))

    models: dict[str, nn.Module] = {"teacher": load_model(teacher), "baseline": load_model(baseline),
                                    "student": load_model(student)}
    assistant = load_assistant(extras, models["teacher"], models["student"]) if extras is not None else None
    if assistant is not None:
        models["assistant"] = assistant

    metrics: dict[str, dict | float] = {}
    report: dict[str, dict] = {}
    for name, model in models.items():
        with profiling.phase("evaluation"):
            probs, labels = predict(model, loader)
            rep = classification_report(probs, labels, classes)
        metrics[name] = {k: round(rep[k], 4) for k in ("top1", "top5", "ece")}
        report[name] = rep
        with profiling.phase("reports"):
            plot_confusion(np.array(rep["confusion"]), classes, f"{name} (top-1 {rep['top1']:.2f}%)",
                           out_dir / f"confusion_{name}.png")
        if name == "student":
            rows = "\n".join(f"{classes[a]},{classes[p]}" for a, p in zip(labels, probs.argmax(1), strict=True))
            write_text(out_dir / "predictions.csv", "actual,predicted\n" + rows + "\n")
    metrics["gain_over_baseline"] = round(metrics["student"]["top1"] - metrics["baseline"]["top1"], 4)
    metrics["gap_to_teacher"] = round(metrics["teacher"]["top1"] - metrics["student"]["top1"], 4)
    write_json(out_dir / "report.json", report)
    write_json(metrics_path, metrics)

    table = Table(title=f"student {chosen.name} ({chosen.params.model}), test set: "
                  f"{manifest['counts']['test']} images, {len(classes)} classes")
    for col in ("model", "top-1 %", "top-5 %", "ECE %"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name in models:
        m = metrics[name]
        table.add_row(name, f"{m['top1']:.2f}", f"{m['top5']:.2f}", f"{m['ece']:.2f}")
    console.print(table)
    console.print(f"distillation gain over the student alone: {metrics['gain_over_baseline']:+.2f} points")
    return metrics
