"""DINEOF gap filling (Beckers & Rixen 2003), the data-driven baseline of SST reconstruction.

Data Interpolating Empirical Orthogonal Functions: the space x time matrix of observations,
less its mean, is filled by iterating a truncated SVD. Missing entries start at 0 anomaly; for
k = 1, 2, ... modes the rank-k reconstruction replaces the missing entries until they stop
changing (each k starts from the field of k - 1). The number of modes is the one whose
reconstruction best predicts a random set of observed entries hidden for the purpose
(cross-validation); the field is then refitted with those entries put back. Observed entries are
returned as observed.

The truncated SVD is taken through the smaller Gram matrix: with X (m x n) and V_k the top-k
eigenvectors of X^T X (n x n), the rank-k reconstruction is X V_k V_k^T (the same as
U_k S_k V_k^T), a few matrix products per iteration instead of a full SVD.

Pure numpy; nothing here knows of models, loaders or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

__all__ = ["DineofResult", "dineof", "dineof_monthly_mean"]


@dataclass
class DineofResult:
    """What `dineof` returns.

    Fields:
        filled: the input's shape, observed entries as given, missing entries reconstructed.
        modes: number of EOF modes retained (chosen by cross-validation).
        cv_rmse: cross-validation RMSE for k = 1, 2, ... modes tried (input units).
        iterations: SVD iterations of the final refit.
        converged: whether the final refit met the tolerance before `max_iter`.
    """

    filled: np.ndarray
    modes: int
    cv_rmse: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True


def _top_right_vectors(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) leading right singular vectors of x (m, n) from the eigenvectors of x^T x."""
    n = x.shape[1]
    if x.shape[0] < n:  # the Gram matrix on the other side is smaller: use the left vectors
        _, u = np.linalg.eigh(x @ x.T)
        u = u[:, ::-1][:, :k]
        v = x.T @ u
        norms = np.linalg.norm(v, axis=0)
        return v / np.where(norms > 0, norms, 1.0)
    _, v = np.linalg.eigh(x.T @ x)
    return v[:, ::-1][:, :k]


def _fit_modes(
    x: np.ndarray, missing: np.ndarray, k: int, tol: float, max_iter: int, scale: float
) -> tuple[np.ndarray, int, bool]:
    """Iterate the rank-k reconstruction of x, replacing its missing entries in place, until they
    change by less than tol * scale (RMS) or max_iter is reached."""
    for it in range(1, max_iter + 1):
        v = _top_right_vectors(x, k)
        recon = (x @ v) @ v.T
        new = recon[missing]
        change = np.sqrt(np.mean((new - x[missing]) ** 2)) if new.size else 0.0
        x[missing] = new
        if change <= tol * scale:
            return x, it, True
    return x, max_iter, False


def dineof(
    data,
    missing,
    *,
    max_modes: int = 10,
    cv_fraction: float = 0.03,
    tol: float = 1e-4,
    max_iter: int = 300,
    patience: int = 3,
    seed: int = 0,
) -> DineofResult:
    """Fill the missing entries of a space-time field by iterative truncated SVD (DINEOF).

    Args:
        data: (T, P) or (T, H, W) values; anything (even NaN) at missing entries.
        missing: same shape, True/1 = missing. A pixel missing at every time is left to the
            mean reconstruction (it has no data of its own: its EOF loadings come out 0).
        max_modes: most EOF modes tried (capped at min(T, P) - 1).
        cv_fraction: fraction of the observed entries hidden to choose the number of modes
            (at least one entry).
        tol: convergence when the RMS change of the missing entries between iterations falls
            below `tol` times the standard deviation of the observed anomalies.
        max_iter: most iterations per number of modes.
        patience: stop trying more modes after this many without a better CV error.
        seed: seed of the cross-validation draw.

    Returns:
        A `DineofResult`; ``filled`` has the shape of ``data`` (float64).
    """
    data = np.asarray(data)
    miss = np.asarray(missing)
    if data.ndim not in (2, 3) or data.size == 0:
        raise ValueError(f"data must be a non-empty (T, P) or (T, H, W) array, got shape {data.shape}")
    if miss.shape != data.shape:
        raise ValueError(f"missing has shape {miss.shape}, expected {data.shape} (the shape of data)")
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"data must be numbers, got dtype {data.dtype}")
    for name, value, ok in (
        ("max_modes", max_modes, isinstance(max_modes, (int, np.integer)) and max_modes >= 1),
        ("max_iter", max_iter, isinstance(max_iter, (int, np.integer)) and max_iter >= 1),
        ("patience", patience, isinstance(patience, (int, np.integer)) and patience >= 1),
        ("cv_fraction", cv_fraction, 0.0 < cv_fraction < 0.5),
        ("tol", tol, tol > 0),
    ):
        if isinstance(value, bool) or not ok:
            raise ValueError(f"{name} has a bad value {value!r}")
    shape = data.shape
    x_full = data.reshape(shape[0], -1).astype(np.float64).T  # (P, T): space x time
    miss2 = miss.reshape(shape[0], -1).astype(bool).T
    obs = ~miss2
    n_obs = int(obs.sum())
    if n_obs < 2:
        raise ValueError(f"data of shape {shape} has {n_obs} observed entries: DINEOF needs at least 2")
    bad = int(np.sum(~np.isfinite(x_full[obs])))
    if bad:
        raise ValueError(f"data of shape {shape} has {bad} NaN/inf values at observed entries")
    m, n = x_full.shape
    max_k = max(1, min(max_modes, min(m, n) - 1))

    mean = float(x_full[obs].mean())
    anom = np.where(obs, x_full - mean, 0.0)
    scale = float(anom[obs].std()) or 1.0

    # Cross-validation entries: a random draw of the observed ones, hidden while choosing k.
    rng = np.random.default_rng(seed)
    obs_idx = np.flatnonzero(obs)
    n_cv = max(1, int(round(cv_fraction * n_obs)))
    cv = np.zeros(m * n, bool)
    cv[rng.choice(obs_idx, n_cv, replace=False)] = True
    cv = cv.reshape(m, n)
    cv_true = anom[cv]
    hidden = miss2 | cv

    # The matrices are small (pixels x days): threaded BLAS only spins, 6x slower on 2 shared cores.
    with threadpool_limits(1):
        x = np.where(hidden, 0.0, anom)
        cv_rmse: list[float] = []
        best_k, best_err, best_x = 1, np.inf, x.copy()
        for k in range(1, max_k + 1):  # each k starts from the field of k - 1
            x, _, _ = _fit_modes(x, hidden, k, tol, max_iter, scale)
            err = float(np.sqrt(np.mean((x[cv] - cv_true) ** 2)))
            cv_rmse.append(err)
            if err < best_err:
                best_k, best_err, best_x = k, err, x.copy()
            elif k - best_k >= patience:
                break

        # Refit with the cross-validation entries as data, from the best k's field.
        x = best_x
        x[cv] = cv_true
        x, iters, converged = _fit_modes(x, miss2, best_k, tol, max_iter, scale)
    filled = np.where(obs, x_full, x + mean).T.reshape(shape)
    return DineofResult(filled=filled, modes=best_k, cv_rmse=cv_rmse, iterations=iters, converged=converged)


def dineof_monthly_mean(daily, daily_mask, padded_days, land, days_per_month: int = 32, **kwargs) -> np.ndarray:
    """DINEOF-filled mean of the last month: the SST baseline that uses all of a sample's days.

    Each sample's real (unpadded) days of every month and its ocean pixels form one space-time
    matrix; DINEOF fills it, and the filled days of the last month are averaged per pixel.

    Args:
        daily: (S, H, W) or (B, S, H, W) daily values, S = months * days_per_month.
        daily_mask: same shape, 1/True = missing (cloud, land, padded day, holdout).
        padded_days: (S,) or (B, S) bool, True = padding slot.
        land: (H, W) or (B, H, W), True/1 = land (left out of the matrix; 0 in the output).
        days_per_month: day slots per month; the last month is the last `days_per_month` slots.
        **kwargs: passed to `dineof`.

    Returns:
        (H, W) or (B, H, W) float64 monthly map.
    """
    from sensorlm.evaluation.metrics import check_daily_inputs

    daily, mask, padded, land = check_daily_inputs(daily, daily_mask, padded_days, land, "land", days_per_month)
    padded, land = padded.astype(bool), land.astype(bool)
    s = daily.shape[-3]
    if daily.ndim == 3:
        return dineof_monthly_mean(daily[None], mask[None], padded[None], land[None], days_per_month, **kwargs)[0]

    out = np.zeros((daily.shape[0],) + daily.shape[-2:], np.float64)
    last = np.zeros(s, bool)
    last[s - days_per_month:] = True
    for i in range(daily.shape[0]):
        days = ~padded[i]
        ocean = ~land[i]
        if not last[days].any() or not ocean.any():
            raise ValueError(f"sample {i}: no real day in the last month or no ocean pixel (daily shape {daily.shape})")
        vals = daily[i][days][:, ocean]  # (T, P)
        miss = mask[i][days][:, ocean].astype(bool)
        filled = dineof(vals, miss, **kwargs).filled
        out[i][ocean] = filled[last[days]].mean(axis=0)
    return out
