"""Export an encoder and its fitted whitening as a sentence-transformers model folder.

Transformer → Pooling → Dense → Normalize, with the model's query/passage prefixes as named
prompts, so the whitened model runs unchanged wherever sentence-transformers folders load
(sentence-transformers, MTEB, TEI, infinity). The Dense layer is the whitening itself:
``y = (x − βμ)·W[:, :k] = x·W[:, :k] − βμ·W[:, :k]``, weight ``W[:, :k]ᵀ`` and bias ``−βμW[:, :k]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baihua.core.errors import UsageError
from baihua.core.files import write_folder_atomic
from baihua.encoder import Encoder
from baihua.encoder.pooling import ST_MODES, parse_pooling
from baihua.whitening import Whitening

# our pooling mode → sentence-transformers' pooling_mode; pooler and first-last-avg have none
ST_POOLINGS = {ours: theirs for theirs, ours in ST_MODES.items()}


def dense_parameters(
    whitening: Whitening, dimensions: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (k, d) weight and (k,) bias of a linear layer computing the whitening's first k
    components (all of them when `dimensions` is None)."""
    k = whitening.n_components_ if dimensions is None else dimensions
    if not 1 <= k <= whitening.n_components_:
        raise UsageError(
            f"--dimensions {k}: the whitening has {whitening.n_components_} components; "
            f"choose 1 to {whitening.n_components_}"
        )
    components = whitening.components_[:, :k]
    bias = -(whitening.beta * whitening.mean_) @ components
    return components.T.astype(np.float32), bias.astype(np.float32)


def export_sentence_transformers(
    encoder: Encoder,
    whitening: Whitening | None,
    out: Path,
    *,
    model_folder: str,
    dimensions: int | None = None,
) -> None:
    """Write `out` (a new folder) as a sentence-transformers model giving this encoder's
    whitened, normalised vectors; `model_folder` holds the encoder's transformers checkpoint;
    `dimensions` keeps the whitening's first components. Written beside `out` first and renamed
    into place, so a crash leaves no half folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        Normalize,
        Pooling,
        Transformer,
    )

    pooling = parse_pooling(encoder.pooling)
    if any(mode not in ST_POOLINGS for mode in pooling.modes):
        raise UsageError(
            f"pooling {encoder.pooling!r} has no sentence-transformers equivalent; export "
            f"supports {', '.join(ST_POOLINGS)}"
        )
    if encoder.st is not None and encoder.st.steps:
        raise UsageError(
            f"model {encoder.name!r} is a sentence-transformers folder with Dense or Normalize "
            "modules already; export the transformer it was made from"
        )
    if whitening is not None and not isinstance(whitening, Whitening):
        raise UsageError("only whitening exports to a linear layer; a flow is not linear")
    if dimensions is not None and whitening is None:
        raise UsageError("--dimensions needs --whitening: raw vectors have no ordered components")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty folder; choose a new one")
    transformer = Transformer(model_folder, max_seq_length=encoder.max_length)
    modules: list[torch.nn.Module] = [
        transformer,
        Pooling(
            encoder.runner.dim,
            pooling_mode=tuple(ST_POOLINGS[mode] for mode in pooling.modes),
            include_prompt=pooling.include_prompt,
        ),
    ]
    if whitening is not None:
        weight, bias = dense_parameters(whitening, dimensions)
        modules.append(
            Dense(
                encoder.dim,
                weight.shape[0],
                bias=True,
                activation_function=torch.nn.Identity(),
                init_weight=torch.from_numpy(weight),
                init_bias=torch.from_numpy(bias),
            )
        )
    modules.append(Normalize())
    # "document" is sentence-transformers' own name (encode_document); MTEB asks for "passage"
    passage = encoder.prefix("passage")
    prompts = {"query": encoder.prefix("query"), "passage": passage, "document": passage}
    model = SentenceTransformer(
        modules=modules,
        prompts={name: prefix for name, prefix in prompts.items() if prefix},
        similarity_fn_name="cosine",
        device="cpu",
    )
    write_folder_atomic(out, lambda folder: model.save(str(folder)))
