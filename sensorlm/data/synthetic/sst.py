"""SYNTHETIC daily sea-surface temperature (SST) with clouds, for monthly gap-filling models.

Nothing here comes from a satellite. Each dataset seed fixes one H x W ocean region (latitude
and longitude grid, a land mask with an irregular coastline and a few islands, a mean state with a
north-south gradient and coastal upwelling, and a seasonal cycle); each sample is M consecutive
months of daily maps over that region:

    truth(day) = annual mean + seasonal cycle(day of year)          (deterministic: climatology)
               + interannual anomaly (large-scale patterns, months)  (random, zero mean)
               + mesoscale eddies (warm/cold cores drifting westward day by day)
               + weather (large-scale, a few days' memory)

Daily observations are the truth plus sensor noise, hidden under spatially correlated cloud masks
(30-80 % of the ocean per day), on land, and on padded day slots (every month has 32 slots; those
beyond its real length are padding). For validation, as DINCAE does, extra ocean pixels are hidden
under a cloud-shaped mask on every day of the last month (``holdout``), so skill can be measured on
pixels the model never saw. The target is the monthly mean of the cloud-free truth over the last
month (0 on land); ``climatology`` is the deterministic part averaged over that month, the honest
baseline a model must beat.

Splits are by year: every fifth year (2004, 2009, ...) is "val", the others "train". Every sample
has its own random stream (seed, split, index), so any sample can be regenerated alone.
"""

from __future__ import annotations

import calendar
import functools
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from sensorlm.data.synthetic.sizes import pick_size

DAYS_PER_SLOT = 32  # 31 real days at most; the rest of a month's slots are padding
_TAG_REGION, _TAG_SAMPLE = 11, 12
_SPLIT_CODES = {"train": 0, "val": 1}
_PEAK_DAY = 225.0  # day of year of the warmest water (mid August, northern hemisphere)


@dataclass(frozen=True)
class SSTSize:
    """Size and texture of a synthetic SST dataset.

    Args:
        name: size name.
        height, width: grid size in pixels.
        months: months per sample, M (the last one is the target month).
        pixel_deg: grid spacing in degrees.
        num_eddies: eddies alive or waiting to be born per sample.
        eddy_radius_px: (min, max) eddy core radius in pixels.
        eddy_speed_px: (min, max) westward drift in pixels per day.
        cloud_scale_px: spatial smoothing of cloud fields (pixels).
        cloud_coverage: (min, max) fraction of ocean under cloud on a day.
        holdout_fraction: fraction of ocean pixels hidden on every day of the last month.
        land_fraction: approximate fraction of the region that is land.
        num_train, num_val: default sample counts of the "train" and "val" splits.
    """

    name: str
    height: int
    width: int
    months: int
    pixel_deg: float = 0.25
    num_eddies: int = 8
    eddy_radius_px: tuple[float, float] = (2.0, 4.0)
    eddy_speed_px: tuple[float, float] = (0.1, 0.4)
    cloud_scale_px: float = 2.5
    cloud_coverage: tuple[float, float] = (0.3, 0.8)
    holdout_fraction: float = 0.15
    land_fraction: float = 0.2
    num_train: int = 24
    num_val: int = 8

    def __post_init__(self) -> None:
        minimums = {"height": 8, "width": 8, "months": 1, "num_eddies": 0, "num_train": 0, "num_val": 0}
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"SSTSize.{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("eddy_radius_px", "eddy_speed_px", "cloud_coverage"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"SSTSize.{name} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        if self.cloud_coverage[1] >= 1.0:
            raise ValueError(f"SSTSize.cloud_coverage max must be < 1, got {self.cloud_coverage}")
        if not self.pixel_deg > 0:
            raise ValueError(f"SSTSize.pixel_deg must be > 0, got {self.pixel_deg!r}")
        if not self.cloud_scale_px > 0:
            raise ValueError(f"SSTSize.cloud_scale_px must be > 0, got {self.cloud_scale_px!r}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise ValueError(f"SSTSize.holdout_fraction must be in [0, 0.5), got {self.holdout_fraction!r}")
        if not 0.0 <= self.land_fraction <= 0.5:
            raise ValueError(f"SSTSize.land_fraction must be in [0, 0.5], got {self.land_fraction!r}")

    @property
    def num_day_slots(self) -> int:
        """M * 32, the length of the time axis."""
        return self.months * DAYS_PER_SLOT


SST_SIZES: dict[str, SSTSize] = {
    "tiny": SSTSize("tiny", height=32, width=32, months=2, pixel_deg=0.25, num_eddies=8,
                      eddy_radius_px=(2.0, 4.0), eddy_speed_px=(0.1, 0.4), cloud_scale_px=2.5,
                      num_train=24, num_val=8),
    # The tiny grid with enough months to learn from (the README's SST run).
    "demo": SSTSize("demo", height=32, width=32, months=2, pixel_deg=0.25, num_eddies=8,
                      eddy_radius_px=(2.0, 4.0), eddy_speed_px=(0.1, 0.4), cloud_scale_px=2.5,
                      num_train=384, num_val=64),
    "base": SSTSize("base", height=128, width=128, months=3, pixel_deg=0.0625, num_eddies=40,
                      eddy_radius_px=(4.0, 10.0), eddy_speed_px=(0.4, 1.5), cloud_scale_px=6.0,
                      num_train=480, num_val=96),
}


def get_sst_size(size: str | SSTSize = "tiny", **overrides) -> SSTSize:
    """Look up a size by name (or take one) and apply field overrides.

    Args:
        size: a name in `SST_SIZES` or an `SSTSize`.
        **overrides: fields to replace; ``None`` values are ignored.
    """
    return pick_size(SST_SIZES, SSTSize, "SST", size, overrides)


@dataclass
class SSTSample:
    """M months of SYNTHETIC daily SST over one region; the target is the last month's mean.

    Fields:
        daily: float32 (M*32, H, W) observed SST in degC, 0 where ``mask``.
        mask: uint8 (M*32, H, W), 1 = missing (cloud, land, padded day, or holdout in the last month).
        padded_days: bool (M*32,), True for slots beyond a month's real length.
        holdout: uint8 (H, W), 1 = ocean pixel hidden on every day of the last month.
        target: float32 (H, W) mean cloud-free truth over the last month's days; 0 on land.
        land: uint8 (H, W), 1 = land.
        climatology: float32 (H, W) long-term mean for the target month; 0 on land.
        month: target month of year, 1..12.
        split: "train" or "val".
        year: target year.
        months: int64 (M,) month of year of each month slot (last = ``month``).
        day_of_month: int64 (M*32,) 1..32 (values past the month's length are padding).
        lat: float32 (H,) latitude of each row (degrees north; row 0 is the northern edge).
        lon: float32 (W,) longitude of each column (degrees east).
        index: sample number within its split.
        truth: float32 (M*32, H, W) cloud-free truth (0 on land/padding), only if asked for.
        eddies: float32 (M*32, H, W) eddy component of the truth, only if asked for.
    """

    daily: np.ndarray
    mask: np.ndarray
    padded_days: np.ndarray
    holdout: np.ndarray
    target: np.ndarray
    land: np.ndarray
    climatology: np.ndarray
    month: int
    split: str
    year: int = 0
    months: np.ndarray | None = None
    day_of_month: np.ndarray | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    index: int = 0
    truth: np.ndarray | None = None
    eddies: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"sst_{self.split}_{self.index:06d}"

    def metadata(self) -> dict:
        """JSON-serialisable description of the sample (everything but the arrays)."""
        return {
            "key": self.key, "split": self.split, "index": self.index, "year": self.year, "month": self.month,
            "months": [int(m) for m in self.months] if self.months is not None else None,
            "lat": [float(self.lat[0]), float(self.lat[-1])] if self.lat is not None else None,
            "lon": [float(self.lon[0]), float(self.lon[-1])] if self.lon is not None else None,
            "synthetic": True,
        }


@dataclass(frozen=True)
class SSTRegion:
    """The fixed geography of a dataset seed."""

    lat: np.ndarray  # (H,) degrees north, decreasing (row 0 = north)
    lon: np.ndarray  # (W,)
    land: np.ndarray  # bool (H, W)
    annual_mean: np.ndarray  # (H, W) degC
    seasonal_amplitude: np.ndarray  # (H, W) degC


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...] | float) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit variance.

    Smoothing is done by FFT on a grid padded by 3 sigma on every axis, so the result does not wrap.

    Args:
        rng: random generator.
        shape: output shape.
        sigma: smoothing standard deviation per axis (pixels); 0 leaves an axis unsmoothed.
    """
    sigmas = (float(sigma),) * len(shape) if np.isscalar(sigma) else tuple(float(s) for s in sigma)
    if len(sigmas) != len(shape):
        raise ValueError(f"sigma has {len(sigmas)} entries for a {len(shape)}-d shape {shape}")
    pads = [int(math.ceil(3 * s)) if s > 0 else 0 for s in sigmas]
    big = [n + 2 * p for n, p in zip(shape, pads)]
    white = rng.standard_normal(big, dtype=np.float32)  # float32 halves the FFT cost
    spectrum = np.fft.rfftn(white)
    for axis, (n, s) in enumerate(zip(big, sigmas)):
        if s > 0:
            freq = np.fft.rfftfreq(n) if axis == len(big) - 1 else np.fft.fftfreq(n)
            h = np.exp(-0.5 * (2 * np.pi * freq * s) ** 2).astype(np.float32)
            spectrum *= h.reshape([-1 if a == axis else 1 for a in range(len(big))])
    field = np.fft.irfftn(spectrum, s=big, axes=list(range(len(big))))
    field = field[tuple(slice(p, p + n) for p, n in zip(pads, shape))].astype(np.float64)
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


@functools.lru_cache(maxsize=16)
def sst_region(size: str | SSTSize, seed: int) -> SSTRegion:
    """The region of dataset ``seed``: grid, land mask, annual mean and seasonal amplitude.

    Args:
        size: size name or `SSTSize`.
        seed: dataset seed (non-negative).
    """
    size, seed = get_sst_size(size), _check_seed(seed)
    H, W = size.height, size.width
    rng = _rng(seed, _TAG_REGION, H, W)
    north = rng.uniform(30.0, 45.0)
    west = rng.uniform(-75.0, -20.0)
    lat = (north - size.pixel_deg * np.arange(H)).astype(np.float32)
    lon = (west + size.pixel_deg * np.arange(W)).astype(np.float32)

    # Coast: one side of the box is a continent with an irregular edge, plus a few islands.
    yy, xx = np.meshgrid(np.arange(H) / (H - 1), np.arange(W) / (W - 1), indexing="ij")
    side = int(rng.integers(4))
    u = [xx, 1 - xx, yy, 1 - yy][side]
    edge = (size.land_fraction * 0.9 + 0.08 * smooth_noise(rng, (H, W), H / 8)
            + 0.03 * smooth_noise(rng, (H, W), H / 24))
    land = u < edge if size.land_fraction > 0 else np.zeros((H, W), bool)
    islands = smooth_noise(rng, (H, W), max(1.5, H / 20)) > 2.4
    land = land | (islands & (size.land_fraction > 0))

    # Mean state: warmer to the south, cooler near the coast (upwelling), a warm current tongue.
    lat2d = np.broadcast_to(lat[:, None], (H, W)).astype(np.float64)
    near_coast = np.clip(_blur(land.astype(np.float64), max(1.0, H / 16)) * 3, 0, 1)
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(0.3, 0.7)
    dist = (np.cos(angle) * (xx - offset) + np.sin(angle) * (yy - offset))
    current = np.exp(-0.5 * (dist / 0.12) ** 2)
    annual = 28.5 - 0.45 * (lat2d - 10.0) - 1.8 * near_coast + rng.uniform(0.5, 1.5) * current
    amplitude = 2.0 + 0.12 * (lat2d - 20.0) + 1.0 * near_coast
    for array in (lat, lon, land, annual, amplitude):
        array.setflags(write=False)  # shared through the cache
    return SSTRegion(lat=lat, lon=lon, land=land, annual_mean=annual, seasonal_amplitude=amplitude)


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-d field with edge padding (reflect), by FFT."""
    pad = int(math.ceil(3 * sigma))
    padded = np.pad(field, pad, mode="reflect")
    spectrum = np.fft.rfft2(padded)
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    transfer = np.exp(-0.5 * (2 * np.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = np.fft.irfft2(spectrum * transfer, s=padded.shape)
    return out[pad:pad + field.shape[0], pad:pad + field.shape[1]]


def _seasonal_factor(day_of_year: np.ndarray) -> np.ndarray:
    return np.cos(2 * np.pi * (day_of_year - _PEAK_DAY) / 365.25)


def _day_of_year(year: int, month: int, days: np.ndarray) -> np.ndarray:
    start = sum(calendar.monthrange(year, m)[1] for m in range(1, month))
    return start + days  # days are 1-based


def sst_climatology(size: str | SSTSize, seed: int, year: int, month: int) -> np.ndarray:
    """Long-term mean SST of ``month`` (deterministic part of the generator averaged over its days).

    Args:
        size: size name or `SSTSize`.
        seed: dataset seed.
        year: calendar year (sets the month's length and day-of-year).
        month: 1..12.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be in 1..12, got {month!r}")
    region = sst_region(get_sst_size(size), _check_seed(seed))
    n = calendar.monthrange(year, month)[1]
    factor = float(np.mean(_seasonal_factor(_day_of_year(year, month, np.arange(1, n + 1)))))
    clim = region.annual_mean + region.seasonal_amplitude * factor
    return np.where(region.land, 0.0, clim).astype(np.float32)


def split_year(split: str, year_number: int) -> int:
    """The ``year_number``-th calendar year of a split: "val" holds every fifth year from 2004."""
    if split == "val":
        return 2004 + 5 * year_number
    return 2000 + year_number + year_number // 4


def _window(year: int, month: int, months: int) -> list[tuple[int, int]]:
    out = []
    for k in range(months - 1, -1, -1):
        total = year * 12 + (month - 1) - k
        out.append((total // 12, total % 12 + 1))
    return out


def _eddy_field(rng: np.random.Generator, size: SSTSize, t: np.ndarray) -> np.ndarray:
    """(D, H, W) warm and cold eddies drifting westward; ``t`` is days since the window start."""
    H, W = size.height, size.width
    D = len(t)
    field = np.zeros((D, H, W))
    rows, cols = np.arange(H), np.arange(W)
    span = float(t[-1]) if D else 0.0
    for _ in range(size.num_eddies):
        radius = rng.uniform(*size.eddy_radius_px)
        y0, x0 = rng.uniform(-radius, H + radius), rng.uniform(-radius, W + radius)
        u = -rng.uniform(*size.eddy_speed_px)  # westward
        v = rng.normal(0, 0.3 * size.eddy_speed_px[1])
        amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
        birth = rng.uniform(-60.0, span)
        life = rng.uniform(40.0, 150.0)
        wobble, period = rng.uniform(0, 1.0) * radius, rng.uniform(15, 40)
        age = (t - birth) / life
        envelope = np.where((age > 0) & (age < 1), np.sin(np.pi * np.clip(age, 0, 1)), 0.0)
        if not envelope.any():
            continue
        # Positions wrap around an enlarged box so the eddy density stays steady.
        cy = (y0 + v * t + wobble * np.sin(2 * np.pi * t / period) + radius) % (H + 2 * radius) - radius
        cx = (x0 + u * t + radius) % (W + 2 * radius) - radius
        gy = np.exp(-0.5 * ((rows[None, :] - cy[:, None]) / radius) ** 2)
        gx = np.exp(-0.5 * ((cols[None, :] - cx[:, None]) / radius) ** 2)
        field += (amplitude * envelope)[:, None, None] * gy[:, :, None] * gx[:, None, :]
    return field


def generate_sst_sample(size: str | SSTSize, seed: int, split: str, index: int,
                        return_truth: bool = False) -> SSTSample:
    """Generate sample ``index`` of ``split`` alone (deterministic in (seed, split, index)).

    Args:
        size: size name or `SSTSize`.
        seed: dataset seed (non-negative).
        split: "train" or "val" (different years, see `split_year`).
        index: non-negative sample number; sample i targets month i % 12 + 1 of the split's
            (i // 12)-th year.
        return_truth: also fill ``truth`` and ``eddies`` (for tests and plots).
    """
    size, seed = get_sst_size(size), _check_seed(seed)
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    region = sst_region(size, seed)
    H, W, M = size.height, size.width, size.months
    year, month = split_year(split, int(index) // 12), int(index) % 12 + 1
    window = _window(year, month, M)
    rng = _rng(seed, _TAG_SAMPLE, _SPLIT_CODES[split], index)

    slots = M * DAYS_PER_SLOT
    padded = np.ones(slots, bool)
    day_of_month = (np.arange(slots) % DAYS_PER_SLOT + 1).astype(np.int64)
    doy_list, slot_index = [], []
    for j, (y, m) in enumerate(window):
        n = calendar.monthrange(y, m)[1]
        padded[j * DAYS_PER_SLOT: j * DAYS_PER_SLOT + n] = False
        slot_index.append(j * DAYS_PER_SLOT + np.arange(n))
        doy_list.append(_day_of_year(y, m, np.arange(1, n + 1)))
    real = np.concatenate(slot_index)
    doy = np.concatenate(doy_list).astype(np.float64)
    D = len(real)
    t = np.arange(D, dtype=np.float64)  # days since the window start (real days are contiguous)

    # Interannual anomaly: a few large patterns whose amplitudes wander month to month.
    patterns = smooth_noise(rng, (3, H, W), (0, H / 5, W / 5))
    node_t = np.arange(-1, M + 1) * 30.4 + 15.0
    amps = rng.normal(0, 0.35, (3, M + 2))
    anomaly = sum(np.interp(t, node_t, amps[k])[:, None, None] * patterns[k][None] for k in range(3))
    weather = 0.3 * smooth_noise(rng, (D, H, W), (2.0, H / 6, W / 6))
    eddies = _eddy_field(rng, size, t)
    deterministic = region.annual_mean[None] + region.seasonal_amplitude[None] * _seasonal_factor(doy)[:, None, None]
    truth_real = deterministic + anomaly + weather + eddies

    # Clouds: correlated in space and (a little) in time; coverage wanders between the bounds.
    ocean = ~region.land
    lo, hi = size.cloud_coverage
    drift = smooth_noise(rng, (D,), 3.0)
    winter = 0.05 * np.cos(2 * np.pi * (doy - 15) / 365.25)  # cloudier in winter
    coverage = np.clip((lo + hi) / 2 + 0.3 * (hi - lo) * drift + winter, lo, hi)
    cloud_noise = smooth_noise(rng, (D, H, W), (1.0, size.cloud_scale_px, size.cloud_scale_px))
    thresholds = np.array([np.quantile(cloud_noise[d][ocean], 1 - coverage[d]) for d in range(D)])
    clouds = cloud_noise > thresholds[:, None, None]

    # DINCAE-style holdout: a cloud-shaped mask (same texture as the daily clouds) hides extra ocean
    # pixels on every day of the last month.
    holdout = np.zeros((H, W), bool)
    if size.holdout_fraction > 0:
        hold_noise = smooth_noise(rng, (H, W), size.cloud_scale_px)
        holdout = (hold_noise > np.quantile(hold_noise[ocean], 1 - size.holdout_fraction)) & ocean

    sensor_noise = 0.1 * rng.standard_normal((D, H, W))
    last_month = real >= (M - 1) * DAYS_PER_SLOT
    hidden_real = clouds | region.land[None] | (holdout[None] & last_month[:, None, None])

    mask = np.ones((slots, H, W), np.uint8)
    mask[real] = hidden_real
    daily = np.zeros((slots, H, W), np.float32)
    daily[real] = np.where(hidden_real, 0.0, truth_real + sensor_noise)
    target = np.where(region.land, 0.0, truth_real[last_month].mean(axis=0)).astype(np.float32)
    clim = sst_climatology(size, seed, year, month)

    truth = eddy_out = None
    if return_truth:
        truth = np.zeros((slots, H, W), np.float32)
        truth[real] = np.where(region.land[None], 0.0, truth_real)
        eddy_out = np.zeros((slots, H, W), np.float32)
        eddy_out[real] = eddies
    return SSTSample(
        daily=daily, mask=mask, padded_days=padded, holdout=holdout.astype(np.uint8), target=target,
        land=region.land.astype(np.uint8), climatology=clim, month=month, split=split, year=year,
        months=np.array([m for _, m in window], np.int64), day_of_month=day_of_month,
        lat=region.lat.copy(), lon=region.lon.copy(), index=int(index), truth=truth, eddies=eddy_out,
    )


def generate_sst(size: str | SSTSize = "tiny", num_samples: int | None = None, split: str | None = None,
                 seed: int = 0, *, start: int = 0, return_truth: bool = False) -> Iterator[SSTSample]:
    """Yield SYNTHETIC SST samples ``start .. start + num_samples - 1`` of each requested split.

    Args:
        size: size name ("tiny", "base") or an `SSTSize`.
        num_samples: samples per split (consecutive target months of the split's years);
            None: the size's ``num_train`` / ``num_val``.
        split: "train", "val", or None for train then val.
        seed: dataset seed (non-negative); fixes the region and every sample.
        start: index of the first sample (to shard generation across workers).
        return_truth: also fill ``truth`` and ``eddies``.
    """
    size = get_sst_size(size)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
                                    or num_samples < 0):
        raise ValueError(f"num_samples must be a non-negative integer or None, got {num_samples!r}")
    if split is not None and split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)} or None, got {split!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    _check_seed(seed)
    for name in ([split] if split is not None else ["train", "val"]):
        count = num_samples if num_samples is not None else (size.num_train if name == "train" else size.num_val)
        for i in range(start, start + count):
            yield generate_sst_sample(size, seed, name, i, return_truth=return_truth)
