"""PNG figures of an evaluation (matplotlib, Agg backend). Each function returns PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np


def _plt():
    # imported here: matplotlib is heavy and only the figures need it; the backend is set before
    # pyplot loads
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def parameter_maps(maps: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                   units: Mapping[str, str]) -> bytes:
    """Maps of parameters: name -> (n_lat, n_lon) arrays (NaN off land) on cell centres."""
    plt = _plt()
    names = list(maps)
    rows, cols = _grid(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.1 * rows), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.08, top=0.93, wspace=0.42, hspace=0.45)
    r = float(abs(lon[1] - lon[0])) if lon.size > 1 else 1.0
    extent = (float(lon.min()) - r / 2, float(lon.max()) + r / 2,
              float(lat.min()) - r / 2, float(lat.max()) + r / 2)
    for ax, name in zip(axes.flat, names):
        a = np.asarray(maps[name], np.float64)
        img = a if lat[0] > lat[-1] else a[::-1]  # row 0 at the top
        finite = a[np.isfinite(a)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        im = ax.imshow(img, extent=extent, origin="upper", vmin=lo, vmax=hi if hi > lo else lo + 1,
                       cmap="viridis", interpolation="nearest", aspect="auto")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("longitude")
        if ax in axes[:, 0]:
            ax.set_ylabel("latitude")
        fig.colorbar(im, ax=ax, label=units.get(name, ""), fraction=0.046, pad=0.03)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return _png(fig)


def density_scatter(samples: Mapping[str, tuple[np.ndarray, np.ndarray]], stream: str, units: str,
                    scores: Mapping[str, Mapping[str, float]], bins: int = 60) -> bytes:
    """Observed vs simulated density (log counts of a 2-D histogram) per split, 1:1 line."""
    plt = _plt()
    splits = [sp for sp in samples if samples[sp][0].size]
    fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(4.8 * max(1, len(splits)), 4.2),
                             squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.92, bottom=0.13, top=0.9, wspace=0.4)
    for ax, sp in zip(axes.flat, splits):
        o, s = (np.asarray(a, np.float64) for a in samples[sp])
        lo, hi = np.percentile(np.concatenate([o, s]), [0.5, 99.5])
        if not hi > lo:
            lo, hi = lo - 1.0, hi + 1.0
        h, _, _ = np.histogram2d(o, s, bins=bins, range=[[lo, hi], [lo, hi]])
        with np.errstate(divide="ignore"):
            dens = np.where(h.T > 0, np.log10(h.T), np.nan)
        im = ax.imshow(dens, origin="lower", extent=(lo, hi, lo, hi), vmin=0,
                       vmax=max(0.5, float(np.nanmax(dens))), cmap="magma_r", aspect="auto",
                       interpolation="nearest")
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        sc = scores.get(sp, {})
        ax.set_title(f"{stream} ({sp}): NSE {sc.get('nse', float('nan')):.2f}, "
                     f"r {sc.get('r', float('nan')):.2f}, n {sc.get('n', 0)}", fontsize=9)
        ax.set_xlabel(f"observed [{units}]")
        ax.set_ylabel(f"simulated [{units}]")
        fig.colorbar(im, ax=ax, label="log10 pairs", fraction=0.046, pad=0.03)
    if not splits:
        axes.flat[0].text(0.5, 0.5, "no observations", ha="center", va="center")
    return _png(fig)


def time_series(times: np.ndarray, panels: Sequence[tuple[str, str, np.ndarray, np.ndarray | None]],
                title: str, warm_up: int = 0) -> bytes:
    """One pixel's series: panels of (name, units, simulated (T,), observed (T,) or None);
    the first ``warm_up`` steps are shaded."""
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, 1.9 * len(panels) + 0.6), sharex=True,
                             squeeze=False)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.08, top=0.95, hspace=0.12)
    for ax, (name, units, sim, obs) in zip(axes.flat, panels):
        ax.plot(times, sim, "-", color="C0", lw=1.2, label="simulated")
        if obs is not None and np.isfinite(obs).any():
            ax.plot(times, obs, "o", color="C3", ms=3, label="observed")
        ax.set_ylabel(f"{name}\n[{units}]", fontsize=8)
        ax.grid(alpha=0.3)
        if 0 < warm_up < len(times):
            ax.axvspan(times[0], times[warm_up], color="0.85", zorder=0)
    axes.flat[0].legend(fontsize=8, loc="upper right")
    axes.flat[0].set_title(title, fontsize=10)
    for label in axes.flat[-1].get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    return _png(fig)


def training_curves(train: Sequence[Mapping[str, float]], test: Sequence[Mapping[str, float]],
                    terms: Sequence[str]) -> bytes:
    """Loss vs step (training and held-out) and each loss term vs step (log scale)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.2)

    def series(recs, key):
        pts = [(r["step"], r[key]) for r in recs if key in r and r[key] is not None
               and np.isfinite(r[key]) and r[key] > 0]
        return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (None, None)

    for recs, label, style in ((train, "training", "-"), (test, "held-out", "o--")):
        x, y = series(recs, "loss")
        if x is not None:
            a.plot(x, y, style, label=label, ms=3)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.set_title("total loss")
    a.legend(fontsize=8)
    for i, t in enumerate(terms):
        x, y = series(train, t)
        if x is not None:
            b.plot(x, y, "-", color=f"C{i % 10}", label=t, lw=1)
        x, y = series(test, t)
        if x is not None:
            b.plot(x, y, "o", color=f"C{i % 10}", ms=2)
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_title("loss terms (lines: training; dots: held-out)")
    b.legend(fontsize=7, ncol=2)
    return _png(fig)


def recovery_bars(r2: Mapping[str, Mapping[str, float]]) -> bytes:
    """R² of the recovered parameters per parameter: series name -> {parameter: R²}, bars
    clipped at -1 (values below are marked)."""
    plt = _plt()
    names = list(next(iter(r2.values())))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.3 * len(names) + 2), 4.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.35, top=0.92)
    width = 0.8 / max(1, len(r2))
    for i, (label, vals) in enumerate(r2.items()):
        v = np.array([vals.get(n, np.nan) for n in names], np.float64)
        ax.bar(x + (i - (len(r2) - 1) / 2) * width, np.clip(v, -1, 1), width, label=label)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("R² (1 - SSE/SST), clipped at -1")
    ax.set_title("recovery of the true parameters")
    ax.legend(fontsize=8)
    return _png(fig)


def zonal_means(lat: np.ndarray, zonal: Mapping[str, np.ndarray], units: Mapping[str, str]) -> bytes:
    """Zonal means: one panel per series, value against latitude."""
    plt = _plt()
    names = list(zonal)
    rows, cols = _grid(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.92, wspace=0.35, hspace=0.45)
    for ax, name in zip(axes.flat, names):
        ax.plot(zonal[name], lat, "-", color="C0")
        ax.set_title(f"{name} (area-weighted zonal mean)", fontsize=9)
        ax.set_xlabel(f"[{units.get(name, '')}]")
        ax.set_ylabel("latitude")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return _png(fig)


def global_totals(years: Sequence[int], totals: Mapping[str, Sequence[float]]) -> bytes:
    """Global annual totals (PgC yr-1) per series against the year."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.9)
    for i, (name, v) in enumerate(totals.items()):
        ax.plot(list(years), list(v), "o-", color=f"C{i}", label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("year")
    ax.set_ylabel("PgC yr-1")
    ax.set_title("global annual totals")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
