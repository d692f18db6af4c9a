"""Several processes (issue 15, item 4): `ptycholib train` under Lightning DDP and TF MultiWorkerMirroredStrategy.

The two end-to-end runs start real processes on this machine's CPU (two each) and are marked slow;
the rank and TF_CONFIG helpers of `ptycholib.distributed` are tested directly. Split inference and its
merge are tested in tests/test_stream.py.
"""

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ptycholib import archive, distributed
from ptycholib.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["gridsize=1", "n_filters_scale=1", "n_groups=16", "nepochs=1", "batch_size=4", "validation_fraction=0.25",
         "--no-progress"]


def _env(**extra):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CONFIG", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")}
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep), **extra)
    return env


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _history(folder):
    with open(folder / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_cli_train_under_lightning_ddp_on_two_cpu_processes(tiny_data_dir, tmp_path):
    """``ptycholib train ... devices=2 strategy=ddp``: Lightning starts the second process; rank 0 writes."""
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "ptycholib", "train", "--data", str(tiny_data_dir / "train.npz"),
               "--backend", "torch", "--out", str(out), "accelerator=cpu", "devices=2", "strategy=ddp", *SMALL]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(out)
    assert len(history) == 1 and math.isfinite(float(history[0]["loss"]))
    assert archive.load_model(out).config.training.devices == 2


@pytest.mark.slow
def test_cli_train_under_torchrun(tiny_data_dir, tmp_path):
    """``torchrun --nproc-per-node 2 -m ptycholib train ... devices=2 strategy=ddp``: Lightning joins torchrun's processes."""
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ptycholib",
               "train", "--data", str(tiny_data_dir / "train.npz"), "--backend", "torch", "--out", str(out),
               "accelerator=cpu", "devices=2", "strategy=ddp", *SMALL]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_history(out)) == 1 and archive.load_model(out).config.training.devices == 2


@pytest.mark.slow
def test_tf_multi_worker_mirrored_strategy_with_two_local_workers(tiny_data_dir, tmp_path):
    """Two ``ptycholib train --backend tensorflow`` workers with TF_CONFIG on localhost train one epoch together."""
    pytest.importorskip("tensorflow")
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    runs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        command = [sys.executable, "-m", "ptycholib", "train", "--data", str(tiny_data_dir / "train.npz"),
                   "--backend", "tensorflow", "--out", str(tmp_path / f"worker{index}"), "num_nodes=2", *SMALL]
        runs.append(subprocess.Popen(command, cwd=tmp_path, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for run in runs:
            outputs.append(run.communicate(timeout=300))
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    for run, (_, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr[-3000:]
    history = _history(tmp_path / "worker0")
    assert len(history) == 1 and math.isfinite(float(history[0]["loss"]))
    assert not (tmp_path / "worker1" / archive.DEFAULT_NAME).exists()  # only the chief (worker 0) writes
    assert (tmp_path / "worker1" / "logs" / "worker1").is_dir()


RANK_VARIABLES = ("TF_CONFIG", "RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture
def clean_env(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_is_primary(clean_env):
    assert distributed.process_rank() == 0 and distributed.is_primary_process()
    assert not distributed.is_multi_worker()


@pytest.mark.parametrize("variables, rank", [
    ({"RANK": "3"}, 3),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0),
    ({"LOCAL_RANK": "1"}, 1),
    ({"NODE_RANK": "1", "LOCAL_RANK": "1"}, 5),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})}, 1),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker",
                                                                                          "index": 0}})}, 1),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief",
                                                                                          "index": 0}})}, 0),
])
def test_rank_from_the_launchers_environment(clean_env, variables, rank):
    for name, value in variables.items():
        clean_env.setenv(name, value)
    assert distributed.process_rank(devices=4) == rank
    assert distributed.is_primary_process() == (rank == 0)


def test_log_dir_of_tf_workers(clean_env, tmp_path):
    clean_env.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker",
                                                                                              "index": 1}}))
    assert distributed.log_dir_for(tmp_path, TrainingConfig(backend="tensorflow")) == tmp_path / "worker1"
    assert distributed.log_dir_for(tmp_path, TrainingConfig(backend="torch")) == tmp_path


def test_bad_tf_config_and_node_count_are_refused(clean_env):
    clean_env.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        distributed.tf_config()
    clean_env.setenv("TF_CONFIG", json.dumps({"cluster": ["a:1"]}))
    with pytest.raises(ValueError, match="TF_CONFIG must be"):
        distributed.tf_config()
    clean_env.delenv("TF_CONFIG")
    with pytest.raises(ValueError, match="num_nodes=2 with the tensorflow backend needs TF_CONFIG"):
        distributed.prepare(TrainingConfig(backend="tensorflow", num_nodes=2))
    distributed.prepare(TrainingConfig(backend="torch", num_nodes=2))  # Lightning reads its own environment


def test_num_nodes_is_validated():
    with pytest.raises(ValueError, match="num_nodes"):
        TrainingConfig(num_nodes=0)
