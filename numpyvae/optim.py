"""Adam over the model's flat parameter and gradient buffers, in place.

Kingma & Ba (2015), with the same update rule and defaults as torch.optim.Adam:
    m = b1 m + (1 - b1) g                   running mean of gradients
    v = b2 v + (1 - b2) g^2                 running mean of squared gradients
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
The (1 - b^t) factors undo the bias of m and v towards their zero start.

Because parameters and gradients are each one flat array, a step is a dozen
whole-array operations written into preallocated buffers, not a loop over
tensors and not a fresh temporary per operation (that costs ~8x here).

Speed: the flat buffers (2.6 MB each for the default model) do not fit in a core's
cache, so a dozen passes over them would each stream from main memory. `step` walks
them in chunks of CHUNK_BYTES instead, running every operation on one chunk while
it sits in cache (about 1.7x faster than whole-array passes here). It also keeps m
out of subnormal floats (see `_flush`): on Fashion-MNIST a quarter of the weights
see zero gradients for long stretches, and from the second epoch on their decaying
m made every step twice as slow. Given a `parallel.ChunkPool`, NumPy's chunks are
shared out between threads (each with its own scratch buffer; elementwise, so the
result does not depend on which thread did which chunk). That is not the default:
on 2 cores it makes Adam alone 0.71x as long, but in training, with OpenBLAS on 2
threads, 1.09x as long (OpenBLAS's idle thread spins on the second core for ~0.1 s
after each matrix product, and the pool's thread competes with it); it pays (0.77x)
only where BLAS runs on one thread (benchmarks/bench_adam.py). On CuPy
the same update is one fused kernel (`_fused_adam`), a single pass over device
memory (GPUs handle subnormals at speed).
"""
from __future__ import annotations

import math

import numpy as np

from numpyvae.parallel import SERIAL

CHUNK_BYTES = 256 * 1024   # per array; the 5 arrays of a chunk (p, g, m, v, work) fit a 2 MB L2 cache
BETAS, EPS = (0.9, 0.999), 1e-8     # the defaults (torch.optim.Adam's); numpyvae trains with them


def check_hyperparameters(lr, betas, eps):
    """Raise TypeError or ValueError unless Adam can work with these: lr and eps finite and positive,
    two betas in [0, 1). (eps = 0 divides 0 by 0 where a gradient stays 0; NaN or Inf reach every parameter.)"""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of numbers (beta1, beta2), not {betas!r}")
    for value in (lr, eps, *betas):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"Adam's lr, betas and eps must be real numbers, not {value!r}")
    if not (_finite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a finite positive number, not {lr!r:.40}")
    if not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be in [0, 1), not {betas!r:.80}")
    if not (_finite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number, not {eps!r:.40}")


def _finite(value):
    """math.isfinite, but False for an integer no float holds (10**400), where math.isfinite raises OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Adam:
    """Adam for a model with `flat_params`, `flat_grads` and `backend` (a numpyvae VAE)."""

    def __init__(self, model, lr=1e-3, betas=BETAS, eps=EPS, pool=None):
        """pool: a parallel.ChunkPool to share the NumPy update between threads (default: none; see above)."""
        check_hyperparameters(lr, betas, eps)
        self.model = model
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        xp, n, dtype = model.xp, model.num_params, model.dtype
        self.m = xp.zeros(n, dtype=dtype)      # first moment,  same layout as flat_params
        self.v = xp.zeros(n, dtype=dtype)      # second moment, same layout as flat_params
        self.chunk = max(1, CHUNK_BYTES // dtype.itemsize)
        # threads only on NumPy: CuPy has its fused kernel, and the fake GPU stays a plain serial test double
        self._pool = pool if pool is not None and model.backend.name == "numpy" else SERIAL
        # scratch for one chunk per thread of the pool, reused every step
        self._work = [xp.empty(min(n, self.chunk), dtype=dtype) for _ in range(self._pool.workers)]
        self.t = 0                             # steps taken
        # where a gradient stays 0 (weights of always-black pixels), m shrinks by b1 every step and
        # within ~800 steps becomes a subnormal float, whose arithmetic is ~50x slower on x86 CPUs;
        # _update adds and removes this constant F, which rounds m to a multiple of F's rounding step
        # 64 * tiny (~1e-36 in float32): a tiny m becomes 0 or a normal float, an m much larger than F
        # comes back unchanged, and no m moves by more than ~1e-36
        finfo = np.finfo(dtype)
        self._flush = float(finfo.tiny / finfo.eps) * 64
        # on CuPy, one compiled kernel does the whole update; elsewhere None and the plain code runs
        self._fused = _fused_adam(xp) if model.backend.name == "cupy" else None

    def step(self):
        """Apply model.flat_grads to model.flat_params."""
        p, g = self.model.flat_params, self.model.flat_grads
        b1, b2 = self.betas
        self.t += 1
        step_size = self.lr / (1 - b1 ** self.t)
        sqrt_bc2 = math.sqrt(1 - b2 ** self.t)
        if self._fused is not None:
            # 1 - b computed here, in float64: in the kernel's float32, 1 - 0.999 is 0.00099998713
            self._fused(g, b1, 1 - b1, b2, 1 - b2, step_size, sqrt_bc2, self.eps, p, self.m, self.v)
            return
        self._step_size, self._sqrt_bc2 = step_size, sqrt_bc2
        self._pool.run(self._update_chunk, p.size, self.chunk)

    def _update_chunk(self, worker, start, end):
        """Update the chunk [start, end) of the flat buffers, with the scratch of the pool's thread `worker`."""
        p, g, m, v = self.model.flat_params, self.model.flat_grads, self.m, self.v
        self._update(p[start:end], g[start:end], m[start:end], v[start:end], self._work[worker][:end - start],
                     self._step_size, self._sqrt_bc2)

    def _update(self, p, g, m, v, work, step_size, sqrt_bc2):
        """The Adam update of one chunk, in place: p, m, v and g are matching slices of the flat buffers."""
        xp, (b1, b2) = self.model.xp, self.betas
        m *= b1
        xp.multiply(g, 1 - b1, out=work)
        m += work                               # m = b1 m + (1 - b1) g
        m += self._flush                        # (m + F) - F: never a subnormal; moves m by at most
        m -= self._flush                        # ~64 * tiny, and not at all when |m| >> F
        v *= b2
        xp.multiply(g, g, out=work)
        work *= 1 - b2
        v += work                               # v = b2 v + (1 - b2) g^2
        # sqrt(v) / sqrt_bc2 + eps = (sqrt(v) + eps sqrt_bc2) / sqrt_bc2: moving sqrt_bc2 into the
        # step size saves a pass over the chunk
        xp.sqrt(v, out=work)
        work += self.eps * sqrt_bc2
        xp.divide(m, work, out=work)
        work *= step_size * sqrt_bc2
        p -= work                               # p -= step_size m / (sqrt(v) / sqrt_bc2 + eps)

    def state_dict(self):
        """Everything needed to resume, as host NumPy arrays and numbers."""
        to_host = self.model.backend.to_host
        return {"t": self.t, "lr": self.lr, "beta1": self.betas[0], "beta2": self.betas[1],
                "eps": self.eps, "m": to_host(self.m), "v": to_host(self.v)}

    def load_state_dict(self, state):
        """Restore what state_dict() returned (hyperparameters included)."""
        n = self.model.num_params
        for key in ("m", "v"):
            if np.shape(state[key]) != (n,):
                raise ValueError(f"Adam state {key!r} has shape {np.shape(state[key])}, expected ({n},)")
        check_hyperparameters(float(state["lr"]), (float(state["beta1"]), float(state["beta2"])), float(state["eps"]))
        t = state["t"]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"Adam state 't' (steps taken) must be an integer 0 or more, not {t!r}")
        # moments no Adam step can produce: NaN or Inf would spread to every parameter at the next
        # step, and v < 0 is a square root of a negative number (v is an average of squares)
        for key in ("m", "v"):
            if not np.isfinite(np.asarray(state[key])).all():
                raise ValueError(f"Adam state {key!r} holds NaN or Inf")
        if (np.asarray(state["v"]) < 0).any():
            raise ValueError("Adam state 'v' has negative entries; it is an average of squared gradients")
        self.t = int(t)
        self.lr, self.eps = float(state["lr"]), float(state["eps"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        to_device = self.model.backend.to_device
        self.m[...] = to_device(np.asarray(state["m"]), dtype=self.model.dtype)
        self.v[...] = to_device(np.asarray(state["v"]), dtype=self.model.dtype)


def _fused_adam(cupy):
    """CuPy only: `_update`'s arithmetic as one elementwise kernel, each element read and written once.

    Called as kernel(g, b1, 1 - b1, b2, 1 - b2, step_size, sqrt_bc2, eps, p, m, v); p, m and v are
    updated in place.
    """
    return cupy.ElementwiseKernel(
        "T g, T b1, T one_minus_b1, T b2, T one_minus_b2, T step_size, T sqrt_bc2, T eps",
        "T p, T m, T v",
        """
        m = b1 * m + one_minus_b1 * g;
        v = b2 * v + one_minus_b2 * g * g;
        p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps);
        """,
        "numpyvae_adam")
