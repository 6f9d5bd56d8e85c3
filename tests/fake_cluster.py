"""A local autoscaling Ray cluster (Ray's fake multi-node provider) that leaves every other
Ray cluster on the machine alone.

``ray.cluster_utils.AutoscalingCluster`` starts and stops its cluster with ``ray stop
--force``, which kills every Ray process of the machine (other test processes' clusters,
the other pytest-xdist worker), and reads a base config the pip wheel does not ship. This
starts the same thing, a head (``ray start --head --autoscaling-config`` with
``RAY_FAKE_CLUSTER=1``) whose autoscaler launches worker nodes as local processes, with
a port, a temporary directory and a ``RAY_TMPDIR`` of its own, and stops it by killing only
the processes that carry its own temporary directory (in their command line or
environment): never ``ray stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(worker_types: dict, head_cpus: float, gcs_address: str,
                       idle_timeout_minutes: float) -> dict:
    """The fake provider's cluster config (what ``example.yaml`` of Ray's source holds):
    a head node type with no workers of its own and ``worker_types``."""
    return {
        "cluster_name": "fake_multinode",
        "max_workers": sum(int(t.get("max_workers", 0)) for t in worker_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "available_node_types": {
            **worker_types,
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes,
        "docker": {}, "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


class FakeAutoscalingCluster:
    """A head of ``head_cpus`` CPUs and worker nodes of ``worker_types`` (Ray node types:
    ``{name: {"resources": {...}, "node_config": {}, "min_workers": 0, "max_workers": n}}``)
    added while work waits for resources and removed after ``idle_timeout_minutes`` idle.

    ``address``: the GCS address to join; ``env``: the environment a driver of this cluster
    runs with (``RAY_ADDRESS`` and ``RAY_TMPDIR`` set, so ``ray.address=auto`` finds it)."""

    def __init__(self, worker_types: dict, head_cpus: float = 0, idle_timeout_minutes: float = 0.1):
        # short: Ray's unix sockets live under it (a path of at most 107 bytes)
        self.tmp = tempfile.mkdtemp(prefix="rfc-", dir="/tmp")
        self.port = free_port()
        from ray._private.services import get_node_ip_address

        self.ip = get_node_ip_address()
        self.address = f"{self.ip}:{self.port}"
        self.config = autoscaling_config(worker_types, head_cpus, self.address, idle_timeout_minutes)
        self.env = {**os.environ, "RAY_TMPDIR": self.tmp, "RAY_ADDRESS": self.address,
                    "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # no token authentication (Ray turns it on where ~/.ray/auth_token exists):
                    # every process of this test cluster runs with this environment
                    "RAY_AUTH_MODE": "disabled"}
        self.started = False

    def start(self, timeout_s: float = 120) -> None:
        path = os.path.join(self.tmp, "autoscaling.json")
        with open(path, "w") as f:
            json.dump(self.config, f)
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        self.started = True  # from here on shutdown() has processes to kill
        subprocess.run([ray, "start", "--head", f"--port={self.port}", f"--node-ip-address={self.ip}",
                        f"--autoscaling-config={path}", "--num-cpus=0", f"--temp-dir={self.tmp}/ray",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=timeout_s)

    def pids(self) -> list[int]:
        """This cluster's processes: those whose command line or environment names its
        temporary directory (the fake worker nodes are the autoscaler's children and
        inherit ``RAY_TMPDIR``)."""
        mark = self.tmp.encode()
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
                env = b""
                if mark not in cmd:
                    with open(f"/proc/{d}/environ", "rb") as f:
                        env = f.read()
            except OSError:  # gone, or not ours to read
                continue
            if mark in cmd or b"RAY_TMPDIR=" + mark + b"\0" in env:
                out.append(int(d))
        return out

    def worker_nodes(self) -> int:
        """Worker nodes alive now: this cluster's raylets but the head's."""
        n = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/raylet"):
                n += 1
        return max(0, n - 1)

    def wait_for_nodes(self, pred, timeout_s: float, poll_s: float = 0.5) -> float:
        """Seconds until ``pred(worker_nodes())``; TimeoutError after ``timeout_s``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if pred(self.worker_nodes()):
                return time.monotonic() - t0
            time.sleep(poll_s)
        raise TimeoutError(f"worker nodes: {self.worker_nodes()} after {timeout_s:.0f} s")

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Kill this cluster's processes (SIGTERM, then SIGKILL) and remove its directory."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            t0 = time.monotonic()
            while self.pids() and time.monotonic() - t0 < grace_s:
                time.sleep(0.2)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc):
        self.shutdown()
