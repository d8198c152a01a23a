"""Turn an export folder into a bundle (the last step of ``cakd export``, before the folder is swapped in):
metadata in every ONNX file and in ``export.json``, ``labels.txt``, golden vectors and ``run.py``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ...pipeline.data import load_manifest
from ...pipeline.files.fileio import file_sha256, write_text
from ...pipeline.reporting import profiling
from ...pipeline.settings.params import ExportParams, Params, TRTParams
from .card import model_card
from .golden import write_golden
from .metadata import Origin, bundle_doc, interpolation, stamp_onnx
from .triton import write_repository
from .trt_prepare import write_build_scripts

RUNNER = Path(__file__).with_name("run.py")
CARD = "MODEL_CARD.md"


@dataclass(frozen=True)
class Bundle:
    """What ``cakd export`` knows beyond the artefacts: the data's classes and normalisation, the model's origin,
    the test images the golden vectors come from."""

    origin: Origin
    cfg: ExportParams
    golden_images: int
    trt: TRTParams | None = None  # how to build TensorRT engines on the target (None: TensorRT is not a target)
    triton: bool = False  # a Triton model repository too (export.triton)

    @classmethod
    def of(cls, params: Params, manifest: Path, label: str, trt: bool = False, teacher_run: bool = False) -> Bundle:
        """From params.yaml and the manifest; ``label`` names the model (its export folder's name); ``trt``:
        TensorRT is a target (``--format trt`` or in deploy.runtimes), so each TensorRT artefact gets its build
        script; ``teacher_run``: the checkpoint is the teacher itself (trained with cross-entropy, no teacher)."""
        interpolation()  # a resize Pillow cannot reproduce: refused before anything is made
        data = load_manifest(manifest)
        bench = params.bench
        origin = Origin(classes=[str(c) for c in data["classes"]], mean=list(data["mean"]), std=list(data["std"]),
                        img_size=int(data["img_size"]), data=str(data["source"]),
                        content_hash=data.get("content_hash"), student=label,
                        teacher=None if teacher_run else params.teacher.model,
                        method="ce" if teacher_run else params.distill.method, batch_sizes=list(bench.batch_sizes),
                        bench={"warmup": bench.warmup, "runs": bench.runs, "rounds": bench.rounds})
        trt = trt or "tensorrt" in params.deploy.runtimes
        return cls(origin, params.export, params.export.golden_images, params.export.trt if trt else None,
                   params.export.triton)

    def complete(self, folder: Path, report: dict, test_set: Dataset | None) -> None:
        """Stamp every ONNX artefact, write labels.txt, golden/ (when there is a test set) and run.py; the
        report gains the ``bundle`` document (what run.py reads) and each entry its new size and sha256."""
        with profiling.phase("bundle"):
            doc = bundle_doc(self.origin, report)
            for kind, entry in doc["artefacts"].items():
                stamp_onnx(folder / entry["file"], doc, kind)
                path, recorded = folder / entry["file"], report["artefacts"][kind]
                recorded["size_bytes"] = path.stat().st_size
                if "sha256" in recorded:  # the bench checks the file it is given is the one stamped here
                    recorded["sha256"] = file_sha256(path)
            if self.trt is not None:
                doc["tensorrt"] = {"scripts": write_build_scripts(folder, doc["artefacts"], self.trt,
                                                                  self.origin.img_size, doc["input"]["channels"]),
                                   "batch_sizes": self.trt.batch_sizes}
            if self.triton:
                doc["triton"] = {"repository": "triton", "models": write_repository(
                    folder, doc, self.trt.batch_sizes if self.trt is not None else None)}
            write_text(folder / "labels.txt", "".join(f"{name}\n" for name in doc["classes"]))
            if test_set is not None:
                write_golden(folder, doc, test_set, self.golden_images, self.cfg, self.origin.batch_sizes)
            shutil.copyfile(RUNNER, folder / RUNNER.name)
            report["bundle"] = doc
            write_text(folder / CARD, model_card(report, None, len(test_set) if test_set is not None else None))
