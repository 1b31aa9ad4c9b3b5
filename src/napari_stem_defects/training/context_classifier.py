"""Train the context-encoder column classifier on multislice-calibrated twins across materials and microscopes.

Each training twin draws a material (the known hosts, alloys and Janus layers, and layers stated
with a foreign metal, a foreign chalcogen or both: :data:`TRAIN_MATERIALS`), every defect class it
allows at 1.5-4.5 % of the cells (a stated metal dopant at 5-12 %, and then at most 1 % chalcogen
pairs on metal sites; a stated chalcogen at 5-12 %, and then at most 1 % metal atoms on X2 sites),
and a microscope (60-300 kV, convergence, detector angles) whose column cross-sections and probe
come from the multislice-calibrated table (``random_imaging(column_model="table")``), with the
dose log-uniform in 5e3-1e7 e/Å^2 and the pixel size wide (4.5-16 px per metal-to-chalcogen
distance). Columns are read at their true positions moved by up to 0.08 nn (detection error); in one
example out of five the microscope is withheld (the 'unknown' context a file without metadata
gives), and in another the beam energy alone is given (a file that records its kV, not its
detector). Seeded throughout. torch is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..columns.context_classifier import (
    build_context_classifier,
    contrast_features,
    site_contexts,
    type_mask,
    type_probabilities,
)
from ..columns.context_vector import COLUMN_TYPES, column_type
from ..columns.species import host_labels
from ..materials import KNOWN_MATERIALS, METALS, parse_material
from ..simulate import DigitalTwin, random_imaging, simulate_twin
from .cell_cnn import defect_plan, jitter

#: Materials of the training twins: the known ones and doped layers (3d dopants as in the study, the
#: usual 4d/5d metal dopant, a foreign chalcogen, and both at once as a doped and implanted sample is stated).
TRAIN_MATERIALS: tuple[str, ...] = (*KNOWN_MATERIALS, "WSe2+V", "WSe2+Cr", "WSe2+Mn", "WSe2+Co", "MoS2+V",
                                    "MoS2+Cr", "MoS2+Mn", "MoS2+Co", "WS2+V", "WS2+Co", "MoSe2+Cr", "MoSe2+Mn",
                                    "MoS2+Nb", "WSe2+Re", "MoTe2+W", "MoS2+W", "MoSe2+W", "WS2+Mo", "WSe2+Mo",
                                    "MoS2+Se", "WS2+Se", "MoSe2+S", "WSe2+S", "MoTe2+Se", "WSe2+Te",
                                    "MoS2+W+Se", "WS2+Mo+Se", "MoSe2+W+S", "WSe2+Mo+S", "MoTe2+V+Se")
#: Share of substituted cells in a twin of a material with a stated foreign atom (the library's 6-10 %):
#: dopant_M for a stated metal, sub_X for a stated chalcogen.
STATED_DOPANT_RANGE: tuple[float, float] = (0.05, 0.12)
#: Largest share of the antisite a stated atom resembles (X_M beside a stated metal, M_X beside a stated
#: chalcogen): few, so that the stated composition decides between the two.
STATED_ANTISITE_MAX: float = 0.01
#: Share of examples whose microscope is withheld.
UNKNOWN_MICROSCOPE: float = 0.2
#: Share of examples given the beam energy alone (a file that records its kV but not its detector).
ENERGY_ONLY: float = 0.2
#: Largest detection error of a training column, in nn.
POSITION_ERROR_NN: float = 0.08


def random_context_twin(seed: int, material: str | None = None, size: int = 160) -> DigitalTwin:
    """A twin with a random (or given) material, defects, calibrated microscope, dose and scale."""
    rng = np.random.default_rng([seed, 32])
    name = material or TRAIN_MATERIALS[int(rng.integers(len(TRAIN_MATERIALS)))]
    mat = parse_material(name)
    plan = defect_plan(mat, rng)
    for kind, substituted, antisite in (("dopant", "dopant_M", "X_M"), ("substituent", "sub_X", "M_X")):
        stated = [el for el in mat.dopants if (el in METALS) == (kind == "dopant")]
        if not stated:
            continue
        if rng.random() < 0.8:
            plan[kind] = str(rng.choice(stated))
        if substituted in plan["defects"]:
            # the user says the atom is there: many of its substitutions, few of the antisite it can resemble
            # (an S2 pair on a metal site like a light dopant, a Mo atom on an X2 site like S+Se), so that
            # the stated composition decides between the two
            plan["defects"][substituted] = float(rng.uniform(*STATED_DOPANT_RANGE))
            if antisite in plan["defects"]:
                plan["defects"][antisite] = float(rng.uniform(0.0, STATED_ANTISITE_MAX))
    imaging = random_imaging(rng, (5e3, 1e7), column_model="table")
    nn = float(np.exp(rng.uniform(np.log(4.5), np.log(16.0))))
    n = round(size * nn / 10.0)
    return simulate_twin(mat, (n, n), mat.a / math.sqrt(3) / nn, rotation_deg=None, defects=plan["defects"],
                         imaging=imaging, seed=seed, dopant=plan["dopant"], substituent=plan["substituent"],
                         adatom=plan["adatom"])


def site_type_labels(sites: pd.DataFrame, material: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (N, 2), sublattices (N,) and true type indices (N,) of the metal and X2 sites of a truth table.

    ``sites`` is a twin's (or a ``sites.csv`` of ``simulate``) with ``y_px``, ``x_px``, ``sublattice`` and the
    true ``species`` ('' for empty).
    """
    mat = parse_material(material)
    sites = sites[sites["sublattice"].isin(["M", "X"])]
    sub = sites["sublattice"].astype(str).to_numpy()
    hosts = {s: host_labels(mat, s) for s in ("M", "X")}
    labels = np.array([COLUMN_TYPES.index(column_type(str(sp), s, hosts[s], mat))
                       for sp, s in zip(sites["species"].fillna("").astype(str), sub)], dtype=np.int64)
    return sites[["y_px", "x_px"]].to_numpy(float), sub, labels


def twin_examples(seed: int, material: str | None = None) -> dict[str, np.ndarray]:
    """Contrast features, context vectors, type labels, allowed-type masks and material of one twin's sites."""
    twin = random_context_twin(seed, material)
    mat = twin.material
    rng = np.random.default_rng([seed, 33])
    yx, sub, labels = site_type_labels(twin.sites, mat)
    yx = jitter(yx, twin.nn_px, rng, POSITION_ERROR_NN)
    given = rng.random()
    microscope = twin.imaging.microscope if given >= UNKNOWN_MICROSCOPE + ENERGY_ONLY else None
    energy = twin.imaging.microscope.energy_kV if UNKNOWN_MICROSCOPE <= given < UNKNOWN_MICROSCOPE + ENERGY_ONLY \
        else None
    return {"contrast": contrast_features(twin.image, yx, sub, twin.nn_px).astype(np.float32),
            "context": site_contexts(mat, microscope, sub, energy).astype(np.float32),
            "labels": labels, "mask": type_mask(sub), "material": np.full(len(sub), mat.name),
            "dose": np.full(len(sub), float(twin.imaging.dose))}


def build_dataset(n_twins: int, seed: int = 0, materials: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Examples of ``n_twins`` twins (seeds ``seed .. seed + n_twins - 1``), concatenated."""
    parts = [twin_examples(seed + i, None if materials is None else materials[i % len(materials)])
             for i in range(int(n_twins))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def subset(data: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The examples where ``keep`` is True."""
    return {k: v[keep] for k, v in data.items()}


def train(data: dict[str, np.ndarray], *, epochs: int = 30, seed: int = 0, use_contrast: bool = True,
          use_context: bool = True, hidden: int = 64, batch: int = 512, lr: float = 2e-3,
          log: Any = None) -> Any:
    """Fit a classifier (class-balanced cross-entropy over each site's allowed types, Adam, cosine decay).

    Parameters
    ----------
    data : dict
        From :func:`build_dataset`.
    epochs, seed, batch, lr : optional
        Schedule.
    use_contrast, use_context : bool
        The ablations: zero one of the inputs.
    hidden : int
        Width of the embeddings.
    log : callable, optional
        ``log(text)`` once per epoch.

    Returns
    -------
    torch.nn.Module
        In eval mode; ``metadata`` holds the architecture and training settings.
    """
    import torch

    torch.manual_seed(seed)
    arch = {"hidden": int(hidden), "use_contrast": bool(use_contrast), "use_context": bool(use_context)}
    model = build_context_classifier(**arch)
    z = torch.as_tensor(data["contrast"], dtype=torch.float32)
    c = torch.as_tensor(data["context"], dtype=torch.float32)
    y = torch.as_tensor(data["labels"])
    m = torch.as_tensor(data["mask"])
    model.z_mean.copy_(z.mean(0))
    model.z_std.copy_(z.std(0).clamp_min(1e-6))
    counts = np.bincount(data["labels"], minlength=len(COLUMN_TYPES)).astype(float)
    weights = torch.as_tensor(np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0),
                              dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for s in range(0, len(y), batch):
            idx = order[s:s + batch]
            logits = model(z[idx], c[idx]).masked_fill(~m[idx], -1e4)
            loss = torch.nn.functional.cross_entropy(logits, y[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / max(len(y), 1):.4f}")
    model.eval()
    model.metadata = {"arch": arch, "epochs": int(epochs), "seed": int(seed), "n_examples": len(y),
                      "types": list(COLUMN_TYPES)}
    return model


def predict(model: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    """Type probabilities of every example."""
    return type_probabilities(model, data["contrast"], data["context"], data["mask"])


def type_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-type recall and F1, and macro-F1 over the types present in the truth.

    Examples
    --------
    >>> r = type_metrics(np.array([0, 0, 1, 3]), np.array([0, 1, 1, 3]))
    >>> r["accuracy"], r["recall"]["host"], round(r["macro_f1"], 3)
    (0.75, 0.5, 0.778)
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    recall, f1 = {}, {}
    for k, name in enumerate(COLUMN_TYPES):
        t, p = truth == k, predicted == k
        if not t.any():
            continue
        tp = float(np.sum(t & p))
        recall[name] = tp / float(t.sum())
        f1[name] = 2 * tp / float(t.sum() + p.sum())
    return {"accuracy": float(np.mean(truth == predicted)) if len(truth) else float("nan"), "recall": recall,
            "f1": f1, "macro_f1": float(np.mean(list(f1.values()))) if f1 else float("nan"), "n": len(truth)}

