"""Pair B (CNN teacher -> ViT student): what the student's feature pooling does to FBT's InfoNCE (issue 9).

    python benchmarks/feature_pooling.py [--teacher TEACHER.pt]

On 4 batches of 64 real CIFAR-10 test images and fresh models of compare_methods' pair B at params.yaml's
FBT defaults, for the class token (the pooling before issue 9) and the mean of the patch tokens (now):
the mean pairwise cosine of the student's features in a batch, and how the gradient of the student's
InfoNCE terms (T,S) + (F,S) compares with that of its CE, in norm and in direction. Seconds, not a test.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from compare_methods import PAIRS, ROOT  # the sibling script: the same pair B
from torchvision import datasets, transforms

from cakd.pipeline.distill import build_distiller
from cakd.pipeline.models import ModelSpec, create_model, load_model
from cakd.pipeline.settings.loading import load_params


def flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params,
                                                                                             strict=True)])


def measure(pooling: str, batches: list[tuple[torch.Tensor, torch.Tensor]], teacher_path: Path | None) -> dict:
    pair = PAIRS["B"]
    torch.manual_seed(0)
    student = create_model(ModelSpec(pair.student, 10, 32, kwargs=pair.student_kwargs))
    teacher = load_model(teacher_path) if teacher_path else create_model(ModelSpec(pair.teacher, 10, 32))
    if pooling == "class token":
        student.head.feature_pool = None  # the classifier's own pooling is then the feature, as before
    distiller = build_distiller("fbt", student, teacher, load_params(ROOT / "params.yaml").distill).train()
    params = [p for p in student.parameters() if p.requires_grad]
    sims, cosines, ratios = [], [], []
    for x, y in batches:
        _, losses = distiller(x, y)
        f = F.normalize(student.forward_all(x).feature, dim=1)
        sims.append(((f @ f.t()).sum() - len(f)).item() / (len(f) * (len(f) - 1)))
        g_ce = flat_grad(losses["ce_student"], params)
        g_nce = flat_grad(losses["nce_ts"] + losses["nce_fs"], params)
        cosines.append(F.cosine_similarity(g_ce, g_nce, dim=0).item())
        ratios.append((g_nce.norm() / g_ce.norm()).item())
    return {"pairwise_cosine": statistics.mean(sims), "grad_ratio": statistics.mean(ratios),
            "grad_cosine": statistics.mean(cosines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("~/.cache/cakd/cifar10-jpg"))
    parser.add_argument("--teacher", type=Path, help="a trained pair-B teacher checkpoint (default: fresh)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    ds = datasets.ImageFolder(str(args.data_root.expanduser() / "test"), tf)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:256].tolist()
    batches = [(torch.stack([ds[i][0] for i in idx[k:k + 64]]), torch.tensor([ds.targets[i] for i in idx[k:k + 64]]))
               for k in range(0, 256, 64)]
    for pooling in ("class token", "patch-token mean"):
        m = measure(pooling, batches, args.teacher)
        print(f"{pooling:16s}: feature pairwise cosine {m['pairwise_cosine']:.3f}; |grad InfoNCE| / |grad CE| "
              f"{m['grad_ratio']:.2f}; cos(grad CE, grad InfoNCE) {m['grad_cosine']:+.3f}")


if __name__ == "__main__":
    main()
