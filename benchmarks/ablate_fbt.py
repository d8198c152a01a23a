"""Does the fused assistant earn its place? FBT's ablation on real CIFAR-10 (not a test): issue 23.

    python benchmarks/ablate_fbt.py --teacher A=PATH --teacher B=PATH     # both pairs, 6 variants, seeds 0 1 2

The same pairs, budget, teachers and runner as ``compare_methods.py`` (its ``Bench``: each finished run kept in
``benchmarks/results/ablate_fbt/runs/<key>.json`` and continued from there), FBT trained in six variants:

    full          FBT as params.yaml has it: pairs (T,S), (T,F), (F,S), InfoNCE + OFA, F with its attention stage
    no-assistant  pairs: [ts]  - no fused assistant at all: InfoNCE + OFA between teacher and student only
    no-tf         use_tf: false  - without L(T,F)
    no-attention  assistant_attention: false  - L2G without its Swin block
    no-nce        w_nce: 0  - without InfoNCE
    no-ofa        w_ofa: 0  - without OFA

For each variant: top-1 per seed, mean and std; the paired difference full - variant per seed, its mean and
std, and whether full FBT is ahead on every seed. A difference whose spread includes 0 is within noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_methods import BUDGETS, PAIRS, Bench, add_bench_options, spread  # noqa: E402

from cakd.pipeline.files.fileio import write_json  # noqa: E402
from cakd.pipeline.settings.loading import load_params  # noqa: E402

VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "no-assistant": ("distill.fbt.pairs=[ts]",),
    "no-tf": ("distill.fbt.use_tf=false",),
    "no-attention": ("distill.fbt.assistant_attention=false",),
    "no-nce": ("distill.fbt.w_nce=0",),
    "no-ofa": ("distill.fbt.w_ofa=0",),
}


def summarise(runs: list[dict]) -> dict:
    """Per variant: accuracy by seed, mean, std; per ablated variant: full - variant per seed."""
    by = {(r["variant"], r["seed"]): r["accuracy"] for r in runs}
    variants = [v for v in VARIANTS if any(k[0] == v for k in by)]
    table = {}
    for v in variants:
        acc = {s: a for (vv, s), a in sorted(by.items()) if vv == v}
        table[v] = {"accuracy": acc, "mean": statistics.mean(acc.values()), "std": spread(list(acc.values()))}
        seeds = [s for s in acc if ("full", s) in by]
        if v != "full" and seeds:
            diff = {s: by["full", s] - acc[s] for s in seeds}
            table[v]["full_minus"] = {"per_seed": diff, "mean": statistics.mean(diff.values()),
                                      "std": spread(list(diff.values())),
                                      "full_ahead_every_seed": all(d > 0 for d in diff.values()),
                                      "variant_ahead_every_seed": all(d < 0 for d in diff.values())}
    return table


def print_table(name: str, teacher: float | None, result: dict) -> None:
    pair = PAIRS[name]
    shown = "?" if teacher is None else f"{teacher:.2f}"
    t = Table(title=f"{name}: {pair.teacher} (teacher, {shown}%) -> {pair.student}: FBT ablation")
    for col in ("variant", "top-1 % mean ± std", "per seed", "full - variant per seed", "full - variant mean ± std"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for variant, row in result.items():
        d = row.get("full_minus")
        t.add_row(variant, f"{row['mean']:.2f} ± {row['std']:.2f}",
                  " ".join(f"{v:.2f}" for v in row["accuracy"].values()),
                  "" if d is None else " ".join(f"{v:+.2f}" for v in d["per_seed"].values()),
                  "" if d is None else f"{d['mean']:+.2f} ± {d['std']:.2f}")
    Console(width=150).print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_options(parser, "ablate_fbt")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()

    budget = BUDGETS[args.budget]
    console = Console(stderr=True, soft_wrap=True)
    bench = Bench(args, budget, load_params(args.params), console)
    start = time.perf_counter()
    # seed by seed, full FBT first: an interrupted ablation still has complete paired seeds
    jobs = [(name, variant, seed) for seed in args.seeds for variant in args.variants for name in args.pairs]

    def run(job: tuple[str, str, int]) -> dict:
        name, variant, seed = job
        return {**bench.student(name, "fbt", seed, VARIANTS[variant]), "variant": variant}

    with ThreadPoolExecutor(args.jobs) as pool:  # one cakd process per job; the threads only wait on them
        runs = list(pool.map(run, jobs))
    results = {}
    for name in args.pairs:
        teacher = bench.teacher_accuracy(name)
        results[name] = {"teacher_accuracy": teacher,
                         "variants": summarise([r for r in runs if r["pair"] == name])}
        print_table(name, teacher, results[name]["variants"])
    write_json(args.out, {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "code": bench.code,
        "budget": {"name": args.budget, **asdict(budget)}, "seeds": args.seeds, "threads": args.threads,
        "jobs": args.jobs, "variants": {v: list(VARIANTS[v]) for v in args.variants},
        "pairs": {name: asdict(PAIRS[name]) for name in args.pairs}, "recipe": bench.recipe,
        "teachers": {name: bench.teacher(name) for name in args.pairs},
        "wall_seconds": time.perf_counter() - start, "results": results, "runs": runs,
    })
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
