"""BERT-flow (Li et al. 2020, bohanli/BERT-flow): a Glow fitted by maximum likelihood on frozen
sentence vectors, as a scikit-learn estimator beside :class:`whitening.Whitening`.

The vector is a 1×1×D image, so every convolution is 1×1, i.e. a linear map over channels. The
flow is ``n_levels`` levels of ``n_steps`` steps; each step is ActNorm → channel reversal →
additive coupling, and between levels the second half of the channels is split off and scored
under N(0, I) (as is the last level's output). The latent z — the split-off halves in level order,
then the last level's output — has the input's dimension and is what downstream code compares by
cosine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pydantic
import torch
from torch import nn

from baihua.core.errors import UsageError
from baihua.whitening.artifact import FlowParams, TransformMetadata
from baihua.whitening.base import TransformBase
from baihua.whitening.moments import BLOCK_ROWS

# Glow's "logscale_factor": log-scales are stored divided by 3, so Adam moves them 3× faster.
_ACTNORM_DEAD_CHANNEL = 1e-4
_LOGSCALE_FACTOR = 3.0
# Glow's initial std for the coupling networks' hidden 1×1 convolutions.
_HIDDEN_INIT_STD = 0.05
# The reference clips the flow's gradients to global norm 1 and uses Adam's ε = 1e-6.
_MAX_GRAD_NORM = 1.0
_ADAM_EPS = 1e-6
_LOG_2PI = math.log(2.0 * math.pi)


class _ActNorm(nn.Module):
    """``y = (x + b) · exp(s)`` per channel, with ``s = 3 · logs``.

    While ``initializing`` is set, a forward pass first sets b and s from its input so that the
    output has zero mean and unit variance per channel (Glow's data-dependent initialisation).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.logs = nn.Parameter(torch.zeros(channels))
        self.initializing = False

    def log_scale(self) -> torch.Tensor:
        return self.logs * _LOGSCALE_FACTOR

    def log_det(self) -> torch.Tensor:
        """log |det ∂y/∂x|, the same for every input."""
        return self.log_scale().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.initializing:
            self._initialize(x)
        return (x + self.bias) * torch.exp(self.log_scale())

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale()) - self.bias

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=0)
        std = (x - mean).pow(2).mean(dim=0).sqrt()
        # A channel (nearly) constant in the first batch (all-MiniLM-L6-v2 has three, ~1e-32)
        # keeps scale 1: scaling it up in every step compounds to an infinite loss once training
        # moves the couplings. "Nearly" is relative to the widest channel.
        alive = std > std.max() * _ACTNORM_DEAD_CHANNEL
        self.bias.copy_(-mean)
        self.logs.copy_(torch.where(alive, -torch.log(std), 0.0) / _LOGSCALE_FACTOR)


class _ZeroLinear(nn.Module):
    """Glow's last coupling layer, ``(x Wᵀ + b) · exp(3 · logs)``, all zero at first, so that
    every coupling starts as the identity."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.logs = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias) * torch.exp(
            self.logs * _LOGSCALE_FACTOR
        )


class _AdditiveCoupling(nn.Module):
    """``[x₁, x₂] ↦ [x₁, x₂ + NN(x₁)]``: volume-preserving, inverted by subtracting NN(x₁).

    NN is Glow's 1×1 stack: linear → ActNorm → ReLU, twice, then a zero-initialised layer.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.n_conditioning = channels // 2
        self.shift = nn.Sequential(
            nn.Linear(self.n_conditioning, hidden, bias=False),
            _ActNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False),
            _ActNorm(hidden),
            nn.ReLU(),
            _ZeroLinear(hidden, channels - self.n_conditioning),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.n_conditioning], x[:, self.n_conditioning :]
        return torch.cat([x1, x2 + self.shift(x1)], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.n_conditioning], y[:, self.n_conditioning :]
        return torch.cat([y1, y2 - self.shift(y1)], dim=1)


class _FlowStep(nn.Module):
    """ActNorm → fixed channel reversal → additive coupling; only ActNorm changes volume."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.actnorm = _ActNorm(channels)
        self.coupling = _AdditiveCoupling(channels, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.coupling(self.actnorm(x).flip(1)), self.actnorm.log_det()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.coupling.inverse(y).flip(1))


class _Level(nn.Module):
    """``n_steps`` flow steps on a fixed number of channels."""

    def __init__(self, channels: int, n_steps: int, hidden: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(_FlowStep(channels, hidden) for _ in range(n_steps))

    def _step_list(self) -> list[_FlowStep]:
        return cast("list[_FlowStep]", list(self.steps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(())
        for step in self._step_list():
            x, step_log_det = step(x)
            log_det = log_det + step_log_det
        return x, log_det

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for step in reversed(self._step_list()):
            y = step.inverse(y)
        return y


class _Glow(nn.Module):
    """The multi-scale flow x ↦ z; level l works on ``n_features / 2**l`` channels."""

    def __init__(self, n_features: int, n_levels: int, n_steps: int, hidden: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            _Level(n_features >> level, n_steps, hidden) for level in range(n_levels)
        )

    def _level_list(self) -> list[_Level]:
        return cast("list[_Level]", list(self.levels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return z and log |det ∂z/∂x| of shape (n_samples,)."""
        *splitting, last = self._level_list()
        latents = []
        log_det = x.new_zeros(())
        for level in splitting:
            x, level_log_det = level(x)
            log_det = log_det + level_log_det
            half = x.shape[1] // 2
            latents.append(x[:, half:])
            x = x[:, :half]
        x, level_log_det = last(x)
        latents.append(x)
        return torch.cat(latents, dim=1), (log_det + level_log_det).expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        *splitting, last = self._level_list()
        # z holds n/2, n/4, … split-off channels, then the last level's output.
        sizes = [z.shape[1] >> (i + 1) for i in range(len(splitting))]
        *split_off, x = torch.split(z, [*sizes, z.shape[1] - sum(sizes)], dim=1)
        x = last.inverse(x)
        for level, latent in zip(reversed(splitting), reversed(split_off), strict=True):
            x = level.inverse(torch.cat([x, latent], dim=1))
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, shape (n_samples,): every latent scored under N(0, I)."""
        z, log_det = self(x)
        return -0.5 * (z.pow(2) + _LOG_2PI).sum(dim=1) + log_det

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Glow's initialisation: hidden linears N(0, 0.05²), everything else as constructed
        (identity ActNorms, zero last layers)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=_HIDDEN_INIT_STD, generator=generator)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation: one pass over ``x`` in which every ActNorm sets itself
        to give zero-mean, unit-variance outputs."""
        actnorms = [module for module in self.modules() if isinstance(module, _ActNorm)]
        for actnorm in actnorms:
            actnorm.initializing = True
        try:
            self(x)
        finally:
            for actnorm in actnorms:
                actnorm.initializing = False


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_divisible(n_features: int, n_levels: int) -> None:
    if n_features % 2**n_levels == 0:
        return
    most = (n_features & -n_features).bit_length() - 1  # the power of 2 dividing n_features
    advice = (
        f"use n_levels <= {most}"
        if most >= 1
        else "odd dimensions are not supported; reduce the vectors to an even dimension first"
    )
    raise UsageError(
        f"Flow with n_levels={n_levels} needs n_features divisible by 2**{n_levels} = "
        f"{2**n_levels} (each level's coupling halves the channels and each split halves them "
        f"again), got {n_features}; {advice}"
    )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UsageError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}"
        ) from error
    if resolved.type not in ("cpu", "cuda"):
        raise UsageError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


class Flow(TransformBase):
    """BERT-flow: maps sentence vectors through a Glow trained to make them N(0, I).

    Like whitening it removes the anisotropy of raw BERT vectors, but with a learned non-linear
    bijection instead of a linear map. The defaults are the paper's: 3 levels × 3 steps, coupling
    width 32, AdamW at lr 1e-3 (weight decay 0.01, gradient norm clipped to 1, as the reference
    trains the flow), one epoch over the shuffled vectors in batches of 32.

    The training loss, ``loss_curve_`` and :meth:`nll` are the negative log-likelihood in nats per
    dimension (the reference reports bits per dimension: divide by ln 2). Vectors are processed
    in float32. Training is thousands of tiny operations; on a busy CPU, one torch thread
    (``torch.set_num_threads(1)``, the caller's choice) can be several times faster than many.

    Parameters
    ----------
    n_levels : int
        Levels of the multi-scale flow; n_features must be divisible by ``2**n_levels`` (384 and
        768 allow up to 7 and 8) because each level halves the channels it passes on, and odd
        halves would need padding that ActNorm cannot normalise.
    n_steps : int
        Flow steps (ActNorm, reversal, coupling) per level.
    hidden : int
        Width of the coupling networks' two hidden layers.
    lr : float
        AdamW learning rate.
    epochs : int
        Passes over the vectors, each in a fresh random order.
    batch_size : int
        Vectors per optimiser step, at least 2: the first batch also initialises ActNorm.
    weight_decay : float
        AdamW's decoupled weight decay, applied to all parameters as in the reference.
    seed : int
        Seeds the weight initialisation and the shuffling, so fits on one device repeat exactly.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``: where the
        flow trains and runs.
    num_threads : int or None
        torch's CPU threads while ``fit`` trains, restored afterwards; None keeps the process's.
        The default, 1, was ~10x faster than 2 on a busy 2-core machine (tiny matrix products).

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained Glow, in eval mode, on the device it was fitted (or loaded) for.
    n_components_ : int
        Output dimension, always ``n_features_in_``: a bijection cannot truncate.
    n_features_in_ : int
        Dimension of the input vectors.
    n_samples_seen_ : int
        Number of vectors the flow was fitted on.
    loss_curve_ : list of float
        Training loss (NLL, nats per dimension) of each optimiser step. Set by ``fit`` only.
    fit_time_ : float
        Seconds ``fit`` took. Set by ``fit`` only.
    metadata : TransformMetadata
        Set by ``from_pretrained`` only: what the loaded transform was fitted for.
    """

    def __init__(
        self,
        n_levels: int = 3,
        n_steps: int = 3,
        hidden: int = 32,
        lr: float = 1e-3,
        epochs: int = 1,
        batch_size: int = 32,
        weight_decay: float = 0.01,
        seed: int = 0,
        device: str = "auto",
        num_threads: int | None = 1,
    ) -> None:
        self.n_levels = n_levels
        self.n_steps = n_steps
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device
        self.num_threads = num_threads

    method = "flow"

    def fit(self, X: Any, y: Any = None) -> Flow:
        """Train a fresh flow on ``X`` of shape (n_samples, n_features), forgetting earlier fits;
        ``y`` is ignored.

        Raises
        ------
        FloatingPointError
            If the loss stopped being finite (training diverged); lower ``lr``.
        """
        return super().fit(X)

    def _fit(self, X: np.ndarray) -> Flow:
        params = self._params()
        n_samples, n_features = X.shape
        _check_divisible(n_features, params.n_levels)
        if n_samples < 2:
            raise UsageError(
                f"Flow needs at least 2 vectors to fit (ActNorm is initialised from their "
                f"variance), got n_samples={n_samples}"
            )
        device = _resolve_device(self.device)
        with _torch_threads(self.num_threads):
            return self._train(X, params, device)

    def _train(self, X: np.ndarray, params: FlowParams, device: torch.device) -> Flow:
        n_samples, n_features = X.shape
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(params.seed)
        module = _Glow(n_features, params.n_levels, params.n_steps, params.hidden)
        module.reset_parameters(generator)
        module.to(device)
        vectors = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        parameters = list(module.parameters())
        # Fused: one kernel for all ~100 small tensors, several times faster than the loop.
        optimizer = torch.optim.AdamW(
            parameters,
            lr=params.lr,
            eps=_ADAM_EPS,
            weight_decay=params.weight_decay,
            fused=True,
        )
        losses = []
        for epoch in range(params.epochs):
            order = torch.randperm(n_samples, generator=generator)
            if epoch == 0:
                module.initialize(vectors[order[: params.batch_size]].to(device))
            for start in range(0, n_samples, params.batch_size):
                batch = vectors[order[start : start + params.batch_size]].to(device)
                loss = -module.log_prob(batch).mean() / n_features
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(parameters, _MAX_GRAD_NORM)
                optimizer.step()
                # Kept on the device: reading each loss would synchronise a GPU every step.
                losses.append(loss.detach())
        loss_curve = torch.stack(losses).cpu().tolist()
        if not all(math.isfinite(loss) for loss in loss_curve):
            step = next(i for i, loss in enumerate(loss_curve) if not math.isfinite(loss))
            raise FloatingPointError(
                f"Flow training diverged: the loss became {loss_curve[step]} at step {step}; "
                f"lower lr (now {params.lr})"
            )
        self._set_fitted(module.eval(), n_features, n_samples)
        self.loss_curve_ = loss_curve
        self.fit_time_ = time.perf_counter() - started
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Map ``X`` of shape (n_samples, n_features) to the latent z, float32, same shape."""
        X = self._check_input(X, "transform")
        return self._apply(lambda batch: self.module_(batch)[0], X)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Map latents ``Z`` of shape (n_samples, n_features) back to vectors, float32."""
        Z = self._check_input(Z, "inverse_transform", name="Z")
        return self._apply(self.module_.inverse, Z)

    def score_samples(self, X: Any) -> np.ndarray:
        """log p(x) of each row of ``X`` under the flow, in nats (a density: it can exceed 0)."""
        X = self._check_input(X, "score_samples")
        return self._apply(self.module_.log_prob, X).astype(np.float64)

    def nll(self, X: Any) -> float:
        """Mean negative log-likelihood of ``X`` in nats per dimension, the training loss."""
        return float(-self.score_samples(X).mean() / self.n_features_in_)

    def _artifact_contents(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensors = {
            name: tensor.detach().cpu().numpy().astype(np.float32)
            for name, tensor in self.module_.state_dict().items()
        }
        return tensors, {"method": "flow", "flow": self._params()}

    @classmethod
    def _expected_shapes(cls, metadata: TransformMetadata) -> dict[str, tuple[int, ...]]:
        # The metadata validator requires the flow section for flows.
        assert metadata.flow is not None
        d = metadata.n_features_in
        if metadata.n_components != d:
            raise ValueError(
                f"a flow keeps all {d} dimensions but the metadata says "
                f"n_components={metadata.n_components}"
            )
        _check_divisible(d, metadata.flow.n_levels)
        module = _Glow(d, metadata.flow.n_levels, metadata.flow.n_steps, metadata.flow.hidden)
        return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}

    @classmethod
    def _from_artifact(
        cls, tensors: dict[str, np.ndarray], metadata: TransformMetadata, **options: Any
    ) -> Flow:
        """``options`` may set ``device`` (default ``"auto"``): where the loaded flow runs."""
        assert metadata.flow is not None
        params, d = metadata.flow, metadata.n_features_in
        flow = cls(**params.model_dump(), **options)
        module = _Glow(d, params.n_levels, params.n_steps, params.hidden)
        module.load_state_dict({name: torch.from_numpy(t) for name, t in tensors.items()})
        flow._set_fitted(module.to(_resolve_device(flow.device)).eval(), d, metadata.n_samples)
        return flow

    def _set_fitted(self, module: _Glow, n_features: int, n_samples: int) -> None:
        self.module_ = module
        self.n_features_in_ = n_features
        self.n_components_ = n_features
        self.n_samples_seen_ = n_samples

    def check_params(self, n_features: int | None = None) -> None:
        """Raise UsageError for hyperparameters that cannot work: they are checked by the
        artifact's own `FlowParams` schema, which records them, and the device must exist."""
        self._params()
        _resolve_device(self.device)

    def _params(self) -> FlowParams:
        try:
            return FlowParams(
                n_levels=self.n_levels,
                n_steps=self.n_steps,
                hidden=self.hidden,
                lr=self.lr,
                epochs=self.epochs,
                batch_size=self.batch_size,
                weight_decay=self.weight_decay,
                seed=self.seed,
            )
        except pydantic.ValidationError as error:
            raise UsageError(f"invalid Flow hyperparameters: {error}") from error

    def _apply(self, function: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray) -> np.ndarray:
        device = next(self.module_.parameters()).device
        blocks = []
        with torch.no_grad():
            for start in range(0, X.shape[0], BLOCK_ROWS):
                block = np.ascontiguousarray(X[start : start + BLOCK_ROWS], dtype=np.float32)
                blocks.append(function(torch.from_numpy(block).to(device)).cpu().numpy())
        return np.concatenate(blocks)
