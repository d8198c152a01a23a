"""``fit``: one training loop for teachers, baselines and distillation methods.

It trains a ``Distiller`` (student + frozen teacher + the method's extra modules), evaluates every
head it exposes after each epoch, logs to dvclive, and checkpoints atomically so a killed run
resumes where it stopped. Each epoch reseeds every RNG from (seed, epoch): a resumed run replays
exactly the epochs an uninterrupted one would have run.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import NativeScaler, dispatch_clip_grad, distribute_bn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data.loading import SeededSampler, eval_loader, train_loader
from ..distill.base import Distiller
from ..errors import CakdError
from ..files.checkpoints import load_checkpoint, save_checkpoint
from ..models import save_model
from ..reporting import profiling
from ..reporting.metrics import top1_accuracy, top1_hits
from ..reporting.ui import console
from ..settings.params import TrainParams
from .placement import Placement, gather_strings, seed_everything, weights_digest
from .recipe import RecipePlan, apply_recipe, autocast_dtype, plan_recipe, to_input_format

if TYPE_CHECKING:
    from dvclive import Live


class TrainingDiverged(CakdError):
    """The loss became NaN/inf: for a stage, one line; for a quantisation-aware fine-tune, a rejected artefact."""


@dataclass
class FitResult:
    accuracy: dict[str, float]  # final test top-1 (%) of each head: the role ("teacher", "student"), "assistant"
    best_accuracy: float  # best test top-1 (%) of the trained model over epochs (best.pt)
    epochs_run: int  # epochs trained by this process (fewer than planned after a resume)
    seconds_per_epoch: float
    history: list[dict[str, float]] = field(default_factory=list)
    rank_digests: list[str] = field(default_factory=list)  # hash of the trained weights, one per DDP rank
    recipe: dict = field(default_factory=dict)  # what the CUDA recipe switched on (RecipePlan.as_dict)


@dataclass
class Loaders:
    train: DataLoader
    test: DataLoader
    sampler: SeededSampler  # fit sets its epoch seed: the order and every item's augmentation


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    scaler: NativeScaler | None  # fp16 autocast on CUDA only
    autocast: AbstractContextManager
    params: list[nn.Parameter]  # what gradient clipping sees
    grad_clip: float


@dataclass
class RunState:
    """What a checkpoint restores: the next epoch to run, the best test accuracy so far and the weights that
    reached it (so best.pt can be rewritten after DVC removed it), every epoch's row."""

    epoch: int = 0
    best: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0


@dataclass
class Run:
    """One training run's fixed context, shared by its parts."""

    distiller: Distiller
    placement: Placement
    out_dir: Path
    fingerprint: str
    role: str  # "teacher" or "student": names the trained model's accuracy (acc_teacher, acc_student)
    label: str  # what the console calls the run ("teacher", a method name)
    epochs: int
    eval_every: int = 1  # test-set evaluation (and best.pt) every this many epochs, and after the last
    plan: RecipePlan = RecipePlan((), (), "off")  # the CUDA recipe fit applied

    def evaluates_after(self, epoch: int) -> bool:
        return epoch == self.epochs or epoch % self.eval_every == 0

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"


def build_loaders(train_ds: Dataset, test_ds: Dataset, batch_size: int, placement: Placement, seed: int,
                  num_workers: int = 0) -> Loaders:
    """Shuffled, full, seeded training batches (``batch_size`` is the global batch, split over the processes of
    a torchrun job) and a plain test loader; ``seed`` is the first epoch's until fit sets each epoch's."""
    train, sampler = train_loader(train_ds, batch_size, placement.rank, placement.world_size, num_workers,
                                  placement.device)
    sampler.set_epoch_seed(seed)
    return Loaders(train, eval_loader(test_ds, max(batch_size, 128), num_workers, placement.device), sampler)


def build_optimisation(distiller: Distiller, recipe: TrainParams, lr: float, epochs: int, steps_per_epoch: int,
                       placement: Placement) -> Optimisation:
    """timm's optimiser and per-step scheduler; on CUDA, bf16 autocast (or fp16 with timm's NativeScaler)."""
    trainable = distiller.trainable_parameters()  # never the teacher's, each parameter once
    groups = [{"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},  # timm's rule and order:
              {"params": [p for p in trainable if p.ndim > 1]}]  # no weight decay on biases and norms
    optimizer = create_optimizer_v2(groups, opt=recipe.opt, lr=lr, weight_decay=recipe.weight_decay)
    scheduler = None
    if recipe.sched != "none":
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=recipe.sched, num_epochs=epochs, warmup_epochs=recipe.warmup_epochs,
            decay_epochs=max(1, epochs // 3), step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    autocast, scaler = nullcontext(), None
    dtype = autocast_dtype(placement.device.type, recipe.amp)
    if dtype is not None:
        autocast = torch.autocast("cuda", dtype=dtype)
        scaler = NativeScaler("cuda") if dtype == torch.float16 else None
    return Optimisation(optimizer, scheduler, scaler, autocast, trainable, recipe.grad_clip)


def restore(run: Run, opt: Optimisation) -> RunState:
    """The state of ``checkpoint.pt`` if it was made by this very run (same fingerprint), else a fresh start."""
    if not run.ckpt_path.exists():
        return RunState()
    state = load_checkpoint(run.ckpt_path, "training checkpoint")
    if state.get("fingerprint") != run.fingerprint:
        if run.placement.is_main:
            console.print(f"[yellow]{run.ckpt_path} was made with other settings or inputs: starting over")
        return RunState()
    run.distiller.load_training_state(state["distiller"])
    opt.optimizer.load_state_dict(state["optimizer"])
    if opt.scheduler is not None:
        opt.scheduler.load_state_dict(state["scheduler"])
    if opt.scaler is not None and state.get("scaler"):
        opt.scaler.load_state_dict(state["scaler"])
    restored = RunState(state["epoch"], state["best"], state["history"], state.get("best_weights"),
                        state.get("best_epoch", 0))
    if run.placement.is_main:
        console.print(f"resuming {run.label} from epoch {state['epoch']}/{run.epochs} ({run.ckpt_path})")
        if restored.best_weights is not None and not (run.out_dir / "best.pt").exists():
            _save_best(run, restored)  # `dvc repro` removes a stage's outputs before it runs it again
    return restored


def _save_best(run: Run, state: RunState) -> None:
    """best.pt from the best weights kept in the run state (the student as trained may be past them)."""
    save_model(run.distiller.student, run.out_dir / "best.pt", {"epoch": state.best_epoch, "accuracy": state.best},
               state_dict=state.best_weights)


def _step(loss: torch.Tensor, opt: Optimisation) -> None:
    """Backward, optional gradient clipping, optimiser step (through the scaler under fp16)."""
    opt.optimizer.zero_grad(set_to_none=True)
    if opt.scaler is not None:
        opt.scaler(loss, opt.optimizer, clip_grad=opt.grad_clip or None, parameters=opt.params)
        return
    loss.backward()
    if opt.grad_clip:
        dispatch_clip_grad(opt.params, opt.grad_clip)
    opt.optimizer.step()


def train_one_epoch(run: Run, step_module: nn.Module, loaders: Loaders, opt: Optimisation, epoch: int,
                    mixup: Callable | None, progress: Progress) -> dict[str, float]:
    """One pass over the training set; returns the epoch's mean losses, train accuracy and speed."""
    steps = len(loaders.train)
    run.distiller.train()
    task = progress.add_task(f"{run.label} {epoch + 1}/{run.epochs}", total=steps, stats="")
    sums: dict[str, float] = {}
    correct = seen = 0
    t0 = time.perf_counter()
    for i, (images, labels) in enumerate(loaders.train):
        device = run.placement.device
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images = to_input_format(images, run.plan)
        images, targets = mixup(images, labels) if mixup is not None else (images, labels)
        with opt.autocast:
            logits, losses = step_module(images, targets, epoch=epoch + i / steps)
            loss = sum(losses.values())
        _stop_if_not_finite(loss, run, epoch, i)
        _step(loss, opt)
        if opt.scheduler is not None:
            opt.scheduler.step_update(epoch * steps + i + 1)
        for name, value in {**losses, "loss": loss}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        correct += top1_hits(logits, labels)
        seen += labels.shape[0]
        rate = seen * run.placement.world_size / (time.perf_counter() - t0)
        progress.update(task, advance=1, stats=f"loss {sums['loss'] / (i + 1):.3f}  "
                        f"acc {100 * correct / seen:.1f}%  {rate:.0f} img/s")
    progress.remove_task(task)
    seconds = time.perf_counter() - t0
    record = {f"train/{k}": v / steps for k, v in sums.items()}
    record.update({"train/acc": 100.0 * correct / seen, "train/images_per_s": seen * run.placement.world_size / seconds,
                   "lr": opt.optimizer.param_groups[0]["lr"], "epoch_seconds": seconds})
    return record


@torch.no_grad()
def evaluate_heads(distiller: Distiller, loader: DataLoader, device: torch.device, role: str = "student"
                   ) -> dict[str, float]:
    """Test top-1 (%) of every head the distiller reports, the trained model's named by its role.

    One pass over the test set: FBT's heads (student, assistant) come from one forward, not one each."""
    distiller.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    labels = []
    for images, y in loader:
        for name, out in distiller.eval_logits(images.to(device, non_blocking=True)).items():
            logits.setdefault(name, []).append(out.float().cpu())
        labels.append(torch.as_tensor(y))
    batch = torch.cat(labels)
    return {role if name == "student" else name: top1_accuracy(lambda x: x, [(torch.cat(outs), batch)])
            for name, outs in logits.items()}


def end_of_epoch(run: Run, state: RunState, loaders: Loaders, record: dict[str, float], live: Live | None,
                 opt: Optimisation | None) -> None:
    """Evaluate (every ``eval_every`` epochs and after the last), log the epoch to dvclive and the console,
    keep best.pt, and checkpoint (rank 0 only).

    Without ``opt`` nothing was trained: the model as it is becomes epoch 0.
    """
    state.epoch += opt is not None
    heads: dict[str, float] = {}
    if opt is None or run.evaluates_after(state.epoch):
        with profiling.phase("evaluation"):
            heads = evaluate_heads(run.distiller, loaders.test, run.placement.device, run.role)
    record.update({f"test/acc_{name}": acc for name, acc in heads.items()})
    state.history.append({"epoch": state.epoch, **record})
    if live is not None:
        for key, value in record.items():
            live.log_metric(key, value)
        live.next_step()
    if heads and heads[run.role] > state.best:
        state.best, state.best_epoch = heads[run.role], state.epoch
        state.best_weights = {k: v.detach().clone() for k, v in run.distiller.student.state_dict().items()}
        _save_best(run, state)
    save_checkpoint({
        "fingerprint": run.fingerprint, "epoch": state.epoch, "best": state.best, "history": state.history,
        "best_weights": state.best_weights, "best_epoch": state.best_epoch,
        "distiller": run.distiller.training_state(),
        "optimizer": opt.optimizer.state_dict() if opt is not None else {},
        "scheduler": opt.scheduler.state_dict() if opt is not None and opt.scheduler is not None else {},
        "scaler": opt.scaler.state_dict() if opt is not None and opt.scaler is not None else {},
    }, run.ckpt_path)
    shown = "  ".join(f"{name} {acc:.2f}%" for name, acc in heads.items()) or "not evaluated"
    if opt is None:
        console.print(f"{run.label} used as is (no training): test {shown}")
        return
    console.print(f"{run.label} epoch {state.epoch}/{run.epochs}: loss {record['train/loss']:.4f}  test {shown}  "
                  f"{record['train/images_per_s']:.0f} img/s  {record['epoch_seconds']:.1f}s")


def finish(run: Run, state: RunState, live: Live | None, epochs_run: int) -> FitResult:
    """Write model.pt (the trained model alone) and sum the run up from its whole history."""
    digests = gather_strings(run.placement, weights_digest(run.distiller.student))
    final = ({k.removeprefix("test/acc_"): v for k, v in state.history[-1].items() if k.startswith("test/acc_")}
             if state.history else {})
    if run.placement.is_main:
        save_model(run.distiller.student, run.out_dir / "model.pt",
                   {"epochs": run.epochs, "accuracy": final.get(run.role)})
        if live is not None:
            live.end()
    # From the history, so a resumed (or already finished) run reports every epoch, not only its own.
    epoch_times = [row["epoch_seconds"] for row in state.history if "epoch_seconds" in row]
    return FitResult(accuracy=final, best_accuracy=state.best, epochs_run=epochs_run,
                     seconds_per_epoch=sum(epoch_times) / len(epoch_times) if epoch_times else 0.0,
                     history=state.history, rank_digests=digests, recipe=run.plan.as_dict())


def use_as_is(run: Run, loaders: Loaders) -> FitResult:
    """No training: the model is evaluated once and written as it is (a teacher with ``train.epochs: 0``)."""
    state, live = RunState(), open_live(run, resume=False)
    if run.placement.is_main:
        end_of_epoch(run, state, loaders, {}, live, None)
    return finish(run, state, live, 0)


def fit(
    distiller: Distiller,
    train_ds: Dataset,
    test_ds: Dataset,
    recipe: TrainParams,
    out_dir: Path,
    placement: Placement,
    *,
    seed: int,
    fingerprint: str,
    resume: bool = False,
    epochs: int | None = None,
    lr: float | None = None,
    mixup: Callable | None = None,
    num_workers: int = 0,
    role: str = "student",
    label: str = "train",
) -> FitResult:
    """Train ``distiller`` and leave ``model.pt`` (last), ``best.pt``, ``checkpoint.pt`` and ``live/``.

    ``epochs=0`` trains nothing: the model is evaluated once and written as it is.
    """
    run = Run(distiller.to(placement.device), placement, out_dir, fingerprint, role, label,
              recipe.epochs if epochs is None else epochs, recipe.eval_every)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaders = build_loaders(train_ds, test_ds, recipe.batch_size, placement, seed, num_workers)
    if run.epochs == 0:
        return use_as_is(run, loaders)
    run.plan = plan_recipe(distiller, placement.device.type, recipe.amp, recipe.compile)
    apply_recipe(distiller, run.plan)
    opt = build_optimisation(distiller, recipe, lr or recipe.lr, run.epochs, len(loaders.train), placement)
    state = restore(run, opt) if resume else RunState()
    start = state.epoch
    step_module = _step_module(distiller, placement)
    live = open_live(run, resume=start > 0, lr=lr or recipe.lr, batch_size=recipe.batch_size)
    if live is not None:
        live.step = start
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                        disable=not placement.is_main, transient=True)
    with progress:
        for epoch in range(start, run.epochs):
            seed_everything(seed * 1000 + epoch)
            loaders.sampler.set_epoch_seed(seed * 1000 + epoch)
            with profiling.phase("training"):
                record = train_one_epoch(run, step_module, loaders, opt, epoch, mixup, progress)
            if placement.distributed:  # BatchNorm statistics drift per rank: rank 0's become everyone's
                distribute_bn(distiller, placement.world_size, reduce=False)
            if placement.is_main:
                end_of_epoch(run, state, loaders, record, live, opt)
            else:
                state.epoch += 1
            if placement.distributed:
                dist.barrier()
    return finish(run, state, live, run.epochs - start)


def _step_module(distiller: Distiller, placement: Placement) -> nn.Module:
    """What a training step calls: the distiller, or under torchrun its DDP wrapper (averages gradients)."""
    if not placement.distributed:
        return distiller
    cuda = placement.device.type == "cuda"
    return DistributedDataParallel(distiller, device_ids=[placement.device.index] if cuda else None,
                                   find_unused_parameters=True)


def open_live(run: Run, resume: bool, **params: float) -> Live | None:
    """dvclive's metrics and plots (rank 0 only); it stumbles on a git repository without commits (dvclive#522).

    Without dvclive installed (it brings DVC: a bare GPU machine, benchmarks/gpu_check.py) a run has no
    ``live/`` folder; metrics.json and the checkpoint's history still hold every epoch."""
    if not run.placement.is_main:
        return None
    try:
        from scmrepo.exceptions import SCMError

        from .live import RunLive
    except ImportError:
        console.print("[yellow]dvclive is not installed: no live/ logs for this run")
        return None
    folder = run.out_dir / "live"
    try:
        live = RunLive(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=False)
        world = run.placement.world_size
        live.log_params({"role": run.role, "label": run.label, "epochs": run.epochs, "world_size": world, **params})
    except SCMError as err:
        raise CakdError(f"dvclive cannot log inside this git repository ({err}): make a first commit") from None
    except OSError:  # e.g. a full disk: dvclive writes in place, so what it began of a new log goes
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return live


def _stop_if_not_finite(loss: torch.Tensor, run: Run, epoch: int, step: int) -> None:
    """A NaN/inf loss ends training with one line; the last checkpoint (previous epoch) stays intact."""
    bad = torch.tensor(0.0 if math.isfinite(float(loss.detach())) else 1.0, device=loss.device)
    if run.placement.distributed:
        dist.all_reduce(bad)
    if bad.item():
        kept = (f"last good checkpoint kept: {run.ckpt_path}" if run.ckpt_path.exists()
                else "no checkpoint was written yet")
        raise TrainingDiverged(f"{run.label}: loss became NaN/inf at epoch {epoch + 1}, step {step + 1} "
                        f"(lower the learning rate or enable grad_clip); {kept}")
