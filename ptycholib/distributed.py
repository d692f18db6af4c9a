"""Several processes, one training run: who is the primary process, and TensorFlow's multi-worker set-up.

torch trains under Lightning, which starts (``devices`` > 1 on one node) or joins (``torchrun``,
SLURM) one process per device and tells each its rank through the environment. TensorFlow trains
with ``tf.distribute.MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` lists more than one task;
that strategy must exist before TensorFlow runs any operation, so `prepare` creates it before the
model is built (`ptycholib.workflow.prepare_training` calls it). Only the primary process (rank 0,
or TensorFlow's chief) writes the model archive and history (`is_primary_process`). docs/cluster.md
is the guide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["process_rank", "is_primary_process", "log_dir_for", "tf_config", "is_multi_worker", "multi_worker_strategy",
           "prepare"]

_STRATEGY = {}


def tf_config():
    """Return the parsed ``TF_CONFIG`` environment variable, or None when it is unset or empty.

    Raises
    ------
    ValueError
        ``TF_CONFIG`` is not a JSON object with ``cluster`` and ``task``.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}); see docs/cluster.md for its form.") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not isinstance(config.get("task"), dict):
        raise ValueError('TF_CONFIG must be {"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", '
                         '"index": i}}; see docs/cluster.md.')
    return config


def is_multi_worker():
    """True when ``TF_CONFIG`` lists more than one task (chief and workers together)."""
    config = tf_config()
    return config is not None and sum(len(tasks) for tasks in config["cluster"].values()) > 1


def process_rank(devices=1):
    """This process's global rank: 0 for a single process, else what the launcher put in the environment.

    Parameters
    ----------
    devices : int
        Processes per node (``TrainingConfig.devices``), for Lightning's own launcher, which sets
        only ``NODE_RANK`` and ``LOCAL_RANK``.

    Notes
    -----
    Read from, in order: ``RANK`` (torchrun), ``SLURM_PROCID`` (in a job step of several tasks),
    Lightning's ``NODE_RANK * devices + LOCAL_RANK``, and ``TF_CONFIG`` (the chief is 0, worker ``i``
    is ``i``, or ``i + 1`` beside a chief; an evaluator is -1).
    """
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    local, node = int(env.get("LOCAL_RANK", "0") or 0), int(env.get("NODE_RANK", "0") or 0)
    if local or node:
        return node * int(devices) + local
    config = tf_config()
    if config is not None:
        task = config["task"]
        if task.get("type") == "chief":
            return 0
        if task.get("type") == "worker":
            return int(task.get("index", 0)) + (1 if "chief" in config["cluster"] else 0)
        return -1  # an evaluator or parameter server never writes the model
    return 0


def is_primary_process():
    """True in the one process that writes results (rank 0, TensorFlow's chief)."""
    return process_rank(devices=1) == 0 and int(os.environ.get("LOCAL_RANK", "0") or 0) == 0


def log_dir_for(log_dir, training_config):
    """The log folder of this process: ``log_dir``, or ``log_dir/worker<rank>`` for a TensorFlow worker that is not the chief.

    Lightning writes logs from rank 0 only and needs one checkpoint folder on every rank; Keras
    callbacks write on every worker, so each TensorFlow worker but the chief gets its own folder.
    """
    if training_config.backend != "tensorflow" or is_primary_process():
        return log_dir
    return Path(log_dir) / f"worker{process_rank(training_config.devices)}"


def multi_worker_strategy():
    """The process's ``tf.distribute.MultiWorkerMirroredStrategy`` (created once, from ``TF_CONFIG``).

    Raises
    ------
    ValueError
        TensorFlow already ran an operation in this process, so the strategy can no longer be made.
    """
    if "strategy" not in _STRATEGY:
        import tensorflow as tf

        try:
            _STRATEGY["strategy"] = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise ValueError(
                f"TF_CONFIG asks for multi-worker training, but TensorFlow already ran in this process ({error}); "
                "train through `ptycholib train` / `ptycholib.workflow.train_model`, which create the strategy first."
            ) from None
    return _STRATEGY["strategy"]


def prepare(training_config):
    """Set up what must exist before a backend builds its model: the TF multi-worker strategy.

    Called by `ptycholib.workflow.prepare_training`; does nothing for torch or without ``TF_CONFIG``.

    Raises
    ------
    ValueError
        ``num_nodes`` > 1 with TensorFlow but ``TF_CONFIG`` does not list that many tasks.
    """
    if training_config.backend != "tensorflow":
        return
    config = tf_config()
    tasks = 0 if config is None else sum(len(value) for value in config["cluster"].values())
    if training_config.num_nodes > 1 and tasks != training_config.num_nodes:
        raise ValueError(f"num_nodes={training_config.num_nodes} with the tensorflow backend needs TF_CONFIG to list "
                         f"{training_config.num_nodes} tasks; it lists {tasks}. See docs/cluster.md.")
    if tasks > 1:
        multi_worker_strategy()
