"""PyTorch's side of a measurement: the same model and data through torch_reference.TorchRun.

torch is imported here only, in the worker process that runs PyTorch.
"""
from __future__ import annotations


def measure(spec, images):
    """The results of one PyTorch run of spec["task"] ("train" or "scaling") on the (N, D) uint8 images."""
    import torch
    from torch_reference import TorchRun
    torch.set_num_threads(spec["threads"])
    device = spec.get("device", "cpu")
    result = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "device": device}
    if spec["task"] == "train":
        arch = spec.get("arch", "dense")
        run = TorchRun(images, spec["batch_size"], spec["hidden_dim"], spec["latent_dim"],
                       spec["seed"], spec["lr"], device, arch=arch)
        run.generator.manual_seed(1000 + spec["noise_seed"])
        TorchRun(images[:spec["batch_size"] * 3], spec["batch_size"], spec["hidden_dim"],
                 spec["latent_dim"], spec["seed"], spec["lr"], device, arch=arch).time_steps(1, warmup=2)   # warm-up
        epochs = [run.epoch(epoch) for epoch in range(1, spec["epochs"] + 1)]
        result.update(epoch_seconds=[e[0] for e in epochs], epoch_loss=[e[1] for e in epochs],
                      steps=epochs[-1][2])
    else:
        result["seconds_per_step"] = {
            f"{batch},{hidden}": TorchRun(images, batch, hidden, spec["latent_dim"], spec["seed"],
                                          spec["lr"], device).time_steps(max(5, spec["scaling_images"] // batch))
            for batch, hidden in spec["configs"]}
    return result
