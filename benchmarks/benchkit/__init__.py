"""The pieces of benchmarks/bench_backends.py, one job per module.

config (what is run) -> harness (fresh processes, interleaved rounds) -> worker (one measurement:
numpyvae_runner or torch_runner, then matmul's same-shapes rate) -> report (medians, tables) and plot.
"""
