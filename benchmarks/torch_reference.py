"""The default numpyvae model written in PyTorch, for the benchmark to time against.

Same model and training as numpyvae's defaults, as pytorch/examples' VAE writes it:
784-400-20, ReLU, Adam(lr=1e-3) with torch's defaults, batch 128, pixels in [0, 1],
z = mu + eps * exp(logvar / 2), loss = BCE-with-logits summed over pixels + KL summed
over latents. It starts from numpyvae's initial weights and visits the images in the
same order as numpyvae.batches.DeviceDataset, so the two loss curves differ only by
the noise eps (each framework draws its own).

The training set is held in memory as one float32 tensor (188 MB for Fashion-MNIST),
as in-memory PyTorch training is usually written; each batch is gathered from it by
index. torch is imported by the benchmark's worker process only.

Shapes: N = images, B = batch, D = pixels, H = hidden, Z = latent.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from numpyvae.vae import VAE


class TorchVAE(torch.nn.Module):
    """pytorch/examples' VAE with configurable sizes; nn.Linear stores W as (fan_out, fan_in)."""

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20):
        super().__init__()
        D, H, Z = input_dim, hidden_dim, latent_dim
        self.enc, self.mu, self.logvar = torch.nn.Linear(D, H), torch.nn.Linear(H, Z), torch.nn.Linear(H, Z)
        self.dec, self.out = torch.nn.Linear(Z, H), torch.nn.Linear(H, D)

    def load_numpyvae_init(self, seed):
        """Copy in the weights numpyvae.VAE(seed=seed) starts from (numpyvae's W is the transpose)."""
        D, H, Z = self.enc.in_features, self.enc.out_features, self.mu.out_features
        params = VAE(D, H, Z, seed=seed, dtype=np.float32).params
        with torch.no_grad():
            for name in ("enc", "mu", "logvar", "dec", "out"):
                layer = getattr(self, name)
                layer.weight.copy_(torch.from_numpy(params[name + ".W"].T.copy()))
                layer.bias.copy_(torch.from_numpy(params[name + ".b"].copy()))
        return self

    def loss(self, x, generator=None):
        """Negative ELBO summed over the batch: BCE(x, decoder logits) + KL(q(z|x) || N(0, I))."""
        h = F.relu(self.enc(x))                                            # (B, H)
        mu, logvar = self.mu(h), self.logvar(h)                            # (B, Z) each
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)                             # (B, Z)
        logits = self.out(F.relu(self.dec(z)))                             # (B, D)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())       # Kingma & Welling, App. B
        return recon + kl


def epoch_order(num_images, seed, epoch):
    """The image order of one epoch: the permutation numpyvae.batches.DeviceDataset draws for seed=(seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence((seed, epoch))).permutation(num_images)


def synchronize(device):
    """Wait for queued GPU work (CUDA runs asynchronously); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchRun:
    """One training run: the model, Adam, and the data on `device`, ready to time epoch by epoch."""

    def __init__(self, images, batch_size=128, hidden_dim=400, latent_dim=20, seed=0, lr=1e-3, device="cpu"):
        """images: (N, D) uint8 host array."""
        self.device = torch.device(device)
        self.batch_size, self.seed = batch_size, seed
        self.data = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().div_(255)   # (N, D)
        self.model = TorchVAE(images.shape[1], hidden_dim, latent_dim).load_numpyvae_init(seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def step(self, x):
        """One training step on the batch x; returns the batch's loss as a tensor (not read: no sync)."""
        loss = self.model.loss(x, self.generator)
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
