"""The ``cakd`` command line: one subcommand per pipeline stage, each reading params.yaml.

Every subcommand takes ``--params PATH`` and repeatable ``-S key.path=value`` overrides (the same
spelling as ``dvc exp run -S``). Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .errors import CakdError
from .files import layout
from .files.fileio import bounded, check_out_dir
from .reporting import profiling
from .settings.loading import load_params
from .settings.params import KnownNames, Params

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Cross-architecture knowledge distillation: prepare, train, distill, evaluate, export.")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-S", help="override: key.path=value")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="continue from out/checkpoint.pt if it fits")]
StudentOption = Annotated[str | None, typer.Option("--student", help="which of params.yaml's students "
                                                   "(default: the first)")]
MetricsOption = Annotated[Path | None, typer.Option("--metrics", help="where the run's metrics JSON goes "
                                                    "(default: OUT/metrics.json)")]
DATA = layout.MANIFEST


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"cakd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print cakd's version and exit")] = False) -> None:
    """Options that come before the command (``cakd --version``)."""


def known_names() -> KnownNames:
    """The names params.yaml may use, from their owners: models, distillation methods, data sources, runtimes."""
    from ..export.runtimes import RUNTIMES
    from .data import available_sources
    from .distill import METHODS
    from .models import available_models

    return {"models": available_models(), "methods": list(METHODS), "datasets": available_sources(),
            "runtimes": list(RUNTIMES)}


def _params(path: Path, overrides: list[str] | None) -> Params:
    return load_params(path, overrides or [], known_names())


def _outputs(folder: Path, file: Path | None) -> None:
    """An output folder and a file path that must both be writable as such: one line now, not after the work."""
    check_out_dir(folder)
    if file is not None:
        check_out_dir(file.parent, "folder")
        if file.is_dir():
            raise CakdError(f"{file} is a folder; give a file path")


@app.command()
def prepare(params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
            out: Path = layout.DATA_DIR) -> None:
    """Scan and validate the dataset; write the manifest later stages read."""
    from .stages import prepare as stage

    cfg = _params(params, set_)
    check_out_dir(out)
    stage.run(cfg, out)


@app.command("train-teacher")
def train_teacher(params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
                  data: Path = DATA, out: Path = layout.TEACHER_DIR, metrics: MetricsOption = None,
                  resume: ResumeOption = False) -> None:
    """Train, fine-tune or take as is (train.epochs: 0) the teacher; several processes (DDP) with machine.gpus."""
    from .stages import train as stage
    from .training.launch import relaunch_if_asked

    cfg = _params(params, set_)
    _outputs(out, metrics)
    relaunch_if_asked(cfg.machine)
    stage.run("teacher", cfg, data, out, resume=resume, metrics_path=metrics or out / "metrics.json")


@app.command()
def distill(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, student: StudentOption = None,
            data: Path = DATA, teacher: Path = layout.TEACHER_MODEL,
            out: Annotated[Path | None, typer.Option(help="default: artifacts/students/NAME/distill "
                                                     "(baseline with --method ce)")] = None,
            method: Annotated[str | None, typer.Option(help="override distill.method")] = None,
            metrics: MetricsOption = None, resume: ResumeOption = False) -> None:
    """Distill the teacher into the student (method 'ce' trains the student alone: the baseline)."""
    from .stages import train as stage
    from .training.launch import relaunch_if_asked

    overrides = list(set_ or []) + ([f"distill.method={method}"] if method else [])
    cfg = _params(params, overrides)
    chosen = cfg.student(student)
    out = out or layout.student_dir(chosen.name, "baseline" if method == "ce" else "distill")
    _outputs(out, metrics)
    relaunch_if_asked(cfg.machine)
    stage.run("student", cfg, data, out, teacher, resume=resume, metrics_path=metrics or out / "metrics.json",
              student=chosen)


@app.command()
def evaluate(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, student: StudentOption = None,
             data: Path = DATA, teacher: Path = layout.TEACHER_MODEL,
             baseline: Annotated[Path | None, typer.Option(help="default: artifacts/students/NAME/baseline/"
                                                           "model.pt")] = None,
             distilled: Annotated[Path | None, typer.Option(help="default: artifacts/students/NAME/distill/"
                                                            "model.pt")] = None,
             extras: Annotated[Path | None, typer.Option(help="the distill run's extras.pt: its FBT assistant "
                                                         "is evaluated too")] = None,
             out: Annotated[Path | None, typer.Option(help="default: artifacts/students/NAME/eval")] = None,
             metrics: MetricsOption = None) -> None:
    """Top-1/top-5, per-class accuracy, calibration and confusion matrices; the gain over the baseline."""
    from .stages import evaluate as stage

    cfg = _params(params, set_)
    chosen = cfg.student(student)
    out = out or layout.student_dir(chosen.name, "eval")
    _outputs(out, metrics)
    stage.run(cfg, chosen, data, teacher, baseline or layout.student_dir(chosen.name, "baseline") / "model.pt",
              distilled or layout.student_dir(chosen.name, "distill") / "model.pt", extras, out,
              metrics or out / "metrics.json")


class ExportFormat(str, Enum):
    onnx = "onnx"
    trt = "trt"


@app.command()
def export(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, student: StudentOption = None,
           data: Path = DATA,
           checkpoint: Annotated[Path | None, typer.Option(help="default: the student's distilled model.pt")]
           = None,
           out: Annotated[Path | None, typer.Option(help="default: artifacts/export/NAME (trt: artifacts/trt/NAME)")]
           = None,
           format_: Annotated[ExportFormat, typer.Option("--format", help=(
               "onnx, or trt: also the TensorRT engine (exit 0), or without TensorRT here its build scripts "
               "for the target (exit 3)"))]
           = ExportFormat.onnx,
           precision: Annotated[list[str] | None, typer.Option(
               "--precision", help="fp32, fp16, int8; repeatable (default: deploy.precisions)")] = None,
           strict: Annotated[bool, typer.Option("--strict", help="a runtime left without an INT8 that passed its "
                                                "gate is an error, not a note in export.json (export.strict)")]
           = False,
           teacher: Annotated[Path | None, typer.Option(help="supervises quantisation-aware training with "
                                                         "qat.supervisor: teacher (else the FP32 model itself)")]
           = None,
           triton: Annotated[bool, typer.Option("--triton", help="also a Triton model repository in the bundle "
                                                "(export.triton)")] = False,
           qat_dir: Annotated[Path | None, typer.Option(help="quantisation-aware training's resumable state "
                                                         "(default: artifacts/students/NAME/qat, or qat/ next to "
                                                         "--checkpoint)")] = None) -> None:
    """Export a checkpoint: every artefact deploy.runtimes consume (ONNX, FP16, INT8, TensorRT's INT8, and the
    quantisation-aware INT8 when qat.mode asks for it), gated."""
    from .stages import export as stage

    overrides = list(set_ or []) + (["export.strict=true"] if strict else []) + (["export.triton=true"] if triton
                                                                                  else [])
    if precision:
        overrides.append(f"deploy.precisions=[{','.join(precision)}]")
    cfg = _params(params, overrides)
    name = cfg.student(student).name
    if checkpoint is None:
        checkpoint = layout.student_dir(name, "distill") / "model.pt"
        qat_dir = qat_dir or layout.student_dir(name, "qat")
    out = out or layout.export_dir(name, layout.TRT_EXPORTS if format_ is ExportFormat.trt else layout.EXPORTS)
    check_out_dir(out)
    report = stage.run(cfg, checkpoint, data, out, format_.value, list(cfg.deploy.precisions), teacher, qat_dir)
    if report.get("tensorrt", {}).get("status") == "prepared":
        raise typer.Exit(3)  # exported, engine to build on the target: a release script can tell the two apart


@app.command("bench-latency")
def bench_latency(models: Annotated[list[str] | None, typer.Argument(
                      help="[LABEL=]PATH items: cakd export folders, checkpoints (.pt) or ONNX files; LABEL names "
                           "the model in every row (default: the pipeline's exports of the teacher and every "
                           "student of params.yaml)")] = None,
                  params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
                  data: Annotated[Path | None, typer.Option(help="manifest.json: adds accuracy and Pareto plot")]
                  = None,
                  out: Path = layout.BENCH_DIR,
                  budget_ms: Annotated[float | None, typer.Option(help="per runtime, pick the most accurate "
                                                                  "artefact whose batch-1 p50 fits (bench.budget_ms)")]
                  = None,
                  target_results: Annotated[list[Path] | None, typer.Option(
                      "--target-results", metavar="FILE", help="an export bundle's `run.py --bench --accuracy DIR "
                      "--out FILE` from a target (named by FILE's name): its rows join the bench and get their own "
                      "picks")] = None
                  ) -> None:
    """Latency (p50/p90/p99), throughput, size and accuracy of several models on every runtime; what to deploy."""
    from .stages import bench as stage

    overrides = list(set_ or []) + ([f"bench.budget_ms={budget_ms}"] if budget_ms is not None else [])
    cfg = _params(params, overrides)
    pipeline_exports = [f"{name}={layout.export_dir(name)}" for name in (layout.TEACHER, *cfg.students)]
    check_out_dir(out)
    stage.run(cfg, models or pipeline_exports, out, data, target_results or [Path(p) for p in cfg.target.bench])


@app.command()
def shortlist(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, data: Path = DATA,
              out: Annotated[Path, typer.Option(help="folder of the latency-vs-GFLOPs plot (exports are made and "
                                                "removed in it)")] = layout.SHORTLIST_DIR,
              metrics: Annotated[Path, typer.Option(help="the shortlist JSON")] = layout.SHORTLIST_REPORT,
              apply: Annotated[int | None, typer.Option("--apply", metavar="K", help="write the top K candidates "
                                                        "into params.yaml's students: (then dvc repro trains them)")]
              = None,
              from_: Annotated[Path | None, typer.Option("--from", help="a shortlist JSON measured before (e.g. by "
                                                         "dvc repro shortlist): print and apply it, measure nothing")]
              = None,
              bundle: Annotated[Path | None, typer.Option("--bundle", metavar="DIR", help="write the candidates and "
                                                          "the teacher, untrained, with run.py, to DIR to time on the "
                                                          "target (python run.py --bench --out results.json)")]
              = None,
              from_target: Annotated[Path | None, typer.Option("--from-target", metavar="RESULTS", help="rank from "
                                                               "the results run.py measured on the target from "
                                                               "--bundle DIR's bundle")] = None) -> None:
    """Time untrained candidate students on the target runtime against a latency budget; rank them; --apply K."""
    from .stages import shortlist as stage

    known = known_names()
    cfg = load_params(params, set_ or [], known)
    if cfg.target.shortlist is not None and bundle is None and from_target is None and from_ is None:
        from_target, bundle = Path(cfg.target.shortlist), Path(cfg.target.bundle)  # params.yaml's target: section
    if from_target is not None and (bundle is None or from_ is not None):
        raise CakdError("--from-target RESULTS needs --bundle DIR (the bundle it was timed from) and no --from")
    if bundle is not None and from_target is None:
        if apply is not None or from_ is not None:
            raise CakdError("--bundle DIR only writes the bundle: rank and --apply with --from-target RESULTS")
        stage.write_target_bundle(cfg, data, bundle)
        return
    _outputs(out, metrics)
    stage.run(cfg, data, out, metrics, params, apply=apply, from_report=from_, known=known,
              target=None if from_target is None else (from_target, bundle))


@app.command()
def summary(params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
            reports: Annotated[Path, typer.Option(help="reports/ folder: teacher.json, students/NAME/eval.json")]
            = layout.REPORTS,
            exports: Annotated[Path, typer.Option(help="folder of the export/NAME folders")] = layout.EXPORTS,
            bench: Path = layout.BENCH_JSON, out: Path = layout.SUMMARY) -> None:
    """The pipeline's closing table: per student accuracy, gain, parity and INT8; what to deploy per runtime."""
    from .stages import summary as stage

    # it only restates reports: params' names need no check here, and checking them imports every owner (~4 s)
    students = {name: student.model for name, student in load_params(params, set_ or []).students.items()}
    _outputs(out.parent, out)
    stage.run(students, reports, exports, bench, out)


@app.command("model-card")
def model_card(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, student: StudentOption = None,
               data: Path = DATA,
               export_dir: Annotated[Path | None, typer.Option("--export", help="default: artifacts/export/NAME")]
               = None,
               bench: Path = layout.BENCH_JSON,
               out: Annotated[Path | None, typer.Option(help="default: reports/cards/NAME.md")] = None) -> None:
    """MODEL_CARD.md of a student's export with the bench's accuracy and latency per runtime (after the bench)."""
    from .stages import card as stage

    name = _params(params, list(set_ or [])).student(student).name
    stage.run(export_dir or layout.export_dir(name), bench, data, out or layout.REPORTS / "cards" / f"{name}.md")


def main() -> None:
    try:
        app()
    except CakdError as err:
        # Raised inside a DataLoader worker, the message carries the worker's traceback: keep the last line.
        _fail(str(err).rsplit("CakdError: ", 1)[-1].strip(), err.exit_code)
    except KeyboardInterrupt:
        print("cakd: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # a full disk, a read-only or unreadable folder, a file where a folder should be
        _fail(os_error_line(err), 2)
    except RecursionError:
        _fail("the input is nested too deeply to process (RecursionError)", 2)
    except MemoryError:
        _fail("out of memory: an input asks for more memory than this machine gives (MemoryError)", 2)


def os_error_line(err: OSError) -> str:
    """``No space left on device (ENOSPC): artifacts/x.json``: what failed, its errno name and the path."""
    name = errno.errorcode.get(err.errno or 0)
    reason = (err.strerror or bounded(str(err)) or type(err).__name__) + (f" ({name})" if name else "")
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    return f"{reason}: {paths}" if paths else reason


def _printable(ch: str) -> str:
    if ch.isprintable():
        return ch
    if 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte of a non-UTF-8 file name (Python's surrogateescape)
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return ch.encode("unicode_escape", "backslashreplace").decode("ascii")


MAX_MESSAGE = 2000  # characters of an error line; a longer message is cut (it quotes something hostile)


def _fail(message: str, code: int) -> None:
    """Print ``cakd: error: ...`` as one printable line of bounded length and exit with ``code``: control
    characters (a newline in a file name) are escaped, undecodable bytes of a file name shown as ``\\xNN``."""
    line = "".join(map(_printable, message))
    if len(line) > MAX_MESSAGE:
        line = line[:MAX_MESSAGE] + f"... ({len(line):,} characters)"
    print(f"cakd: error: {line}", file=sys.stderr)
    sys.exit(code)


def run() -> None:
    """The ``cakd`` executable: ``main``, then an exit without the interpreter's teardown.

    Tearing down torch, torchvision and timm takes 1-2 s per process, paid once per stage of every
    ``dvc repro``. Every file cakd writes is complete (closed and renamed into place) before ``main``
    returns, and no cakd state needs an exit handler, so only the standard streams are flushed.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    profiling.write_profile()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
