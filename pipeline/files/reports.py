"""The files cakd wrote and reads back (``reports/*.json``, ``export.json``, the data manifest), each checked
against its schema when it is read.

These files are edited by hand, copied between machines and received from targets: they are input like any
other. A report is read through the bounded JSON reader (``fileio.read_json``), then validated here in strict
mode (a ``"97.5"`` string is not a number), so a wrong shape is one line naming the file and the field
instead of a traceback in whatever code touched the field first. Extra keys are allowed: a newer cakd may
record more. The readers return the file's own dict, so the stages index it as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import CakdError
from ..settings.params import ImgSize, InChans, NumClasses, validation_line
from .fileio import MAX_MANIFEST_BYTES, MAX_REPORT_BYTES, bounded, file_sha256, read_json

NonNegative = Annotated[int, Field(ge=0)]


class Report(BaseModel):
    """Strict types (JSON gives exactly int, float, str, bool, list and dict), extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow")


def read_report(path: str | Path, schema: type[Report], what: str, hint: str,
                limit: int = MAX_REPORT_BYTES) -> dict:
    """The file's JSON object once it fits ``schema``; else one line: ``what path: 'field': problem (hint)``."""
    path = Path(path)
    data = read_json(path, what, limit)
    if not isinstance(data, dict):
        raise CakdError(f"{what} {path} is not a JSON object (it holds {bounded(repr(data), 60)}) ({hint})")
    try:
        schema.model_validate(data)
    except ValidationError as err:
        raise CakdError(f"{what} {path}: {_problem(err)} ({hint})") from None
    return data


def _problem(err: ValidationError) -> str:
    """The first problem in the words of the file: a check across keys quotes no whole report, and pydantic's
    schema class names ("or instance of Scores") are left out."""
    first = err.errors()[0]
    if not first["loc"]:
        return bounded(first["msg"].removeprefix("Value error, "), 400)
    return re.sub(r" or instance of \w+", "", validation_line(err))


# --- training and evaluation -------------------------------------------------------------------------------

class TeacherSource(Report):
    file: str | None = None
    sha256: str | None = None
    timm_name: str | None = None
    fine_tuned: bool = False


class TrainingReport(Report):
    """``reports/teacher.json`` (``cakd train-teacher``'s metrics): what ``cakd summary`` restates."""

    model: str
    accuracy: float
    teacher_source: TeacherSource | None = None


class Scores(Report):
    top1: float
    top5: float | None = None
    ece: float | None = None


class EvalReport(Report):
    """``reports/students/NAME/eval.json`` (``cakd evaluate``)."""

    teacher: Scores
    baseline: Scores
    student: Scores
    assistant: Scores | None = None
    gain_over_baseline: float


def read_teacher_report(path: Path) -> dict:
    return read_report(path, TrainingReport, "teacher metrics", "re-run cakd train-teacher")


def read_eval_report(path: Path, student: str) -> dict:
    return read_report(path, EvalReport, f"evaluation of student {student}", "re-run cakd evaluate")


# --- export.json ---------------------------------------------------------------------------------------------

def plain_name(name: str) -> str:
    """An artefact is a file directly inside its export folder: a path (``../x``, ``/etc/passwd``, ``a/b``) in
    export.json would make the bench open and time a file of another folder under this folder's name."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError("must be a plain file name inside the export folder")
    return name


class Parity(Report):
    max_abs_diff: float
    top1_agreement: float
    images: int | None = None


class Gate(Report):
    top1: float
    drop: float
    agreement: float
    images: int


class HowTrained(Report):
    epochs: int | None = None
    library: str
    version: str


class ArtefactEntry(Report):
    file: Annotated[str, AfterValidator(plain_name)] | None
    status: Literal["ok", "rejected", "skipped"]
    reason: str | None = None
    size_bytes: NonNegative | None = None
    sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None = None
    parity: Parity | None = None
    gate: Gate | None = None
    qat: HowTrained | None = None

    @model_validator(mode="after")
    def _file_or_reason(self) -> ArtefactEntry:
        if self.status == "ok" and self.file is None:
            raise ValueError("an artefact whose status is ok names its file")
        if self.status != "ok" and self.reason is None:
            raise ValueError(f"a {self.status} artefact gives its reason")
        return self


class ExportedModel(Report):
    name: str | None = None
    img_size: ImgSize
    in_chans: InChans = 3
    num_classes: NumClasses


class ExportReport(Report):
    """``export.json``: the model's shape and, per artefact, its file or why there is none."""

    checkpoint_sha256: str | None = None
    model: ExportedModel
    artefacts: dict[str, ArtefactEntry]

    @model_validator(mode="after")
    def _int8_gated(self) -> ExportReport:
        """An INT8 file ships only through its gate: an ``ok`` one without the gate's numbers is not cakd's."""
        for kind, entry in self.artefacts.items():
            if kind.startswith("onnx-int8") and entry.status == "ok" and entry.gate is None:
                raise ValueError(f"artefact {kind} is ok but gives no gate")
        return self


def read_export_report(path: Path) -> dict:
    return read_report(path, ExportReport, "export report", "re-run cakd export")


def artefact_file(folder: Path, entry: dict, report: Path) -> Path:
    """The file an ``ok`` entry names, checked before anything opens it: a regular file (a link to one is
    followed: DVC may check files out as links) directly inside ``folder``."""
    path = folder / entry["file"]
    if not path.exists():
        raise CakdError(f"{report} names a file that is gone: {path} (re-run cakd export)")
    if not path.is_file():
        raise CakdError(f"{report} names {path}, which is not a regular file: refused")
    return path


def check_sha256(path: Path, entry: dict, report: Path) -> None:
    """A file whose content is not what export.json recorded (replaced, truncated, another model's) is
    refused: the bench would time it under this model's name."""
    recorded = entry.get("sha256")
    if recorded is not None and file_sha256(path) != recorded:
        raise CakdError(f"{path} is not the file {report} recorded (its sha256 differs): re-run cakd export")


# --- the data manifest ---------------------------------------------------------------------------------------

# JSON has no tuples: the pair is a list, taken as a tuple without loosening its items' strict types
FileEntry = Annotated[tuple[str, NonNegative], Field(strict=False)]


class Split(Report):
    indices: list[NonNegative] | None = None  # in-memory sources: positions in the source's own split
    files: list[FileEntry] | None = None  # image folders: (path under data.root, label)

    @model_validator(mode="after")
    def _one_form(self) -> Split:
        if self.indices is None and self.files is None:
            raise ValueError("a split lists its 'indices' or its 'files'")
        return self


class Splits(Report):
    train: Split
    test: Split


class Manifest(Report):
    source: str
    params: dict[str, Any]
    seed: int
    classes: list[str]
    num_classes: NumClasses
    img_size: ImgSize
    mean: list[float]
    std: list[float]
    counts: dict[str, NonNegative]
    content_hash: str
    splits: Splits


def read_manifest(path: Path) -> dict:
    """The manifest once its schema passes and its labels and classes agree."""
    manifest = read_report(path, Manifest, "data manifest", "re-run `cakd prepare`", MAX_MANIFEST_BYTES)
    classes, count = manifest["classes"], manifest["num_classes"]
    if len(classes) != count:
        raise CakdError(f"data manifest {path} names {len(classes)} classes but its num_classes is {count}: "
                        "re-run `cakd prepare`")
    for split in ("train", "test"):
        problem = _bad_file(manifest["splits"][split].get("files") or [], count)
        if problem is not None:
            index, why = problem
            raise CakdError(f"data manifest {path}: 'splits.{split}.files.{index}': {why}: re-run `cakd prepare`")
    return manifest


def _bad_file(files: list[list], count: int) -> tuple[int, str] | None:
    """The first entry whose path is not under ``data.root`` (``/etc/shadow``, ``../x`` would be read as an
    image) or whose label is not a class, and why; one pass, as a manifest may list a million files."""
    for i, (name, label) in enumerate(files):
        if (not name or name[0] == "/" or "\\" in name or "\0" in name
                or (".." in name and ".." in name.split("/"))):
            return i, f"{bounded(repr(name))} is not a path inside data.root"
        if label >= count:
            return i, f"label {label} is not one of the {count} classes"
    return None
