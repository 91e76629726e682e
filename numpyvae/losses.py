"""The two halves of the negative ELBO: a reconstruction term and the KL term.

Each loss sums over pixels (or latents) and over the batch; divide by the batch
size for the per-image numbers that get reported. Like the layers, a loss is a
forward/backward pair that keeps only what backward needs, in reused buffers.

Shapes: B = batch, D = pixels, Z = latent.
"""
from __future__ import annotations

from numpyvae.layers import Layer, is_cupy, sigmoid


class BernoulliLoss(Layer):
    """-log p(x | logits) for pixels x in [0, 1] under independent Bernoullis, from logits.

    With p = sigmoid(l), binary cross-entropy per pixel is
        -[x log p + (1 - x) log(1 - p)] = softplus(l) - x * l,
    using log p = -softplus(-l), log(1 - p) = -softplus(l) and softplus(-l) = softplus(l) - l.
    softplus(l) = log(1 + exp(l)) overflows for large l, so it is computed as
        softplus(l) = max(l, 0) + log1p(exp(-|l|)),
    where exp(-|l|) <= 1 always. The gradient is the famous clean one:
        d/dl [softplus(l) - x l] = sigmoid(l) - x.
    Forward keeps the logits and x.
    """

    def __init__(self, xp, dtype):
        super().__init__(xp, dtype)
        self._fused_backward = _fused_bernoulli_grad(xp) if is_cupy(xp) else None

    def forward(self, logits, x):                     # (B, D), (B, D) -> scalar
        xp = self.xp
        softplus = self._buffer("softplus", logits.shape)
        work = self._buffer("work", logits.shape)
        xp.abs(logits, out=work)
        xp.negative(work, out=work)
        xp.exp(work, out=work)
        xp.log1p(work, out=work)                      # log1p(exp(-|l|))
        xp.maximum(logits, 0, out=softplus)
        softplus += work                              # softplus(l)
        self._saved = (logits, x)
        # sum(softplus(l) - x l) = sum(softplus(l)) - x . l: the dot product needs no (B, D) pass of its own
        return softplus.sum() - xp.vdot(x, logits)

    def backward(self):
        logits, x = self._take_saved()
        dlogits = self._buffer("dlogits", logits.shape)   # (B, D)
        if self._fused_backward is not None:
            return self._fused_backward(logits, x, dlogits)
        sigmoid(self.xp, logits, out=dlogits)
        dlogits -= x                                  # sigmoid(l) - x
        return dlogits


def _fused_bernoulli_grad(cupy):
    """CuPy only: BernoulliLoss.backward as one kernel (the plain code makes five passes over (B, D))."""
    return cupy.ElementwiseKernel(
        "T logits, T x", "T dlogits",
        "dlogits = (1 + tanh(logits / 2)) / 2 - x",   # sigmoid(l) - x, sigmoid written as in layers.sigmoid
        "numpyvae_bernoulli_grad")


class GaussianLoss(Layer):
    """The seed blog post's reconstruction term: sum of squared errors of sigmoid(logits) against x.

    This is -log N(x | p, variance 1/2) less the constant (D/2) log(pi) per image, with p = sigmoid(l):
        loss = sum (p - x)^2,   dloss/dl = 2 (p - x) * p (1 - p)   (chain rule through the sigmoid).
    Forward keeps p and the error p - x.
    """

    def __init__(self, xp, dtype):
        super().__init__(xp, dtype)
        self._fused_backward = _fused_gaussian_grad(xp) if is_cupy(xp) else None

    def forward(self, logits, x):
        p = sigmoid(self.xp, logits, out=self._buffer("p", logits.shape))
        error = self._buffer("error", logits.shape)
        self.xp.subtract(p, x, out=error)             # p - x
        self._saved = (p, error)
        return self.xp.vdot(error, error)             # sum of squares, without a (B, D) temporary

    def backward(self):
        p, error = self._take_saved()
        dlogits = self._buffer("dlogits", p.shape)
        if self._fused_backward is not None:
            return self._fused_backward(p, error, dlogits)
        self.xp.subtract(1, p, out=dlogits)           # 1 - p
        dlogits *= p                                  # p (1 - p)
        dlogits *= error
        dlogits *= 2                                  # 2 (p - x) p (1 - p)
        return dlogits


def _fused_gaussian_grad(cupy):
    """CuPy only: GaussianLoss.backward as one kernel (the plain code makes four passes over (B, D))."""
    return cupy.ElementwiseKernel(
        "T p, T error", "T dlogits",
        "dlogits = 2 * error * p * (1 - p)",
        "numpyvae_gaussian_grad")


class GaussianKL(Layer):
    """KL(q(z|x) || N(0, I)) for q = N(mu, diag(exp(logvar))), in closed form.

    Kingma & Welling (2014), Appendix B: for one example,
        KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)),
    and its gradients are
        dKL/dmu     = mu
        dKL/dlogvar = (exp(logvar) - 1) / 2.
    Both need exp(logvar) - 1, which is computed as expm1(logvar): when a latent
    dimension is unused its logvar sits near 0, and exp(logvar) - 1 in float32 would
    cancel down to a few correct digits. Forward keeps mu and expm1(logvar).
    """

    def forward(self, mu, logvar):                    # (B, Z), (B, Z) -> scalar
        xp = self.xp
        var_minus_1 = self._buffer("var_minus_1", mu.shape)
        xp.expm1(logvar, out=var_minus_1)             # exp(logvar) - 1, accurate near logvar = 0
        per_latent = self._buffer("per_latent", mu.shape)
        xp.multiply(mu, mu, out=per_latent)
        per_latent += var_minus_1
        per_latent -= logvar                          # mu^2 + (exp(logvar) - 1) - logvar
        self._saved = (mu, var_minus_1)
        return 0.5 * per_latent.sum()

    def backward(self, scale=1.0):
        """Return (scale * dKL/dmu, scale * dKL/dlogvar); `scale` is the KL weight beta."""
        mu, var_minus_1 = self._take_saved()
        dmu = self._buffer("dmu", mu.shape)
        self.xp.multiply(mu, scale, out=dmu)
        dlogvar = self._buffer("dlogvar", mu.shape)
        self.xp.multiply(var_minus_1, 0.5 * scale, out=dlogvar)
        return dmu, dlogvar
