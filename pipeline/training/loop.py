"""``fit``: one training loop for teachers, baselines and distillation methods.

It trains a ``Distiller`` (student + frozen teacher + the method's extra modules), evaluates every
head it exposes after each epoch, logs to dvclive, and checkpoints atomically so a killed run
resumes where it stopped. Each epoch reseeds every RNG from (seed, epoch): a resumed run replays
exactly the epochs an uninterrupted one would have run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dvclive import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from scmrepo.exceptions import SCMError
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from pipeline.errors import CakdError
from pipeline.fileio import load_torch, save_torch
from pipeline.models import save_model
from pipeline.params import TrainParams
from pipeline.training.runtime import Runtime, gather_strings, seed_everything, weights_digest
from pipeline.ui import console


@dataclass
class FitResult:
    accuracy: dict[str, float]  # final test top-1 (%) of each head: "student", maybe "assistant"
    best_accuracy: float  # best student test top-1 (%) over epochs (best.pt)
    epochs_run: int  # epochs trained by this process (fewer than planned after a resume)
    seconds_per_epoch: float
    history: list[dict[str, float]] = field(default_factory=list)
    rank_digests: list[str] = field(default_factory=list)  # hash of the trained weights, one per DDP rank


def _hard_labels(targets: torch.Tensor) -> torch.Tensor:
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


def _autocast(runtime: Runtime, recipe: TrainParams):
    if runtime.device.type != "cuda" or recipe.amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


@torch.no_grad()
def evaluate_heads(distiller: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Top-1 (%) of every head the distiller exposes, plus the student's test loss."""
    distiller.eval()
    correct: dict[str, int] = {}
    total, loss_sum = 0, 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        heads = distiller.eval_logits(images)
        for name, logits in heads.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == labels).sum())
        loss_sum += float(F.cross_entropy(heads["student"].float(), labels, reduction="sum"))
        total += labels.numel()
    out = {f"acc_{name}": 100.0 * c / total for name, c in correct.items()}
    out["loss_student"] = loss_sum / total
    return out


def _sync_buffers(module: nn.Module, runtime: Runtime) -> None:
    """BatchNorm statistics drift per rank; rank 0's become everyone's so replicas stay identical."""
    if runtime.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def fit(
    distiller: nn.Module,
    train_ds: Dataset,
    test_ds: Dataset,
    recipe: TrainParams,
    out_dir: Path,
    runtime: Runtime,
    *,
    seed: int,
    fingerprint: str,
    resume: bool = False,
    epochs: int | None = None,
    lr: float | None = None,
    mixup: Callable | None = None,
    num_workers: int = 0,
    label: str = "train",
) -> FitResult:
    """Train ``distiller`` and leave ``model.pt`` (last), ``best.pt``, ``checkpoint.pt`` and ``live/``."""
    epochs = epochs or recipe.epochs
    lr = lr or recipe.lr
    out_dir.mkdir(parents=True, exist_ok=True)
    device = runtime.device
    distiller.to(device)
    if len(train_ds) < recipe.batch_size * runtime.world_size:
        raise CakdError(f"training set has {len(train_ds)} images, fewer than one batch "
                        f"({recipe.batch_size} x {runtime.world_size} processes): lower train.batch_size")

    sampler = (DistributedSampler(train_ds, runtime.world_size, runtime.rank, shuffle=True, seed=seed)
               if runtime.distributed else None)
    generator = torch.Generator()
    train_loader = DataLoader(
        train_ds, batch_size=recipe.batch_size, drop_last=True, num_workers=num_workers,
        sampler=sampler or RandomSampler(train_ds, generator=generator), persistent_workers=False)
    test_loader = DataLoader(test_ds, batch_size=max(recipe.batch_size, 128), num_workers=num_workers)
    steps_per_epoch = len(train_loader)

    optimizer = create_optimizer_v2(distiller, opt=recipe.opt, lr=lr, weight_decay=recipe.weight_decay)
    scheduler = None
    if recipe.sched != "none":
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=recipe.sched, num_epochs=epochs, warmup_epochs=recipe.warmup_epochs,
            decay_epochs=max(1, epochs // 3), step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    autocast, scaler = _autocast(runtime, recipe)

    ckpt_path = out_dir / "checkpoint.pt"
    start_epoch, best, history = 0, -1.0, []
    if resume and ckpt_path.exists():
        state = load_torch(ckpt_path, "training checkpoint")
        if state.get("fingerprint") != fingerprint:
            if runtime.is_main:
                console.print(f"[yellow]{ckpt_path} was made with other settings or inputs: starting over")
        else:
            distiller.load_state_dict(state["distiller"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, best, history = state["epoch"], state["best"], state["history"]
            if runtime.is_main:
                console.print(f"resuming {label} from epoch {start_epoch}/{epochs} ({ckpt_path})")

    step_module: nn.Module = distiller  # distiller(images, targets) is its training step
    if runtime.distributed:
        step_module = DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    params = [p for p in distiller.parameters() if p.requires_grad]
    live = _open_live(out_dir / "live", resume=start_epoch > 0) if runtime.is_main else None
    if live is not None:
        live.log_params({"label": label, "epochs": epochs, "lr": lr, "batch_size": recipe.batch_size,
                         "effective_batch_size": recipe.batch_size * runtime.world_size,
                         "world_size": runtime.world_size})
        live.step = start_epoch

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                        disable=not runtime.is_main, transient=True)
    with progress:
        for epoch in range(start_epoch, epochs):
            seed_everything(seed * 1000 + epoch)
            generator.manual_seed(seed * 1000 + epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
            distiller.train()
            task = progress.add_task(f"{label} {epoch + 1}/{epochs}", total=steps_per_epoch, stats="")
            sums: dict[str, float] = {}
            correct = seen = 0
            t0 = time.perf_counter()
            for i, (images, labels) in enumerate(train_loader):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                targets = mixup(images, labels) if mixup is not None else (images, labels)
                images, targets = targets
                with autocast:
                    logits, losses = step_module(images, targets, epoch=epoch + i / steps_per_epoch)
                    loss = sum(losses.values())
                _stop_if_not_finite(loss, runtime, label, epoch, i, ckpt_path)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step_update(epoch * steps_per_epoch + i + 1)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                correct += int((logits.argmax(1) == _hard_labels(labels)).sum())
                seen += labels.shape[0]
                rate = seen * runtime.world_size / (time.perf_counter() - t0)
                progress.update(task, advance=1, stats=f"loss {sums['loss'] / (i + 1):.3f}  "
                                f"acc {100 * correct / seen:.1f}%  {rate:.0f} img/s")
            progress.remove_task(task)
            epoch_time = time.perf_counter() - t0
            _sync_buffers(distiller, runtime)

            record = {f"train/{k}": v / steps_per_epoch for k, v in sums.items()}
            record["train/acc"] = 100.0 * correct / seen
            record["train/images_per_s"] = seen * runtime.world_size / epoch_time
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["epoch_seconds"] = epoch_time
            if runtime.is_main:
                record.update({f"test/{k}": v for k, v in evaluate_heads(distiller, test_loader, device).items()})
                history.append({"epoch": epoch + 1, **record})
                for key, value in record.items():
                    live.log_metric(key, value)
                live.next_step()
                acc = record["test/acc_student"]
                if acc > best:
                    best = acc
                    save_model(distiller.student, out_dir / "best.pt", {"epoch": epoch + 1, "accuracy": acc})
                save_torch({
                    "fingerprint": fingerprint, "epoch": epoch + 1, "best": best, "history": history,
                    "distiller": distiller.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "scaler": scaler.state_dict() if scaler is not None else {},
                }, ckpt_path)
                heads = "  ".join(f"{k.removeprefix('test/acc_')} {v:.2f}%" for k, v in record.items()
                                  if k.startswith("test/acc_"))
                console.print(f"{label} epoch {epoch + 1}/{epochs}: loss {record['train/loss']:.4f}  "
                              f"test {heads}  {record['train/images_per_s']:.0f} img/s  {epoch_time:.1f}s")
            if runtime.distributed:
                dist.barrier()

    digests = gather_strings(runtime, weights_digest(distiller.student))
    final = {k.removeprefix("test/acc_"): v for k, v in history[-1].items() if k.startswith("test/acc_")} \
        if history else {}
    if runtime.is_main:
        save_model(distiller.student, out_dir / "model.pt", {"epochs": epochs, "accuracy": final.get("student")})
        live.end()
    # From the history, so a resumed (or already finished) run reports every epoch, not only its own.
    epoch_times = [row["epoch_seconds"] for row in history if "epoch_seconds" in row]
    return FitResult(accuracy=final, best_accuracy=best, epochs_run=epochs - start_epoch,
                     seconds_per_epoch=sum(epoch_times) / len(epoch_times) if epoch_times else 0.0,
                     history=history, rank_digests=digests)


def _open_live(path: Path, resume: bool) -> Live:
    """dvclive's metrics and plots files; it stumbles on a git repository without commits (dvclive#522)."""
    try:
        return Live(dir=str(path), resume=resume, save_dvc_exp=False, dvcyaml=False)
    except SCMError as err:
        raise CakdError(f"dvclive cannot log inside this git repository ({err}): make a first commit") from None


def _stop_if_not_finite(loss: torch.Tensor, runtime: Runtime, label: str, epoch: int, step: int,
                        ckpt_path: Path) -> None:
    """A NaN/inf loss ends training with one line; the last checkpoint (previous epoch) stays intact."""
    bad = torch.tensor(0.0 if math.isfinite(float(loss.detach())) else 1.0, device=loss.device)
    if runtime.distributed:
        dist.all_reduce(bad)
    if bad.item():
        kept = f"last good checkpoint kept: {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
        raise CakdError(f"{label}: loss became NaN/inf at epoch {epoch + 1}, step {step + 1} "
                        f"(lower the learning rate or enable grad_clip); {kept}")
