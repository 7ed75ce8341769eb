"""Zoo specs built on the linear-algebra builtins, each against an independent NumPy
closed form, on every backend (float64 runs; tolerances are float64 round-off of
the 4x4 .. 20x20 factorisations, 1e-9, unless said otherwise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import api

SPECS = Path(__file__).resolve().parent.parent / "specs"
BACKENDS = ("numpy", "torch", "onnx")


def _runs(name, data, params=None, model=None, **hparams):
    m = api.load(SPECS / name, model=model, hparams=hparams)
    return m, {be: m.run(data, params, backend=be, dtype="f64") for be in BACKENDS}


def test_ridge_and_pseudo_inverse_solutions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.standard_normal(30)
    m, outs = _runs("ridge.dl", {"x": x, "y": y}, {"w": np.zeros(4)})
    w_ls = np.linalg.lstsq(x, y, rcond=None)[0]
    w_pinv = np.linalg.pinv(x) @ y
    w_ridge = np.linalg.solve(x.T @ x + 1.0 * np.eye(4), x.T @ y)
    for be, o in outs.items():
        np.testing.assert_allclose(o["w_ls"], w_ls, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["w_ls"], w_pinv, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["w_ridge"], w_ridge, atol=1e-9, err_msg=be)
    # ridge shrinks: ||w_ridge|| < ||w_ls||
    assert np.linalg.norm(w_ridge) < np.linalg.norm(w_ls)
    # gradient descent on the spec's objective converges to the closed form
    # (step 1 / (2 λ_max(XᵀX + λI)): the error contracts by 1 - λ_min/λ_max a step)
    lr = 0.5 / np.linalg.eigvalsh(x.T @ x + np.eye(4))[-1]
    w = np.zeros(4)
    for _ in range(300):
        w = w - lr * m.gradients("objective", {"x": x, "y": y}, {"w": w}, dtype="f64")["w"]
    np.testing.assert_allclose(w, w_ridge, atol=1e-8)


def test_pca_subspace_equals_the_svd_and_the_linear_autoencoder_optimum():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1]) @ \
        np.linalg.qr(rng.standard_normal((5, 5)))[0]
    m, outs = _runs("pca.dl", {"x": x}, {"W": np.zeros((5, 2))}, features=5)
    xc = x - x.mean(0)
    _, s, vh = np.linalg.svd(xc, full_matrices=False)
    proj = vh[:2].T @ vh[:2]
    # Eckart-Young: the best rank-2 reconstruction error is the tail of the spectrum
    best = np.sum(s[2:] ** 2) / x.size
    for be, o in outs.items():
        c = o["components"]
        np.testing.assert_allclose(c @ c.T, proj, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["variances"], s[:2] ** 2 / 40, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["pca_error"], best, rtol=1e-9, err_msg=be)
        # probabilistic PCA's closed-form MLE (Tipping & Bishop): σ² is the mean
        # discarded variance and W Wᵀ + σ²I keeps the top-2 variances exactly
        lam = s ** 2 / 40
        np.testing.assert_allclose(o["ppca_sigma2"], lam[2:].mean(), rtol=1e-9, err_msg=be)
        wm = o["ppca_W"]
        np.testing.assert_allclose(wm @ wm.T, vh[:2].T @ np.diag(lam[:2] - lam[2:].mean()) @ vh[:2],
                                   atol=1e-9, err_msg=be)
    # ... and it maximises the Gaussian likelihood of the centred data: nudging W lowers it
    cov = xc.T @ xc / 40

    def loglik(wm, s2):
        c = wm @ wm.T + s2 * np.eye(5)
        return -0.5 * (np.linalg.slogdet(c)[1] + np.trace(np.linalg.solve(c, cov)))
    o = outs["numpy"]
    best_ll = loglik(o["ppca_W"], o["ppca_sigma2"])
    for _ in range(5):
        assert loglik(o["ppca_W"] + 0.01 * rng.standard_normal((5, 2)), o["ppca_sigma2"]) < best_ll
        assert loglik(o["ppca_W"], o["ppca_sigma2"] * 1.05) < best_ll
    # the linear autoencoder trained by gradient descent reaches the PCA projector
    # (Baldi & Hornik): 400 steps, from a random orthonormal start
    w = np.linalg.qr(rng.standard_normal((5, 2)))[0]
    start = None
    for _ in range(400):
        g = m.gradients("reconstruction", {"x": x}, {"W": w}, dtype="f64")
        start = g["reconstruction"] if start is None else start
        w = w - 0.05 * g["W"]
    o = m.run({"x": x}, {"W": w}, dtype="f64")
    assert start > best * 1.5
    np.testing.assert_allclose(o["projector"], proj, atol=1e-4)
    np.testing.assert_allclose(o["reconstruction"], best, rtol=1e-6)


def _gp_numpy(x, y, xs, ell, sf, sn):
    def k(a, b):
        return sf ** 2 * np.exp(-0.5 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / ell ** 2)
    kxx = k(x, x) + sn ** 2 * np.eye(len(x))
    ks = k(xs, x)
    mean = ks @ np.linalg.solve(kxx, y)
    var = sf ** 2 - np.einsum("ij,ji->i", ks, np.linalg.solve(kxx, ks.T))
    nll = 0.5 * y @ np.linalg.solve(kxx, y) + 0.5 * np.linalg.slogdet(kxx)[1] + 0.5 * len(x) * np.log(2 * np.pi)
    return mean, var, nll


def test_gp_regression_posterior_and_marginal_likelihood():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, (20, 1))
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(20)
    xs = np.linspace(-3, 3, 7)[:, None]
    params = {"log_ell": np.array(0.3), "log_sf": np.array(-0.2), "log_sn": np.array(-1.5)}
    m, outs = _runs("gp_regression.dl", {"x": x, "y": y, "xs": xs}, params, model="GPPredict")
    mean, var, nll = _gp_numpy(x, y, xs, *np.exp([0.3, -0.2, -1.5]))
    for be, o in outs.items():
        np.testing.assert_allclose(o["mean"], mean, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["var"], var, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["nll"], nll, atol=1e-9, err_msg=be)
    # hyperparameters by the marginal likelihood: 60 gradient steps lower the NLL,
    # and the fitted noise level approaches the true 0.1
    p = {k: v.copy() for k, v in params.items()}
    start = float(nll)
    for _ in range(60):
        g = m.gradients("nll", {"x": x, "y": y, "xs": xs}, p, dtype="f64")
        p = {k: v - 0.05 * g[k] for k, v in p.items()}
    end = float(m.run({"x": x, "y": y, "xs": xs}, p, dtype="f64")["nll"])
    assert end < start - 1.0, (start, end)
    assert 0.03 < np.exp(p["log_sn"]) < 0.3


def test_newton_logistic_matches_a_numpy_newton_iteration_and_converges_quadratically():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.7 * rng.standard_normal(80) > 0).astype(np.int64)
    m = api.load(SPECS / "newton_logistic.dl", hparams={"features": 3})
    outs = {be: m.run({"x": x, "y": y}, backend=be, dtype="f64") for be in BACKENDS}
    # NumPy Newton: g = Xᵀ(σ(Xv) - y)/n + λv, H = Xᵀ diag(σ(1-σ)) X / n + λI
    v, ref = np.zeros(3), []
    for _ in range(6):
        p = 1 / (1 + np.exp(-x @ v))
        g = x.T @ (p - y) / 80 + 0.1 * v
        h = (x * (p * (1 - p))[:, None]).T @ x / 80 + 0.1 * np.eye(3)
        v = v - np.linalg.solve(h, g)
        ref.append(v)
    ref = np.array(ref)
    for be, o in outs.items():
        np.testing.assert_allclose(o["iterates"], ref, atol=1e-10, err_msg=be)
    err = np.linalg.norm(ref[:-1] - ref[-1], axis=1)[:4]
    # quadratic convergence: e_{k+1} <= C e_k² with a modest C, and the error collapses
    assert err[3] < 1e-8, err
    assert np.all(err[1:] <= 2.0 * err[:-1] ** 2), err


def _evidence_numpy(x, y, alpha, beta):
    n, d = x.shape
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ y)
    e = 0.5 * beta * np.sum((y - x @ m) ** 2) + 0.5 * alpha * m @ m
    return m, a, (0.5 * d * np.log(alpha) + 0.5 * n * np.log(beta) - e
                  - 0.5 * np.linalg.slogdet(a)[1] - 0.5 * n * np.log(2 * np.pi))


def test_bayesian_linear_regression_posterior_evidence_and_fixed_point():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.3 * rng.standard_normal(50)
    params = {"log_alpha": np.array(0.2), "log_beta": np.array(1.0)}
    m, outs = _runs("bayes_linreg.dl", {"x": x, "y": y}, params)
    mean, a, ev = _evidence_numpy(x, y, np.exp(0.2), np.exp(1.0))
    # Bishop's fixed point in NumPy (3.91, 3.92, 3.95)
    al, be = 1.0, 1.0
    lam0 = np.linalg.eigvalsh(x.T @ x)
    for _ in range(30):
        mm = _evidence_numpy(x, y, al, be)[0]
        gamma = np.sum(be * lam0 / (al + be * lam0))
        al, be = gamma / (mm @ mm), (50 - gamma) / np.sum((y - x @ mm) ** 2)
    for b, o in outs.items():
        np.testing.assert_allclose(o["m_N"], mean, atol=1e-9, err_msg=b)
        np.testing.assert_allclose(o["S_N"], np.linalg.inv(a), atol=1e-9, err_msg=b)
        np.testing.assert_allclose(o["neg_log_evidence"], -ev, atol=1e-9, err_msg=b)
        np.testing.assert_allclose([o["alpha_hat"], o["beta_hat"]], [al, be], rtol=1e-9, err_msg=b)
    # the fixed point maximises the evidence: its gradient vanishes there, and
    # the evidence there beats the starting point
    at = {"log_alpha": np.log(al), "log_beta": np.log(be)}
    g = m.gradients("neg_log_evidence", {"x": x, "y": y}, at, dtype="f64")
    assert abs(g["log_alpha"]) < 1e-6 and abs(g["log_beta"]) < 1e-6, g
    assert g["neg_log_evidence"] < -ev


def test_spectral_filter_equals_the_polynomial_filter_and_respects_eigenvalue_bounds():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4))
    y = rng.standard_normal(8)
    theta = np.array([1.0, -0.5, 0.2, 0.1])
    _, outs = _runs("spectral_filter.dl", {"x": x, "y": y}, {"theta": theta})
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    adj = np.exp(-0.5 * d2) * (1 - np.eye(8))
    dis = 1 / np.sqrt(adj.sum(1))
    lap = np.eye(8) - dis[:, None] * adj * dis[None]
    poly = sum(t * np.linalg.matrix_power(lap, k) @ y for k, t in enumerate(theta))
    for be, o in outs.items():
        lam = o["eigenvalues"]
        # the normalised Laplacian: eigenvalues in [0, 2], the smallest 0 (eigenvector D^1/2 1)
        assert lam[0] > -1e-12 and lam[-1] < 2 + 1e-12 and abs(lam[0]) < 1e-12, (be, lam)
        np.testing.assert_allclose(lam, np.linalg.eigvalsh(lap), atol=1e-12, err_msg=be)
        np.testing.assert_allclose(o["filtered"], poly, atol=1e-10, err_msg=be)
        np.testing.assert_allclose(o["polynomial"], poly, atol=1e-10, err_msg=be)


def test_wide_network_tracks_kernel_regression_with_its_empirical_ntk():
    from scipy.linalg import expm
    x = np.linspace(-2, 2, 8)[:, None]
    y = np.sin(2 * x[:, 0])
    m = api.load(SPECS / "ntk.dl", hparams={"width": 1024})
    p = {k: v.astype(np.float64) for k, v in m.init_params(seed=0).items()}
    outs = {be: m.run({"x": x, "y": y}, p, backend=be, dtype="f64") for be in BACKENDS}
    k, f0 = outs["numpy"]["kernel"], outs["numpy"]["f"]
    for be, o in outs.items():
        np.testing.assert_allclose(o["kernel"], k, atol=1e-9, err_msg=be)
    assert np.all(np.linalg.eigvalsh(k) > 0)
    eta, steps = 0.05, 200
    for _ in range(steps):
        g = m.gradients("mse", {"x": x, "y": y}, p, dtype="f64")
        p = {name: v - eta * g[name] for name, v in p.items()}
    f_t = m.run({"x": x, "y": y}, p, dtype="f64")["f"]
    # kernel regression with the initial NTK, loss mean((f - y)²): df/dt = -(2/n) Θ (f - y)
    lin = y + expm(-eta * steps * k * 2 / 8) @ (f0 - y)
    moved = np.max(np.abs(f_t - f0))
    # width 1024: the kernel drifts by O(1/sqrt(width)); measured 0.0055 against a
    # movement of 1.1, asserted below 5% of the movement
    assert moved > 0.5
    assert np.max(np.abs(f_t - lin)) < 0.05 * moved


def test_factor_analysis_em_matches_numpy_and_never_lowers_the_likelihood():
    rng = np.random.default_rng(6)
    w_true = rng.standard_normal((4, 1))
    x = rng.standard_normal((200, 1)) @ w_true.T + rng.standard_normal((200, 4)) * [0.3, 0.5, 0.2, 0.8]
    w0 = rng.standard_normal((4, 1))
    params = {"W": w0, "log_psi": np.zeros(4)}
    _, outs = _runs("factor_analysis.dl", {"x": x}, params)
    # NumPy EM (Ghahramani & Hinton 1996)
    xc = x - x.mean(0)
    cov = xc.T @ xc / 200
    w, psi, nlls = w0.copy(), np.ones(4), []
    for _ in range(20):
        g = np.linalg.inv(np.eye(1) + w.T @ (w / psi[:, None]))
        ez = xc @ (w / psi[:, None]) @ g
        ezz = 200 * g + ez.T @ ez
        w = (xc.T @ ez) @ np.linalg.inv(ezz)
        psi = np.diag(cov - w @ ez.T @ xc / 200)
        c = w @ w.T + np.diag(psi)
        nlls.append(0.5 * (np.linalg.slogdet(c)[1] + np.trace(np.linalg.solve(c, cov))))
    for be, o in outs.items():
        np.testing.assert_allclose(o["W_em"], w, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["psi_em"], psi, atol=1e-9, err_msg=be)
        np.testing.assert_allclose(o["nll_path"], nlls, atol=1e-9, err_msg=be)
    # EM never increases the negative log-likelihood (to round-off)
    assert np.all(np.diff(nlls) < 1e-12), np.diff(nlls)
    # and the loading is recovered up to sign
    cosine = abs((w[:, 0] @ w_true[:, 0]) / np.linalg.norm(w) / np.linalg.norm(w_true))
    assert cosine > 0.95
