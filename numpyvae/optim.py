"""Adam over the model's flat parameter and gradient buffers, in place.

Kingma & Ba (2015), with the same update rule and defaults as torch.optim.Adam:
    m = b1 m + (1 - b1) g                   running mean of gradients
    v = b2 v + (1 - b2) g^2                 running mean of squared gradients
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
The (1 - b^t) factors undo the bias of m and v towards their zero start.

Because parameters and gradients are each one flat array, a step is a dozen
whole-array operations written into preallocated buffers, not a loop over
tensors and not a fresh temporary per operation (that costs ~8x here).
"""
from __future__ import annotations

import math

import numpy as np


class Adam:
    """Adam for a model with `flat_params`, `flat_grads` and `backend` (a numpyvae VAE)."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, not {lr!r}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), not {betas!r}")
        self.model = model
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        xp, n, dtype = model.xp, model.num_params, model.dtype
        self.m = xp.zeros(n, dtype=dtype)      # first moment,  same layout as flat_params
        self.v = xp.zeros(n, dtype=dtype)      # second moment, same layout as flat_params
        self._work = xp.empty(n, dtype=dtype)  # scratch, reused every step
        self.t = 0                             # steps taken

    def step(self):
        """Apply model.flat_grads to model.flat_params."""
        xp = self.model.xp
        p, g, m, v, work = self.model.flat_params, self.model.flat_grads, self.m, self.v, self._work
        b1, b2 = self.betas
        self.t += 1
        step_size = self.lr / (1 - b1 ** self.t)
        inv_sqrt_bc2 = 1 / math.sqrt(1 - b2 ** self.t)

        m *= b1
        xp.multiply(g, 1 - b1, out=work)
        m += work                               # m = b1 m + (1 - b1) g
        v *= b2
        xp.multiply(g, g, out=work)
        work *= 1 - b2
        v += work                               # v = b2 v + (1 - b2) g^2
        xp.sqrt(v, out=work)
        work *= inv_sqrt_bc2
        work += self.eps                        # sqrt(v / (1 - b2^t)) + eps
        xp.divide(m, work, out=work)
        work *= step_size
        p -= work

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
        self.t = int(state["t"])
        self.lr, self.eps = float(state["lr"]), float(state["eps"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        to_device = self.model.backend.to_device
        self.m[...] = to_device(np.asarray(state["m"]), dtype=self.model.dtype)
        self.v[...] = to_device(np.asarray(state["v"]), dtype=self.model.dtype)
