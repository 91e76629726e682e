"""What the backend benchmark runs: the backends, the model, and the full and --quick settings."""

BACKENDS = ("numpy", "cupy", "torch")
LABELS = {"numpy": "numpyvae, NumPy float32", "cupy": "numpyvae, CuPy float32", "torch": "PyTorch float32 (CPU)"}
MODEL = {"input_dim": 784, "hidden_dim": 400, "latent_dim": 20, "batch_size": 128, "lr": 1e-3}

FULL = {"epochs": 5, "repeats": 5, "images": None, "scaling_repeats": 3, "scaling_images": 8192,
        "scaling_batches": (32, 64, 128, 256, 512, 1024), "scaling_hidden": (100, 200, 400, 800, 1600)}
QUICK = {"epochs": 2, "repeats": 1, "images": 512, "scaling_repeats": 1, "scaling_images": 256,
         "scaling_batches": (32, 128), "scaling_hidden": (100,)}

# the speed targets set when numpyvae was made fast (issue 9), shown next to the measured ratios
TARGET_OVER_TORCH = 0.7          # NumPy epoch time / PyTorch's
TARGET_OVER_MATMUL_FLOOR = 1.4   # NumPy epoch time / its own matrix products alone
TARGET_CONV_OVER_TORCH = 1.0     # issue #18: NumPy conv epoch time / PyTorch's, same architecture

# issue 19's targets for an epoch beside one competing busy core (benchkit.busy)
BUSY_TARGET_OVER_QUIET = 2.0         # auto's epoch under the load / its epoch without it
BUSY_TARGET_OVER_ONE_THREAD = 1.2    # auto's epoch under the load / one BLAS thread's under the same load
