"""What kubetune's `bayesian` adds to a GPSampler built anew at each ask: the kernel its
predecessor fitted (carried in a study attribute), and a wider acquisition search."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.samplers import GPSampler

GP_KERNEL_ATTR = "kubetune:gp_kernel"
"""Study attribute holding the GP's last fitted kernel: inverse squared length scales
(one per dimension), then kernel scale, then noise variance."""


def restore_gp_kernel(sampler: GPSampler, study_attrs: Mapping[str, Any]) -> None:
    """Give a fresh GPSampler the kernel its predecessor fitted, as a long-lived one has.

    Private API: Optuna keeps this warm start in `GPSampler._gprs_cache_list` (its TODO
    says it should become system attrs); only `inverse_squared_lengthscales`,
    `kernel_scale` and `noise_var` of the cached regressor are read, as the initial point
    of `optuna._gp.gp.fit_kernel_params`. Written against Optuna 4.4-5.0; if a later
    version renames the attribute, nothing breaks (the sampler fits from defaults, and
    the regret bound in tests/engine/test_samplers.py fails to say so).
    """
    saved = study_attrs.get(GP_KERNEL_ATTR)
    if not isinstance(saved, list) or len(saved) < 3 or not hasattr(sampler, "_gprs_cache_list"):
        return
    import torch
    from optuna._gp.gp import GPRegressor

    params = torch.tensor([float(v) for v in saved], dtype=torch.float64)
    dim = len(saved) - 2
    # A dimension mismatch (the relative search space changed) makes the sampler drop it.
    sampler._gprs_cache_list = [
        GPRegressor(
            is_categorical=torch.zeros(dim, dtype=torch.bool),
            X_train=torch.zeros((1, dim), dtype=torch.float64),
            y_train=torch.zeros(1, dtype=torch.float64),
            inverse_squared_lengthscales=params[:-2],
            kernel_scale=params[-2],
            noise_var=params[-1],
        )
    ]


def fitted_gp_kernel(sampler: GPSampler) -> list[float] | None:
    """The kernel the sampler fitted in its last ask (None when it fitted none)."""
    cache = getattr(sampler, "_gprs_cache_list", None)
    if not cache:
        return None
    gpr = cache[0]
    values = [
        *np.asarray(gpr.inverse_squared_lengthscales.detach(), dtype=float).tolist(),
        float(gpr.kernel_scale.detach()),
        float(gpr.noise_var.detach()),
    ]
    return values if all(math.isfinite(v) for v in values) else None


GP_PRELIMINARY_SAMPLES = 4096
GP_LOCAL_SEARCHES = 20
"""Acquisition search of `bayesian`: QMC points scored, then local searches started from the
best of them; Optuna's GPSampler uses 2048 and 10. Twice as wide, the acquisition's global
maximum is found more often, and Hartmann-6 at p=4 gets stuck in a local basin less:
mean regret over seeds 0-19 0.125 against 0.243 with Optuna's values, and Optuna's own
GPSampler 0.214 (bench/search_quality.py; H12b's measurements in the commit message).
Wider still, 8192 and 40, did worse over seeds 0-79 (0.096 ± 0.023 against 0.070 ± 0.020,
26 runs in a local basin against 21) at twice the time an ask. A prior pulling the length
scales back into the box (-2 ls^2 a dimension in the log prior, Optuna's -0.1 ls^2), so
that a run in a local basin does not stop varying the dimensions that are flat there,
did worse too: 0.088 ± 0.029, 20 runs stuck but two of them above regret 1.
Stop 28, against today's 0.059 ± 0.017 over seeds 0-79 (20 stuck; torch 2.15): 11% of the
GP's suggestions at p=4 are exact corners of the box (far from data the model reverts to
the mean of values its own choices made optimistic, and the running trials' fantasies
cover the incumbent's neighbourhood). Giving such a trial TPE's suggestion instead: 0.072
± 0.021; a constant prior mean at the worst value observed (De Ath et al. 2020), which
ends the corners: 0.077 ± 0.023, tighter where runs converge but 24 runs stuck."""


def widen_acquisition_search(sampler: GPSampler) -> None:
    """Set the acquisition search's width on a GPSampler.

    Private API: Optuna has no constructor option for it; it keeps these as
    `_n_preliminary_samples` and `_n_local_search` (Optuna 4.4-5.0) and passes them to
    `optuna._gp.optim_mixed.optimize_acqf_mixed` (the GPSampler docstring's steps 2 and 4).
    If a later version renames them, nothing breaks (the sampler keeps its own values), and
    tests/engine/test_samplers.py, which watches the optimizer's arguments, fails to say so.
    """
    if hasattr(sampler, "_n_preliminary_samples") and hasattr(sampler, "_n_local_search"):
        sampler._n_preliminary_samples = GP_PRELIMINARY_SAMPLES
        sampler._n_local_search = GP_LOCAL_SEARCHES
