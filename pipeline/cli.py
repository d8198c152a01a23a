"""The ``cakd`` command line: one subcommand per pipeline stage, each reading params.yaml.

Every subcommand takes ``--params PATH`` and repeatable ``-S key.path=value`` overrides (the same
spelling as ``dvc exp run -S``). Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import CakdError
from pipeline.params import Params, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cross-architecture knowledge distillation: prepare, train, distill, evaluate, export.")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-S", help="override: key.path=value")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="continue from out/checkpoint.pt if it fits")]
DATA = Path("artifacts/data/manifest.json")


def _params(path: Path, overrides: list[str] | None) -> Params:
    return load_params(path, overrides or [])


@app.command()
def prepare(params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
            out: Path = Path("artifacts/data")) -> None:
    """Scan and validate the dataset; write the manifest later stages read."""
    from pipeline.stages import prepare as stage

    stage.run(_params(params, set_), out)


@app.command("train-teacher")
def train_teacher(params: ParamsOption = Path("params.yaml"), set_: SetOption = None,
                  data: Path = DATA, out: Path = Path("artifacts/teacher"), resume: ResumeOption = False) -> None:
    """Train the teacher (also under torchrun for multi-GPU / multi-process DDP)."""
    from pipeline.stages import train_teacher as stage

    stage.run(_params(params, set_), data, out, resume)


@app.command()
def distill(params: ParamsOption = Path("params.yaml"), set_: SetOption = None, data: Path = DATA,
            teacher: Path = Path("artifacts/teacher/model.pt"), out: Path = Path("artifacts/student"),
            method: Annotated[str | None, typer.Option(help="override distill.method")] = None,
            resume: ResumeOption = False) -> None:
    """Distill the teacher into the student (method 'ce' trains the student alone: the baseline)."""
    from pipeline.stages import distill as stage

    overrides = list(set_ or []) + ([f"distill.method={method}"] if method else [])
    stage.run(_params(params, overrides), data, teacher, out, resume)


def main() -> None:
    try:
        app()
    except CakdError as err:
        # Raised inside a DataLoader worker, the message carries the worker's traceback: keep the last line.
        message = str(err).rsplit("CakdError: ", 1)[-1].strip()
        print(f"cakd: error: {message}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("cakd: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
