"""Workers report their resident memory (benchmarks/bench_cache_memory.py reads it per step)."""

import os
import subprocess
import sys

CODE = """
import numpy as np
from differland_dist.distributed.worker import resident_memory
before = resident_memory()
assert before["rss_bytes"] > 0 and before["peak_rss_bytes"] >= before["rss_bytes"], before
block = np.ones(256 * 2**20 // 8)          # 256 MiB, touched
after = resident_memory()
assert after["rss_bytes"] - before["rss_bytes"] > 200 * 2**20, (before, after)
assert after["peak_rss_bytes"] >= after["rss_bytes"], after
print("ok")
"""


def test_resident_memory_sees_an_allocation():
    # a fresh process: in a long-lived one, freed pages already resident could be reused
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


LOGGING_CODE = """
import logging, os
from differland_dist.config import from_dict
from differland_dist.distributed.worker import LOG_SETUP_ENV, run_log_setup, worker_env

cfg = from_dict({"data": {"url": "x.zarr"}})
assert LOG_SETUP_ENV not in worker_env(cfg.ray)     # a library caller: workers left alone
run_log_setup()
assert not logging.getLogger().handlers              # the library configured nothing
from differland_dist.cli.main import configure_logging
configure_logging()                                  # the CLI: its workers configure output
env = worker_env(cfg.ray)
assert env[LOG_SETUP_ENV] == "differland_dist.cli.main:configure_worker_logging", env
root = logging.getLogger()
for h in root.handlers[:]:
    root.removeHandler(h)
os.environ.update(env)                               # as in a worker process
run_log_setup()
assert root.handlers and root.level == logging.INFO
print("ok")
"""


def test_only_the_cli_configures_worker_log_output():
    """Library code never configures logging; the CLI names the function that configures a
    worker process's output and the driver passes it on in the workers' environment."""
    # a fresh process, as a library user's: not this one's environment, where in-process CLI
    # calls of other tests named the CLI's setup function
    env = {k: v for k, v in os.environ.items() if k != "DIFFERLAND_WORKER_LOG_SETUP"}
    r = subprocess.run([sys.executable, "-c", LOGGING_CODE], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
