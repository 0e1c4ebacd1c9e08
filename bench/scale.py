"""Scale benchmark: wall time and peak memory of every data/train/eval stage from 1k to 300k faces.

    python bench/scale.py --work /tmp/mrfer-scale                     # 1k, 10k, 100k, 300k faces
    python bench/scale.py --work /tmp/mrfer-scale --sizes 1000 10000   # a quick look

A synthetic FER2013-like set (48 px grey, 7 classes, no subjects: every face its own group) per
size. Up to `--extract-max` faces it is written as FER2013's CSV and read by the real `extract`;
above, the generator writes extract's output arrays directly (drawing 300k faces would measure
the generator, not mrfer). Then the library functions of downsample and assemble (scales
`--scales`; assemble's note gives its bytes on disk under both `assemble.train_scales`), the
k-fold bookkeeping (both protocols' folds, each fold's roles), one training epoch on the
memory-mapped training split (the loader's full pass is timed; the network's time is measured
over `--steps` steps and extrapolated to the epoch), and classify (embeddings timed over
`--steps` batches and extrapolated; the SVC fit on synthetic embeddings of the training-set size,
timed, with the solver params.yaml picks). Each stage runs in its own process: its peak resident
memory (ru_maxrss, imports included) is its own. Prints a Markdown table with the growth exponent
k fitted over the sizes (time ∝ faces^k).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("extract", "downsample", "assemble", "kfold", "loader epoch", "train epoch", "classify")
EXTRAPOLATED = {"train epoch", "classify"}
CLASSES = 7


def faces_for(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """48x48 grey faces with a class-dependent bright band (a learnable signal), plus noise."""
    images = rng.integers(40, 120, (len(labels), 48, 48, 1), dtype=np.uint8)
    for k in range(CLASSES):
        images[labels == k, 6 * k:6 * k + 6] += 100
    return images


def make_set(n: int, work: Path, extract_max: int) -> None:
    """FER2013's CSV (n <= extract_max), else extract's output written directly."""
    from mrfer.data import shards
    rng = np.random.default_rng(n)
    labels = rng.integers(0, CLASSES, n)
    usage = rng.choice(["Training", "PublicTest", "PrivateTest"], n, p=[0.8, 0.1, 0.1])
    if n <= extract_max:
        (work / "raw").mkdir(parents=True, exist_ok=True)
        with open(work / "raw" / "fer2013.csv", "w") as f:
            f.write("emotion,pixels,Usage\n")
            for start in range(0, n, 4096):
                block = faces_for(labels[start:start + 4096], rng).reshape(-1, 48 * 48)
                for k, pixels, use in zip(labels[start:start + 4096], block, usage[start:start + 4096]):
                    f.write(f"{k},{' '.join(map(str, pixels))},{use}\n")
        return
    out = work / "extracted"
    out.mkdir(parents=True, exist_ok=True)
    faces = np.lib.format.open_memmap(out / "faces.npy", mode="w+", dtype=np.uint8, shape=(n, 48, 48, 1))
    for start in range(0, n, 8192):
        faces[start:start + 8192] = faces_for(labels[start:start + 8192], rng)
    faces.flush()
    split = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    shards.write_manifest(out / "manifest.csv", [
        {"source": f"fer2013.csv:{i}", "label": int(k), "class": names[k], "source_split": split[u],
         "located": "aligned"} for i, (k, u) in enumerate(zip(labels, usage))])


def run_stage(stage: str, n: int, work: Path, args) -> dict:
    """One stage, in this process; returns extra figures (steps measured, solver...)."""
    from mrfer import config
    from mrfer.data import assemble, downsample, extract, labels, scales, shards, splits
    params = REPO / "params.yaml"
    if stage == "extract":
        cfg = config.load_section(params, f"datasets.{config.read_params(params)['train_on']}",
                                  extract.ExtractParams).model_copy(
            update={"reader": "fer2013", "root": str(work / "raw"), "options": {}, "size": 48, "color": "gray"})
        extract.extract(cfg, work / "extracted", work / "extract.json", work / "duplicates.csv")
    elif stage == "downsample":
        cfg = config.load_section(params, "downsample", scales.DownsampleParams).model_copy(
            update={"scales": args.scales})
        downsample.downsample(cfg, work / "extracted" / "faces.npy", work / "downsampled")
    elif stage == "assemble":
        cfg = config.load_section(params, "assemble", assemble.AssembleParams)
        kernel = config.load_section(params, "downsample", scales.DownsampleParams).kernel
        assemble.assemble(cfg, "scale", labels.class_names("drop"), args.scales, kernel, work / "extracted",
                          work / "downsampled", work / "assembled", work / "assemble.json")
        return {"note": assembled_bytes(work / "assembled", len(args.scales), cfg.train_scales)}
    elif stage == "kfold":
        return kfold_bookkeeping(work, config.load_section(params, "assemble", assemble.AssembleParams), shards,
                                 splits)
    elif stage == "loader epoch":
        return loader_epoch(work, args)
    elif stage == "train epoch":
        return train_steps(work, args)
    elif stage == "classify":
        return classify_cost(work, args)
    return {}


def assembled_bytes(folder: Path, n_scales: int, train_scales: bool) -> str:
    """The assembled folder's bytes on disk under the setting run, and under the other one (train's
    low-resolution copies are each the size of train/hr.npy)."""
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    train_copies = n_scales * (folder / "train" / "hr.npy").stat().st_size
    other = total - train_copies if train_scales else total + train_copies
    return (f"{total / 1e6:.1f} MB on disk with train_scales {str(train_scales).lower()}, "
            f"{other / 1e6:.1f} MB with {str(not train_scales).lower()}")


def kfold_bookkeeping(work: Path, cfg, shards, splits) -> dict:
    """What a k-fold run does besides training (as `kfold.fold_rows`): every fold's train/val/test
    roles over all rows, a val part carved from train where the fold left none."""
    rows, split_of = [], []
    for split in splits.SPLITS:
        part = shards.read_manifest(work / "assembled" / split / "manifest.csv")
        rows += part
        split_of += [split] * len(part)
    labels, split_of = np.array([r["label"] for r in rows]), np.array(split_of)
    groups = splits.groups_of([r["subject"] or None for r in rows], [r["sequence"] or None for r in rows])
    for protocol in splits.FOLD_PROTOCOLS:
        folds = np.array([int(r[f"fold_{protocol}"]) for r in rows])
        for fold in range(cfg.folds):
            roles = np.where(folds == fold, "test", np.where(split_of == "val", "val", "train"))
            if not (roles == "val").any():
                train = np.flatnonzero(roles == "train")
                roles[train[splits.held_out(labels[train], groups[train], 0.15, seed=fold)]] = "val"
    return {}


def open_train(work: Path):
    from mrfer.data import shards
    return shards.open_xy(work / "assembled", "train")


def loader_epoch(work: Path, args) -> dict:
    """A full pass of the training loader over the memory-mapped split (streamed above the budget)."""
    import torch
    from mrfer.train.loader import ArrayLoader
    images, labels = open_train(work)
    loader = ArrayLoader(images, labels, 64, torch.device("cpu"), seed=0, memory_budget_gb=args.budget_gb)
    batches = sum(1 for _ in loader)
    return {"note": f"{batches} batches, {'streamed' if loader.streaming else 'in memory'}"}


def train_section():
    from mrfer import config
    raw = config.read_params(REPO / "params.yaml")["pretrain_base"]
    return raw


def train_steps(work: Path, args) -> dict:
    """`--steps` training steps of the default net on the streaming loader; the epoch extrapolated."""
    import torch
    from mrfer.nets.registry import build
    from mrfer.train import losses
    from mrfer.train.loader import ArrayLoader
    from mrfer.train.loop import WithFeatures
    from mrfer.transforms import Augment, stats_tensors
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raw = train_section()
    images, labels = open_train(work)
    loader = ArrayLoader(images, labels, raw["batch_size"], torch.device("cpu"), seed=0,
                         memory_budget_gb=args.budget_gb)
    model = build(raw["arch"], num_classes=CLASSES, in_chans=1, image_size=48, **raw["arch_options"])
    net = WithFeatures(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = losses.ce_loss(*stats_tensors([100.0], [40.0], "cpu"), Augment(**raw["augment"]),
                             torch.Generator().manual_seed(0))
    batches = iter(loader)
    next(batches)  # first window read and warm-up outside the timed steps
    start = time.perf_counter()
    steps = 0
    for xb, yb in batches:
        loss, _ = loss_fn(net, xb, yb, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps == args.steps:
            break
    per_step = (time.perf_counter() - start) / max(steps, 1)
    return {"seconds": per_step * len(loader), "note": f"{steps} steps timed x {len(loader)} steps/epoch"}


def classify_cost(work: Path, args) -> dict:
    """Embedding time (over `--steps` batches, extrapolated to train + test) + the SVC fit (timed)."""
    import torch
    from mrfer import config
    from mrfer.eval import classifiers
    from mrfer.eval.classify import ClassifyParams
    from mrfer.infer import infer
    from mrfer.nets.registry import build
    from mrfer.data import shards
    cfg = config.load_section(REPO / "params.yaml", "classify", ClassifyParams)
    raw = train_section()
    images, labels = open_train(work)
    n_test = len(shards.load_split(work / "assembled", "test")[1])
    model = build(raw["arch"], num_classes=CLASSES, in_chans=1, image_size=48, **raw["arch_options"]).eval()
    sample = min(len(images), args.steps * cfg.batch_size)
    start = time.perf_counter()
    features = infer(model, np.array(images[:sample]), [100.0], [40.0], batch_size=cfg.batch_size,
                     what="features").numpy()
    embed_seconds = (time.perf_counter() - start) / sample * (len(images) + n_test)
    # the fit: embeddings of the training-set size with the net's dimension (class-separable blobs)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (CLASSES, features.shape[1]))
    x = (centres[labels] + rng.normal(0, 1.5, (len(labels), features.shape[1]))).astype(np.float32)
    solver = classifiers.solver("svc", len(x), cfg.libsvm_max_rows)
    model = classifiers.make_liblinear("svc", 0) if solver == "liblinear" else classifiers.make("svc", 0)
    start = time.perf_counter()
    with torch.no_grad():
        model.fit(x, labels)
    fit_seconds = time.perf_counter() - start
    return {"seconds": embed_seconds + fit_seconds,
            "note": f"embed {embed_seconds:.1f} s (extrapolated from {sample} faces) + {solver} fit {fit_seconds:.1f} s "
                    f"on {len(x)} x {x.shape[1]}"}


def child(args) -> None:
    import logging

    import sklearn.svm  # noqa: F401  imports before the clock starts: the stage's time is its own
    import torch  # noqa: F401

    import mrfer.data.assemble  # noqa: F401
    import mrfer.data.extract  # noqa: F401
    import mrfer.eval.classify  # noqa: F401
    import mrfer.train.losses  # noqa: F401
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    if args.child == "make":
        make_set(args.n, Path(args.work), args.extract_max)
        extra = {}
    else:
        extra = run_stage(args.child, args.n, Path(args.work), args)
    seconds = extra.pop("seconds", time.perf_counter() - start)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb, **extra}))


def measure(stage: str, n: int, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, "--n", str(n), "--work", str(work),
           "--extract-max", str(args.extract_max), "--steps", str(args.steps), "--budget-gb", str(args.budget_gb),
           "--scales", *args.scales]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} at {n} faces failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth(sizes: list[int], seconds: list[float]) -> float | None:
    """k of time ∝ n^k, least squares on log-log (None below two sizes)."""
    points = [(math.log(n), math.log(max(s, 1e-3))) for n, s in zip(sizes, seconds) if s is not None]
    if len(points) < 2:
        return None
    return float(np.polyfit([p[0] for p in points], [p[1] for p in points], 1)[0])


def table(results: dict[int, dict[str, dict]], sizes: list[int]) -> str:
    head = "| stage | " + " | ".join(f"{n:,} faces: s / peak MB" for n in sizes) + " | k |"
    lines = [head, "|---|" + "---|" * (len(sizes) + 1)]
    for stage in STAGES:
        cells, times, timed = [], [], []
        for n in sizes:
            r = results[n].get(stage)
            if r is None:
                cells.append("—")
                continue
            cells.append(f"{r['seconds']:.1f} / {r['peak_rss_mb']:.0f}")
            times.append(r["seconds"])
            timed.append(n)
        k = growth(timed, times)
        name = stage + (" (extrapolated)" if stage in EXTRAPOLATED else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if k is None else f'{k:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="scratch folder (several GB at 300k faces)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 300000])
    parser.add_argument("--scales", nargs="+", default=["x2", "x4"], help="downsample scales (fewer: less disk)")
    parser.add_argument("--extract-max", type=int, default=10000, help="largest set written as files for extract")
    parser.add_argument("--steps", type=int, default=20, help="training steps / embedding batches timed")
    parser.add_argument("--budget-gb", type=float, default=0.1,
                        help="the loader's memory budget: splits above it stream from their memory map")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import shutil
    results: dict[int, dict] = {}
    for n in args.sizes:
        work = Path(args.work) / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        measure("make", n, work, args)
        results[n] = {}
        for stage in STAGES:
            if stage == "extract" and n > args.extract_max:
                continue
            results[n][stage] = measure(stage, n, work, args)
            print(f"{n:>7} faces  {stage:<13} {results[n][stage]['seconds']:8.1f} s  "
                  f"{results[n][stage]['peak_rss_mb']:7.0f} MB  {results[n][stage].get('note', '')}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results, args.sizes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
