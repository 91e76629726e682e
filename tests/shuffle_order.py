"""A pytest plugin that runs the collected tests in a shuffled order, to find tests that leak state.

Tests must leave global state (registries of likelihoods and architectures, environment variables,
the working directory, signal handlers) as they found them, so the suite passes in any order:

    PYTHONPATH=tests python -m pytest -p shuffle_order            # SHUFFLE_SEED=1 by default
    SHUFFLE_SEED=7 PYTHONPATH=tests python -m pytest -p shuffle_order
    SHUFFLE_SEED=reverse PYTHONPATH=tests python -m pytest -p shuffle_order

No dependency and no conftest: it does nothing unless named with -p.
"""
import os
import random


def pytest_collection_modifyitems(session, config, items):
    seed = os.environ.get("SHUFFLE_SEED", "1")
    if seed == "reverse":
        items.reverse()
    else:
        random.Random(int(seed)).shuffle(items)


def pytest_report_header(config):
    return f"shuffle_order: SHUFFLE_SEED={os.environ.get('SHUFFLE_SEED', '1')}"
