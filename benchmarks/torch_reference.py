"""numpyvae's model in PyTorch, built from the same description: the tests' reference and the benchmark's rival.

TorchVAE(model) walks the model's layer lists (network.py) and makes each entry the PyTorch
module that computes the same thing, with the same weights: Linear -> nn.Linear (numpyvae's W
is (fan_in, fan_out), PyTorch's the transpose), Conv2d -> nn.Conv2d and ConvTranspose2d ->
nn.ConvTranspose2d (numpyvae keeps PyTorch's layouts), ReLU -> nn.ReLU, Reshape and Flatten ->
a reshape of each example. The wiring is the VAE's: features, the labels joined after them and
beside z, the two heads, z = mu + eps * exp(logvar / 2), the decoder, the likelihood's
reconstruction term + KL, summed over the batch. There is no hand-written copy of any network:
a model numpyvae can build, this builds too, and a layer it cannot translate is an error.

The benchmark trains it as in-memory PyTorch training is usually written (the training set as
one float32 tensor, each batch gathered by index), from numpyvae's initial weights and in the
image order of numpyvae.batches.DeviceDataset, so the two loss curves differ only by the noise
eps (each framework draws its own). torch is imported by the tests and the benchmark's worker only.

Shapes: N = images, B = batch, D = pixels, K = classes, Z = latent.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from numpyvae import layers as numpyvae_layers
from numpyvae.vae import VAE

# The reconstruction term of each likelihood in losses.LIKELIHOODS, per pixel (the callers sum it).
RECONSTRUCTION = {
    "bernoulli": lambda logits, x: F.binary_cross_entropy_with_logits(logits, x, reduction="none"),
    "gaussian": lambda logits, x: (torch.sigmoid(logits) - x) ** 2,
    # accurate for |logits| < 12 or so (see test_continuous_bernoulli.py)
    "continuous-bernoulli": lambda logits, x: -torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x),
}


def sigma_vae_nll(log_sigma, logits, x, floor):
    """-log N(x; sigmoid(logits), sigma^2) per pixel, as the sigma-VAE's code writes it (orybkin/sigma-vae-pytorch,
    model.py: softclip(log_sigma, -6), then gaussian_nll), the floor being losses.CalibratedGaussian's."""
    log_sigma = floor + F.softplus(log_sigma - floor)                       # their softclip
    return 0.5 * ((x - torch.sigmoid(logits)) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * np.log(2 * np.pi)


# log sigma before the floor, for each calibrated --sigma: the learned parameter, or (their 'optimal_sigma_vae')
# log sqrt of the mean squared error over every pixel of every row given, not detached
LOG_SIGMA = {
    "learned": lambda vae, logits, x: vae.log_sigma,
    "optimal": lambda vae, logits, x: ((x - torch.sigmoid(logits)) ** 2).mean().sqrt().log(),
}


class Reshape(torch.nn.Module):
    """Each example to `shape`, as numpyvae's Reshape and Flatten entries do."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class Residual(torch.nn.Module):
    """x + inner(x), as numpyvae's Residual entry does."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


def torch_layer(layer, params):
    """(module, [(numpyvae name, torch parameter, transposed?)]) for one entry of a numpyvae layer list."""
    if isinstance(layer, numpyvae_layers.Residual):           # a composite: its inner layers, in order
        inner = [torch_layer(entry, params) for entry in layer.layers]
        return Residual(torch.nn.Sequential(*(module for module, _ in inner))), [n for _, named in inner for n in named]
    host = {name: np.asarray(value, np.float64) for name, value in params.items()}
    W, b = host.get(f"{layer.name}.W"), host.get(f"{layer.name}.b")
    if isinstance(layer, numpyvae_layers.Linear):
        module, transposed = torch.nn.Linear(layer.fan_in, layer.fan_out), True
        W = W.T
    elif type(layer).__name__ == "Conv2d":
        C_out, C_in, k, _ = W.shape
        module, transposed = torch.nn.Conv2d(C_in, C_out, k, stride=layer.stride, padding=layer.padding), False
    elif type(layer).__name__ == "ConvTranspose2d":
        C_in, C_out, k, _ = W.shape
        module, transposed = torch.nn.ConvTranspose2d(C_in, C_out, k, stride=layer.stride, padding=layer.padding,
                                                      output_padding=layer.output_padding), False
    elif type(layer) is numpyvae_layers.ReLU:
        return torch.nn.ReLU(), []
    elif isinstance(layer, numpyvae_layers.Reshape):
        return Reshape(layer.shape), []
    else:
        raise NotImplementedError(f"no PyTorch module for numpyvae's {type(layer).__name__}: add one here")
    module = module.double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
        module.bias.copy_(torch.from_numpy(b))
    return module, [(f"{layer.name}.W", module.weight, transposed), (f"{layer.name}.b", module.bias, False)]


def standard_normal_log_prob(vae, z):
    """log N(z; 0, I) of each row of z (N, Z)."""
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)


def vamp_log_prob(vae, z):
    """The VampPrior straight from its definition: log (1/K) sum_k N(z; m_k, exp(lv_k)), with m_k, lv_k the
    encoder's output on the pseudo-inputs sigmoid(a_k). z (N, Z) -> (N,)."""
    a = vae.prior_params["pseudo_logits"]
    m, logvar = vae.encode(torch.sigmoid(a.reshape(a.shape[0], -1)))                # (K, Z) each
    components = torch.distributions.Normal(m, torch.exp(0.5 * logvar))
    log_n = components.log_prob(z[:, None, :]).sum(-1)                             # (N, K)
    return torch.logsumexp(log_n, dim=1) - np.log(a.shape[0])


def standard_normal_kl(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the batch: Kingma & Welling, App. B."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


# log p(z) of each prior in priors.PRIORS, by name, and the KL of those with a closed form (the others
# are estimated at the sample, log q(z|x) - log p(z), as priors.Prior.kl_forward does)
LOG_PRIOR = {"normal": standard_normal_log_prob, "vamp": vamp_log_prob}
CLOSED_FORM_KL = {"normal": standard_normal_kl}

# the loss of each objective in objectives.OBJECTIVES, by name: vae(x, eps, y, beta) -> the summed loss
LOSS = {"elbo": lambda vae, x, eps, y, beta: vae(x, eps, y, beta=beta)[0],
        "iwae": lambda vae, x, eps, y, beta: vae.iwae(x, eps, y)}


class TorchVAE(torch.nn.Module):
    """The VAE `model` is, in PyTorch autograd, starting from model's current weights (float64 by default)."""

    def __init__(self, model, dtype=torch.float64):
        super().__init__()
        self.likelihood, self.num_classes = model.likelihood, model.num_classes
        self.recon = RECONSTRUCTION.get(model.likelihood)
        sigma = model.spec.sigma
        if sigma != "fixed":        # the calibrated Gaussian: its sigma from LOG_SIGMA, floored as numpyvae floors it
            floor = model.recon_term.MIN_LOG_SIGMA
            self.recon = lambda logits, x: sigma_vae_nll(LOG_SIGMA[sigma](self, logits, x), logits, x, floor)
        if self.recon is None:
            raise NotImplementedError(f"no PyTorch reference for the {model.likelihood!r} likelihood: add one")
        self.prior = model.spec.prior
        self.log_prior = LOG_PRIOR.get(self.prior)
        if self.log_prior is None:
            raise NotImplementedError(f"no PyTorch reference for the {self.prior!r} prior: add one to LOG_PRIOR")
        params = {name: model.backend.to_host(value) for name, value in model.params.items()}
        self.named = []           # (numpyvae name, torch parameter, transposed?) in numpyvae's order

        def sequential(layer_list):
            modules = []
            for layer in layer_list:
                module, named = torch_layer(layer, params)
                modules.append(module)
                self.named += named
            return torch.nn.Sequential(*modules)
        self.features, self.encoder = sequential(model.features), sequential(model.encoder)
        self.mu, self.logvar = (sequential([head]) for head in model.heads)
        self.decoder = sequential(model.decoder)
        if model.spec.sigma == "learned":
            name = model.recon_term.PARAM
            self.log_sigma = torch.nn.Parameter(torch.from_numpy(np.asarray(params[name], np.float64).copy()))
            self.named.append((name, self.log_sigma, False))
        self.prior_params = torch.nn.ParameterDict()            # "pseudo_logits" for "prior.pseudo_logits"
        for name, shape in model.prior.parameters().items():
            value = torch.nn.Parameter(torch.from_numpy(np.asarray(params[name], np.float64).reshape(shape)))
            self.prior_params[name.removeprefix("prior.")] = value
            self.named.append((name, value, False))
        self.to(dtype)

    def with_labels(self, a, y):
        if not self.num_classes:
            return a
        return torch.cat([a, F.one_hot(y, self.num_classes).to(a.dtype)], dim=1)

    def encode(self, x, y=None):
        h = self.encoder(self.with_labels(self.features(x), y))                # (B, H)
        return self.mu(h), self.logvar(h)                                      # (B, Z) each

    def loss(self, x, eps, y=None, objective="elbo", beta=1.0):
        """The loss of objectives.OBJECTIVES[objective], from its definition (LOSS)."""
        if objective not in LOSS:
            raise NotImplementedError(f"no PyTorch reference for the {objective!r} objective: add one to LOSS")
        return LOSS[objective](self, x, eps, y, beta)

    def forward(self, x, eps=None, y=None, generator=None, beta=1.0):
        """(total, recon, kl) summed over the batch; eps drawn from `generator` when not given."""
        mu, logvar = self.encode(x, y)                                         # (B, Z) each
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        std = torch.exp(0.5 * logvar)
        z = mu + eps * std                                                     # (B, Z)
        logits = self.decoder(self.with_labels(z, y))                          # (B, D)
        recon = self.recon(logits, x).sum()
        if self.prior in CLOSED_FORM_KL:
            kl = CLOSED_FORM_KL[self.prior](mu, logvar)
        else:                       # no closed form: log q(z|x) - log p(z) at the sample
            kl = torch.distributions.Normal(mu, std).log_prob(z).sum() - self.log_prior(self, z).sum()
        return recon + beta * kl, recon, kl

    def iwae(self, x, eps, y=None):
        """The negative IWAE bound (Burda et al. 2015) summed over the batch, eps (K, B, Z), straight
        from its definition: -sum_b log (1/K) sum_k p(x_b | z_kb) p(z_kb) / q(z_kb | x_b)."""
        mu, logvar = self.encode(x, y)                                         # (B, Z) each
        K, B, Z = eps.shape
        std = torch.exp(0.5 * logvar)
        z = mu + eps * std                                                     # (K, B, Z)
        logits = self.decoder(self.with_labels(z.reshape(K * B, Z), None if y is None else y.repeat(K)))
        x_rows = x.reshape(1, B, -1).expand(K, B, -1).reshape(K * B, -1)       # row k * B + b is image b
        log_px = -self.recon(logits, x_rows).sum(-1).reshape(K, B)
        normal = torch.distributions.Normal
        log_pz = self.log_prior(self, z.reshape(K * B, Z)).reshape(K, B)
        log_w = log_px + log_pz - normal(mu, std).log_prob(z).sum(-1)         # (K, B)
        return -(torch.logsumexp(log_w, 0) - np.log(K)).sum()

    def _numpyvae_layout(self, tensor_of):
        return {name: (tensor_of(p).T if transposed else tensor_of(p)) for name, p, transposed in self.named}

    def grads(self):
        """PyTorch's gradients in numpyvae's names and layouts (W of a Linear as (fan_in, fan_out))."""
        return self._numpyvae_layout(lambda p: p.grad.detach().cpu().numpy())

    def params(self):
        """PyTorch's parameters in numpyvae's names and layouts."""
        return self._numpyvae_layout(lambda p: p.detach().cpu().numpy())


def epoch_order(num_images, seed, epoch):
    """The image order of one epoch: the permutation numpyvae.batches.DeviceDataset draws for seed=(seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence((seed, epoch))).permutation(num_images)


def synchronize(device):
    """Wait for queued GPU work (CUDA runs asynchronously); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchRun:
    """One training run: the model, Adam, and the data on `device`, ready to time epoch by epoch."""

    def __init__(self, images, batch_size=128, hidden_dim=400, latent_dim=20, seed=0, lr=1e-3, device="cpu",
                 arch="dense", hidden_dims=None):
        """images: (N, D) uint8 host array. The model: VAE(arch=..., hidden_dims=...) (default: one hidden_dim)."""
        self.device = torch.device(device)
        self.batch_size, self.seed = batch_size, seed
        self.data = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().div_(255)   # (N, D)
        if hidden_dims is None and arch == "dense":
            hidden_dims = (hidden_dim,)
        start = VAE(arch=arch, hidden_dims=hidden_dims, latent_dim=latent_dim, seed=seed, dtype=np.float32)
        self.model = TorchVAE(start, dtype=torch.float32).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def step(self, x):
        """One training step on the batch x; returns the batch's loss as a tensor (not read: no sync)."""
        loss = self.model(x, generator=self.generator)[0]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def epoch(self, epoch):
        """Train one epoch; returns (seconds, mean loss per image, steps)."""
        n = len(self.data)
        order = torch.from_numpy(epoch_order(n, self.seed, epoch)).to(self.device)   # (N,) once per epoch
        total = torch.zeros((), dtype=torch.float64, device=self.device)   # summed where the data is, read once
        synchronize(self.device)
        started = time.perf_counter()
        steps = 0
        for start in range(0, n, self.batch_size):
            total += self.step(self.data[order[start:start + self.batch_size]])
            steps += 1
        synchronize(self.device)
        seconds = time.perf_counter() - started
        return seconds, total.item() / n, steps

    def time_steps(self, steps, warmup=5):
        """Seconds per step over `steps` steps on shuffled batches, after `warmup` untimed ones."""
        order = torch.from_numpy(epoch_order(len(self.data), self.seed, 0)).to(self.device)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]
        for i in range(warmup):
            self.step(self.data[batches[i % len(batches)]])
        synchronize(self.device)
        started = time.perf_counter()
        for i in range(steps):
            self.step(self.data[batches[i % len(batches)]])
        synchronize(self.device)
        return (time.perf_counter() - started) / steps
