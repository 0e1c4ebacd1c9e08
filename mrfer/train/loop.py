"""The classification training loop, readable top to bottom.

The classification recipes (base.py, multires.py, kfold.py) hand it a model, a loader and a
`loss_fn` — the only part that differs between them. (fsr.py trains a generator against a
critic, and video.py a GRU over clip windows: each has its own loop, in its own file.) It owns the rest: optimizer param groups, scheduler, AMP on
CUDA, DDP under torchrun, validation + early stopping, dvclive curves, and a resume checkpoint
each epoch (restarting a killed stage with the same params continues where it stopped, and
ends with the same weights as an uninterrupted run on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from tqdm import tqdm

from mrfer.config import Section
from mrfer.errors import DivergedError, ParamsError
from mrfer.infer import Device, autocast, infer
from mrfer.transforms import Augment
from mrfer.metrics import summarize
from mrfer.nets import checkpoint
from mrfer.nets.fernet import FERNet
from mrfer.train.loader import ArrayLoader

log = logging.getLogger(__name__)

class Plateau(Section):
    """ReduceLROnPlateau's settings (used when `scheduler` is plateau; `LoopParams.unused` says so otherwise)."""

    monitor: Literal["loss", "accuracy"] = Field(description="val loss (min) | val accuracy (max, MAFER step 2)")
    factor: float = Field(gt=0, lt=1, description="lr multiplier on a plateau (MAFER: 0.5 step 1, 0.1 step 2)")
    patience: int = Field(ge=0, description="validations without improvement before the lr drops (MAFER: 10)")
    threshold: float = Field(ge=0, description="relative improvement that counts (MAFER: 0.1 step 1, 0.001 step 2)")
    min_lr: float = Field(ge=0, description="the lr never drops below this (PyTorch's default 0; MAFER step 1: 1e-7)")


class StepSchedule(Section):
    """StepLR's settings (the VGG-Face fine-tune: x0.1 every 20 epochs)."""

    step_size: int = Field(gt=0, description="epochs between lr drops")
    gamma: float = Field(gt=0, le=1, description="lr multiplier at each drop")


class Piecewise(Section):
    """A piecewise-constant lr by epoch: from epochs[i] on, lr x factors[i] (CovPoolFER's
    learning_rate.txt: 0.005 from epoch 0, 0.002 from 80, 0.001 from 150, ...)."""

    epochs: list[int] = Field(min_length=1, description="increasing epochs (>= 1) where the lr changes")
    factors: list[float] = Field(min_length=1, description="lr multiplier from each of `epochs` on (> 0)")

    @field_validator("factors")
    @classmethod
    def _one_factor_per_epoch(cls, factors: list[float], info: ValidationInfo) -> list[float]:
        epochs = info.data.get("epochs", [])
        if len(factors) != len(epochs):
            raise ValueError(f"needs one factor per epoch in `epochs` ({len(epochs)}), got {len(factors)}")
        if any(f <= 0 for f in factors):
            raise ValueError("factors must be > 0")
        if epochs[0] < 1 or any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ValueError(f"`epochs` {epochs} must be increasing and >= 1 (epoch 0 runs at lr)")
        return factors

    def factor(self, epoch: int) -> float:
        """The multiplier at `epoch` (0-based): the last milestone <= epoch (train.py's rule)."""
        return next((f for e, f in zip(reversed(self.epochs), reversed(self.factors)) if e <= epoch), 1.0)


class LoopParams(Section):
    """The keys the loop itself reads, taken from params.yaml's shared `loop` section unless the
    recipe's section sets them; each recipe's section adds its own (epochs, ...)."""

    inherits = ("loop",)

    batch_size: int = Field(gt=0, description="training batch size (per process under DDP)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(description="adam | adamw | sgd (momentum, nesterov below)")
    momentum: float = Field(ge=0, lt=1, description="sgd's momentum (MAFER step 1: 0.9)")
    nesterov: bool = Field(description="sgd: Nesterov momentum (MAFER step 1: false)")
    adam_eps: float = Field(gt=0, description="adam/adamw's epsilon (PyTorch: 1e-8; CovPoolFER: 0.1)")
    adam_eps_style: Literal["torch", "tf"] = Field(
        description="adam only. torch: m_hat / (sqrt(v_hat) + eps) | tf: TensorFlow's AdamOptimizer, whose epsilon "
                    "is Kingma and Ba's 'epsilon hat': lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), i.e. "
                    "torch's with eps / sqrt(1 - b2^t) (CovPoolFER, FSR-FER)")
    lr: float = Field(gt=0, description="backbone learning rate")
    head_lr: float = Field(gt=0, description="classifier-head learning rate (MAFER step 2: 1e-2 beside a 1e-4 backbone)")
    weight_decay: float = Field(ge=0)
    decay_on: Literal["all", "weights"] = Field(
        description="all: every parameter | weights: conv and fc weights only, not biases, norm layers or "
                    "BiMap (slim's weights_regularizer, CovPoolFER)")
    scheduler: Literal["cosine", "plateau", "step", "piecewise", "none"] = Field(
        description="cosine over the epochs | plateau: ReduceLROnPlateau as `plateau` says | step: StepLR as "
                    "`step` says | piecewise: as `piecewise` says | none")
    plateau: Plateau
    step: StepSchedule
    piecewise: Piecewise
    accumulate: int = Field(ge=1, description="batches whose gradients add up (the sum of their batch-mean losses) "
                                              "before one optimiser step; an epoch's last incomplete group is "
                                              "dropped, as MAFER's code drops it (MAFER: 8 step 1, 4 step 2)")
    val_unit: Literal["epoch", "steps"] = Field(description="what `val_every` counts: epoch | steps (optimiser steps)")
    val_every: float = Field(
        gt=0, description="epoch: validate after every floor(val_every x batches) batches of the epoch, 0 < val_every "
                          "<= 1 (1: at its end; MAFER step 2: 0.5) | steps: after every val_every-th optimiser step "
                          "of the epoch that another batch follows, counted from 0 each epoch (MAFER step 1: 1)")
    val_batches: float = Field(
        gt=0, le=1, description="share of the val split one validation reads: its first floor(share x batches) "
                                "batches of batch_size, at least one (1: all; MAFER step 2: 1/3, 0.333333333333)")
    patience: int = Field(ge=0, description="early stop after this many validations without val-accuracy gain (0: off)")
    restore_best: bool = Field(description="end with the weights of the best val-accuracy epoch")
    amp: bool = Field(description="CUDA only: bf16 autocast where supported (fp16 + loss scaling otherwise)")
    device: Device
    memory_budget_gb: float = Field(gt=0, description="a memory-mapped training split larger than this (GiB) is "
                                                      "streamed from disk by a reader thread, not read into RAM")

    @field_validator("adam_eps_style")
    @classmethod
    def _tf_style_is_adam(cls, style: str, info: ValidationInfo) -> str:
        if style == "tf" and info.data.get("optimizer") == "adamw":
            raise ValueError("tf is TensorFlow's AdamOptimizer: with optimizer adam only")
        return style

    @field_validator("val_every")
    @classmethod
    def _val_every_fits_unit(cls, every: float, info: ValidationInfo) -> float:
        if info.data.get("val_unit") == "epoch" and every > 1:
            raise ValueError("with val_unit epoch, a share of the epoch: 0 < val_every <= 1")
        if info.data.get("val_unit") == "steps" and every != int(every):
            raise ValueError("with val_unit steps, a whole number of optimiser steps")
        return every

    def unused(self) -> set[str]:
        """The settings of the schedulers and optimisers not chosen."""
        scheduler, optimizer = self.__dict__["scheduler"], self.__dict__["optimizer"]   # not counted as reads
        out = {"plateau", "step", "piecewise"} - {scheduler}
        out |= {"momentum", "nesterov"} if optimizer != "sgd" else {"adam_eps", "adam_eps_style"}
        out |= {"adam_eps_style"} if optimizer == "adamw" else set()
        return out


class TrainParams(LoopParams):
    """What the classification recipes (base, multires, kfold) read besides the loop's keys."""

    class_weighted: bool = Field(description="cross-entropy weighted by 1 - n_c/N (MAFER)")
    channels_last: bool = Field(description="NHWC conv weights: faster with cuDNN and with oneDNN on the CPU")
    on_device: Literal["auto", "always", "never"] = Field(
        description="CUDA: keep the training array on the GPU (auto: when it takes < 30 % of free memory)")
    augment: Augment
MIN_STEPS = 200  # fewer optimiser steps than this rarely train a net from scratch: say so
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


class WithFeatures(torch.nn.Module):
    """forward(x) -> (logits, features) in one pass, so DDP sees every parameter it trains. `aux`
    (the centre loss, used by the loss on these features) is registered too, so DDP averages its
    centres' gradients (update: optimizer) or broadcasts its centres (update: moving) across ranks."""

    def __init__(self, model: torch.nn.Module, aux: torch.nn.Module | None = None):
        super().__init__()
        self.module = model
        self.aux = aux

    def forward(self, x):
        features = self.module.features(x)
        return self.module.head(features), features


def distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """MAFER's weights: 1 - n_c / N (rare classes count more)."""
    counts = np.bincount(labels, minlength=n_classes)
    return torch.tensor(1 - counts / counts.sum(), dtype=torch.float32)


def make_optimizer(model: FERNet, cfg: LoopParams, lr: float, head_lr: float,
                   aux: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """Backbone and head as separate param groups (MAFER: 1e-4 and 1e-2), each split into decayed and
    undecayed parameters when `decay_on: weights`; `aux` (the centre loss's centres) joins the
    backbone's lr without weight decay."""
    decayed = {id(p) for p in decayed_parameters(model, cfg.decay_on)}
    groups = []
    for group_lr, params in ((lr, model.backbone_parameters()), (head_lr, list(model.head.parameters()))):
        groups.append({"params": [p for p in params if id(p) in decayed], "lr": group_lr,
                       "weight_decay": cfg.weight_decay})
        groups.append({"params": [p for p in params if id(p) not in decayed], "lr": group_lr, "weight_decay": 0.0})
    if aux is not None:
        groups.append({"params": list(aux.parameters()), "lr": lr, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adam":
        return (TFAdam if cfg.adam_eps_style == "tf" else torch.optim.Adam)(groups, eps=cfg.adam_eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, eps=cfg.adam_eps)
    return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.nesterov)


class TFAdam(torch.optim.Optimizer):
    """TensorFlow 1's AdamOptimizer (tensorflow/python/training/adam.py): with t the step count,
    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, theta -= lr sqrt(1 - b2^t) / (1 - b1^t) * m /
    (sqrt(v) + eps), so its eps sits outside the bias correction (Kingma and Ba's "epsilon hat"):
    torch's Adam with eps / sqrt(1 - b2^t), a larger eps in the first steps. `weight_decay` is
    added to the gradient, as an L2 term in the loss adds it (torch's Adam does the same)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                state["m"].mul_(b1).add_(grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                lr_t = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-lr_t)
        return loss


def decayed_parameters(model: torch.nn.Module, decay_on: str) -> list[torch.nn.Parameter]:
    """all: every parameter | weights: the `weight` of each conv and linear layer (slim's
    weights_regularizer; BiMap's W, biases and norm layers are left alone)."""
    if decay_on == "all":
        return list(model.parameters())
    return [m.weight for m in model.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]


def constrain_after_step(model: torch.nn.Module, optimizer, args, kwargs) -> None:
    """An optimiser step hook: the model restores its weight constraints (`FERNet.constrain_`)."""
    model.constrain_()


def make_scheduler(optimizer, cfg: LoopParams, epochs: int):
    if cfg.scheduler == "piecewise":
        piecewise = cfg.piecewise
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: piecewise.factor(epoch))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step.step_size, gamma=cfg.step.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if cfg.scheduler == "plateau":
        p = cfg.plateau
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if p.monitor == "accuracy" else "min", factor=p.factor,
            patience=p.patience, threshold=p.threshold, min_lr=p.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def warn_few_steps(desc: str, steps_per_epoch: int, epochs: int, batch_size: int) -> None:
    """A run with fewer than MIN_STEPS optimiser steps: say which params to raise."""
    steps = steps_per_epoch * epochs
    if steps < MIN_STEPS:
        log.warning("%s: only %d optimiser steps (%d per epoch x %d epochs): raise epochs, lower batch_size "
                    "(now %d) or add data, or start from a pretrained model", desc, steps, steps_per_epoch,
                    epochs, batch_size)


def open_live(live_dir: str | None, history: list[dict] = ()):
    """A fresh dvclive run, with the epochs of `history` (a resumed run's) logged again first:
    DVC deletes a stage's outputs before rerunning it, so the old curves may be gone."""
    if live_dir is None:
        return None
    from dvclive import Live
    live = Live(live_dir, resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
    for row in history:
        log_epoch(live, row)
    return live


def close_live(live, live_dir: str | None) -> None:
    """End the dvclive run. With no epoch logged (epochs 0: an imported model used as it is)
    dvclive writes no curve, so its plots folder, a stage output in dvc.yaml, is made empty."""
    if live is None:
        return
    live.end()
    (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)


def log_epoch(live, row: dict) -> None:
    """One epoch's row (everything but its `epoch` number) as one dvclive step."""
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


@dataclass(frozen=True)
class Data:
    """What a classification run trains and validates on: uint8 NHWC images with labels, and
    the input normalisation (mean, std) its model uses."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]   # no rows: train without validating, keep the last epoch
    norm: tuple[list, list | None]
    n_classes: int
    # (teacher features of each val face at full resolution, weight): the val loss adds weight x
    # the MSE of the model's features to them, as MAFER step 1 monitors it (trainer.py:39-42)
    val_teacher: tuple[torch.Tensor, float] | None = None


@dataclass(frozen=True)
class Run:
    """Where a run resumes and logs, and its place under DDP. `run_hash` names the params behind
    a resume checkpoint (one from other params is not resumed)."""

    seed: int
    desc: str
    run_hash: str = ""
    resume: str | os.PathLike | None = None
    live_dir: str | None = None
    rank: int = 0
    world: int = 1


def validation_points(n_batches: int, cfg: LoopParams) -> list[int]:
    """The batches of an epoch (1-based) after which the loop validates. val_unit epoch: every
    floor(val_every x n) batches (MAFER step 2's `idx % (len(loader) // 2) == 0`); steps: after
    every val_every-th optimiser step that another batch of the epoch follows (MAFER step 1 checks
    its step count at the start of each batch, from 0 each epoch)."""
    if cfg.val_unit == "epoch":
        every = math.floor(n_batches * cfg.val_every + 1e-9)
        points = list(range(every, n_batches + 1, every)) if every else []
    else:
        every = int(cfg.val_every) * cfg.accumulate
        points = list(range(every, n_batches, every))
    if not points:
        raise ValueError(f"val_every {cfg.val_every} ({cfg.val_unit}, accumulate {cfg.accumulate}) gives no "
                         f"validation in an epoch of {n_batches} batches: lower it or the batch size")
    return points


def train_one_epoch(net: torch.nn.Module, loader: ArrayLoader, optimizer, scaler, loss_fn: LossFn, epoch: int,
                    use_amp: bool, desc: str, accumulate: int = 1, validate: Callable[[int], None] | None = None,
                    points: tuple[int, ...] | list[int] = ()) -> tuple[float, float]:
    """One pass over `loader`; (mean training loss, training accuracy). The gradients of
    `accumulate` batches add up before each optimiser step (an incomplete last group is dropped);
    `validate(i)` runs after each batch i (1-based) in `points`."""
    net.train()
    total_loss, correct, seen = 0.0, 0, 0
    points = set(points)
    optimizer.zero_grad(set_to_none=True)
    for i, (xb, yb) in enumerate(tqdm(loader, desc=desc, leave=False, disable=desc is None, mininterval=2), 1):
        steps = i % accumulate == 0
        with contextlib.nullcontext() if steps or not hasattr(net, "no_sync") else net.no_sync():
            with autocast(loader.device, use_amp):
                loss, logits = loss_fn(net, xb, yb, epoch)
            scaler.scale(loss).backward()   # DDP all-reduces on the batch that steps only
        if steps:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        total_loss += float(loss.detach()) * len(yb)
        if not math.isfinite(total_loss):   # stop: the weights are NaN from here on
            raise DivergedError(f"{desc or f'epoch {epoch + 1}'}: the training loss is {total_loss} by face "
                                f"{seen + len(yb)}; likely causes: lr too high, a class weight of 0 "
                                "(class_weighted on a training split of one class), or non-finite input")
        correct += int((logits.detach().argmax(1) == yb).sum())
        seen += len(yb)
        if i in points:
            validate(i)
            net.train()
    optimizer.zero_grad(set_to_none=True)   # MAFER's code zeroes an incomplete group's gradients too
    return total_loss / max(seen, 1), correct / max(seen, 1)


def evaluate(model: torch.nn.Module, data: Data, device: torch.device, batch_size: int, share: float = 1.0,
             amp: bool = True) -> dict:
    """Validation loss and metrics (accuracy, average accuracy, ...) of `model` on `data.val`, or
    on its first floor(share x batches) batches of `batch_size` (at least one) when share < 1;
    autocast on CUDA only with `amp`."""
    images, labels = data.val
    if share < 1:
        rows = max(1, math.floor(math.ceil(len(labels) / batch_size) * share + 1e-6)) * batch_size
        images, labels = images[:rows], labels[:rows]
    logits = infer(model, images, *data.norm, device=device, batch_size=max(256, batch_size), amp=amp)
    loss = float(F.cross_entropy(logits, torch.as_tensor(labels, dtype=torch.long)))
    if data.val_teacher is not None:
        target, weight = data.val_teacher
        features = infer(model, images, *data.norm, device=device, batch_size=max(256, batch_size), what="features",
                         amp=amp)
        loss += weight * float(F.mse_loss(features, target[:len(labels)].float()))
    return {"loss": loss, **summarize(labels, logits.argmax(1).numpy(), data.n_classes)}


class Trainer:
    """The optimiser, scheduler, loss scaler and best-epoch state of one run, and its resume
    checkpoint: everything `fit` keeps between epochs."""

    def __init__(self, model, cfg: LoopParams, run: Run, epochs: int, lr: float, head_lr: float,
                 generators: dict[str, torch.Generator], aux: torch.nn.Module | None, device: torch.device):
        self.model, self.aux, self.run, self.generators = model, aux, run, generators
        self.optimizer = make_optimizer(model, cfg, lr, head_lr, aux)
        self.optimizer.register_step_post_hook(functools.partial(constrain_after_step, model))
        self.scheduler = make_scheduler(self.optimizer, cfg, epochs)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not torch.cuda.is_bf16_supported())
        self.state = {"epoch": 0, "best": -math.inf, "best_state": None, "bad_validations": 0, "history": []}
        self.path = Path(run.resume) if run.resume else None

    def resume(self) -> None:
        """Continue from the resume checkpoint when it holds this run's params."""
        if not (self.path and self.path.is_file()):
            return
        saved = checkpoint.load(self.path)
        if saved.get("run_hash") != self.run.run_hash:
            log.warning("%s: checkpoint from other params (hash %s, now %s): starting from scratch",
                        self.path, saved.get("run_hash"), self.run.run_hash)
            return
        self.model.load_state_dict(saved["model"])
        if self.aux is not None:
            self.aux.load_state_dict(saved["aux"])
        for name in ("optimizer", "scheduler", "scaler"):
            getattr(self, name).load_state_dict(saved[name])
        set_rng_state(saved["rng"], self.generators)
        self.state = saved["state"]
        log.info("resuming %s from epoch %d (%s)", self.run.desc, self.state["epoch"], self.path)

    def save(self) -> None:
        if self.run.rank == 0 and self.path:
            checkpoint.save(self.path, {
                "run_hash": self.run.run_hash, "model": self.model.state_dict(),
                "aux": self.aux.state_dict() if self.aux is not None else None,
                **{name: getattr(self, name).state_dict() for name in ("optimizer", "scheduler", "scaler")},
                "rng": rng_state(self.generators), "state": self.state})

    def validated(self, val: dict, monitor_plateau: str | None) -> None:
        """One validation: step the plateau scheduler on it (when `monitor_plateau` names the value
        it watches), keep the best val-accuracy weights."""
        state = self.state
        if monitor_plateau is not None:
            self.scheduler.step(val[monitor_plateau])
        if val["accuracy"] > state["best"]:
            state["best"], state["bad_validations"] = val["accuracy"], 0
            state["best_state"] = copy.deepcopy(self.model.state_dict())
        else:
            state["bad_validations"] += 1

    def end_epoch(self, row: dict) -> None:
        """Record the epoch."""
        self.state["history"].append(row)
        self.state["epoch"] = row["epoch"]


def check_no_validation(cfg: LoopParams, desc: str) -> None:
    """Training with no validation split (CovPoolFER and FSR-FER train on the whole training set
    and keep the last epoch) is refused while a setting still needs validation."""
    needs = [name for name, used in (("restore_best: true", cfg.restore_best),
                                     (f"patience: {cfg.patience}", cfg.patience > 0),
                                     ("scheduler: plateau", cfg.scheduler == "plateau")) if used]
    if needs:
        raise ParamsError(f"{desc}: the validation split is empty (assemble.val_fraction 0), but {', '.join(needs)} "
                          "need one: set restore_best false, patience 0 and another scheduler to train on the whole "
                          "training split and keep the last epoch")


def fit(model: torch.nn.Module, loader: ArrayLoader, data: Data, cfg: LoopParams, run: Run, *, epochs: int,
        loss_fn: LossFn, lr: float | None = None, head_lr: float | None = None,
        generators: dict[str, torch.Generator] | None = None, aux: torch.nn.Module | None = None) -> list[dict]:
    """Train `model` in place for `epochs` (lr / head_lr: the section's unless given); returns the
    per-epoch history (loss, accuracies, lr). `aux` is a loss module with state of its own (the
    centre loss's centres): optimised and checkpointed too."""
    device = loader.device
    loader.set_memory_budget(cfg.memory_budget_gb)
    if len(loader) == 0:
        raise ValueError(f"{run.desc}: empty training set ({len(loader.images)} training rows, batch size "
                         f"{loader.batch_size})")
    validates = len(data.val[0]) > 0
    if not validates:
        check_no_validation(cfg, run.desc)
    warn_few_steps(run.desc, len(loader) // cfg.accumulate, epochs, loader.batch_size)
    points = validation_points(len(loader), cfg) if validates else []
    trainer = Trainer(model, cfg, run, epochs, lr or cfg.lr, head_lr or cfg.head_lr,
                      {"loader": loader.generator, **(generators or {})}, aux, device)
    trainer.resume()
    net = WithFeatures(model, aux)
    if run.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    live = open_live(run.live_dir, trainer.state["history"]) if run.rank == 0 else None

    monitor = cfg.plateau.monitor if cfg.scheduler == "plateau" else None
    for epoch in range(trainer.state["epoch"], epochs):
        bar = f"{run.desc} epoch {epoch + 1}/{epochs}" if run.rank == 0 else None
        lr_now = trainer.optimizer.param_groups[0]["lr"]
        vals = []

        def validate(batch: int) -> None:
            vals.append(evaluate(model, data, device, cfg.batch_size, cfg.val_batches, cfg.amp))
            trainer.validated(vals[-1], monitor)
            if len(points) > 1:
                log.info("%s epoch %d batch %d/%d: val accuracy %.4f, loss %.5f, lr %g", run.desc, epoch + 1, batch,
                         len(loader), vals[-1]["accuracy"], vals[-1]["loss"], trainer.optimizer.param_groups[0]["lr"])

        train_loss, train_accuracy = train_one_epoch(net, loader, trainer.optimizer, trainer.scaler, loss_fn,
                                                     epoch, trainer.use_amp, bar, cfg.accumulate, validate, points)
        if monitor is None:
            trainer.scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_accuracy": round(train_accuracy, 4)}
        if vals:
            row.update(val_loss=round(vals[-1]["loss"], 5), val_accuracy=vals[-1]["accuracy"],
                       val_average_accuracy=vals[-1]["average_accuracy"])
        row["lr"] = lr_now
        log.info("%s epoch %d: %s", run.desc, epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
        log_epoch(live, row)
        trainer.end_epoch(row)
        trainer.save()
        if cfg.patience and trainer.state["bad_validations"] >= cfg.patience:
            log.info("%s: early stop after epoch %d (no val gain in %d validations)", run.desc, epoch + 1,
                     cfg.patience)
            break

    if cfg.restore_best and trainer.state["best_state"] is not None:
        model.load_state_dict(trainer.state["best_state"])
    close_live(live, run.live_dir)
    if run.rank == 0 and trainer.path and trainer.path.is_file():
        trainer.path.unlink()  # finished: a later run with these params is DVC's run-cache's job
    return trainer.state["history"]


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in generators.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
