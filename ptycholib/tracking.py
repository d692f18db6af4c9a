"""What a training run leaves behind: ``history.csv`` and, with ``logger='mlflow'``, an MLflow run.

`write_history` writes the per-epoch records (columns in `HISTORY_COLUMNS`). With
``training.logger='mlflow'``, `ptycholib.workflow.train_model` opens one MLflow run (`start_run`)
that gets the configs as parameters, each epoch's record as metrics (step = epoch), the tags in the
environment variable ``PTYCHOLIB_RUN_TAGS`` (`run_tags`; `ptycholib.notebooks.run_notebook` sets
it to a notebook's parameters, so a papermill grid gives one tagged run per grid point) and, as
artifacts, the model archive ``wts.h5.zip`` and ``history.csv``. The archive stays the one
persistence contract: MLflow only carries it, and `local_model` downloads ``runs:/RUN_ID/wts.h5.zip``
through MLflow's artifact API so that `ptycholib.archive.load_model` verifies it like any file.

The tracking store is ``MLFLOW_TRACKING_URI`` when set, else a file store ``mlruns/`` in the run's
log folder (`tracking_uri`). MLflow is imported only here and only when used; it is optional
(``pip install ptycholib[mlflow]``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import numbers
import os
import tempfile
import time
from pathlib import Path

from ptycholib import distributed

__all__ = [
    "EXPERIMENT_NAME",
    "RUN_TAGS_ENV",
    "HISTORY_COLUMNS",
    "MlflowRun",
    "write_history",
    "tracking_uri",
    "run_tags",
    "run_tags_env",
    "start_run",
    "log_files",
    "is_run_uri",
    "local_model",
]

EXPERIMENT_NAME = "ptycholib"
"""The MLflow experiment every training run goes to."""

RUN_TAGS_ENV = "PTYCHOLIB_RUN_TAGS"
"""Environment variable with a JSON object of tags for the MLflow runs started in this process."""

HISTORY_COLUMNS = {
    "epoch": "epoch number, from 0",
    "stage": "stage of the multi-stage schedule (TrainingConfig.stages), from 0",
    "learning_rate": "learning rate of the epoch's first optimiser step",
    "physics_weight": "physics weight p the epoch's loss used",
    "loss": "the optimised objective, mean over the epoch's training batches (Poisson NLL in count units "
            "for model_type='pinn', so it carries a data-dependent constant)",
    "val_loss": "the same on the validation groups (NaN without them)",
    "deviance": "Poisson deviance per pixel of the training batches (ptycholib.metrics.poisson_deviance): "
                "0 for a perfect fit, about 1 at the noise floor (NaN for model_type='supervised')",
    "val_deviance": "the same on the validation groups",
    "amplitude_mae": "mean |predicted - measured| diffraction amplitude (sqrt counts) of the training batches "
                     "(NaN for model_type='supervised')",
    "val_amplitude_mae": "the same on the validation groups",
    "best_epoch": "epoch of the lowest monitored loss so far (val_loss, or loss without validation groups)",
}
"""The columns of ``history.csv`` (the keys of every record of the training history), in order.

The training values are means over the epoch's batches while the weights change (like the loss);
the validation values are computed after the epoch's last step.
"""


# --------------------------------------------------------------------------------------------------
# history.csv


def write_history(path, history):
    """Write per-epoch training records as CSV, one column per key seen in any record; nothing if empty.

    Parameters
    ----------
    path : str or Path
        Destination, e.g. ``OUT/history.csv``.
    history : list of dict
        Records of `ptycholib.workflow.train_model` (columns: `HISTORY_COLUMNS`).

    Returns
    -------
    Path or None
        The file written, None when ``history`` is empty.
    """
    if not history:
        return None
    names = list(dict.fromkeys(key for record in history for key in record))
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)
    return path


# --------------------------------------------------------------------------------------------------
# where runs go, and their tags


def tracking_uri(log_dir=None):
    """Return the MLflow tracking URI: ``MLFLOW_TRACKING_URI`` if set, else a file store ``{log_dir}/mlruns``.

    Parameters
    ----------
    log_dir : str or Path, optional
        The training run's log folder; default: the current folder.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return (Path(log_dir or ".").resolve() / "mlruns").as_uri()


def run_tags():
    """Return the tags in ``PTYCHOLIB_RUN_TAGS`` (a JSON object; values become strings), ``{}`` when unset.

    Examples
    --------
    >>> with run_tags_env({"nphotons": 1e4, "notebook": "03_training"}):
    ...     run_tags()
    {'nphotons': '10000.0', 'notebook': '03_training'}
    """
    text = os.environ.get(RUN_TAGS_ENV, "").strip()
    if not text:
        return {}
    try:
        tags = json.loads(text)
    except json.JSONDecodeError:
        tags = None
    if not isinstance(tags, dict):
        raise ValueError(f'{RUN_TAGS_ENV} must be a JSON object of tags, e.g. {{"nphotons": "1e4"}}; got {text[:80]!r}.')
    return {str(key): str(value) for key, value in tags.items()}


@contextlib.contextmanager
def run_tags_env(tags):
    """Set ``PTYCHOLIB_RUN_TAGS`` to ``tags`` (a dict) while the context lasts; child processes inherit it.

    `ptycholib.notebooks.run_notebook` wraps a papermill run in it, so that the kernel's training
    runs carry the notebook's parameters.
    """
    saved = os.environ.get(RUN_TAGS_ENV)
    os.environ[RUN_TAGS_ENV] = json.dumps({str(k): str(v) for k, v in tags.items()})
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(RUN_TAGS_ENV, None)
        else:
            os.environ[RUN_TAGS_ENV] = saved


def _mlflow():
    try:
        import mlflow
    except ImportError as error:
        raise ValueError(
            "logger='mlflow' and runs:/ models need MLflow, which is not installed; `pip install ptycholib[mlflow]` "
            "or set logger='csv'."
        ) from error
    return mlflow


def _client(uri):
    mlflow = _mlflow()
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 keeps its plain-file store only on request; it needs no database package.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return mlflow.MlflowClient(uri)


def _experiment_id(client):
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(EXPERIMENT_NAME)
    except Exception:  # noqa: BLE001 - another process created it meanwhile (a parallel grid)
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            raise
        return experiment.experiment_id


# --------------------------------------------------------------------------------------------------
# runs


@dataclasses.dataclass
class MlflowRun:
    """An open MLflow run of `start_run`: where the backends send each epoch's metrics.

    Attributes
    ----------
    run_id : str
    tracking_uri : str
    client : mlflow.MlflowClient
    """

    run_id: str
    tracking_uri: str
    client: object

    def log_metrics(self, values, step=None):
        """Log the numeric entries of ``values`` (a record or Keras logs) at ``step``; others are skipped."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [
            Metric(str(key), float(value), stamp, int(step or 0))
            for key, value in values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_files(self, paths):
        """Upload files as artifacts at the run's root (a file of the same name is replaced)."""
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def log_trained_model(self, model_archive, history):
        """Upload ``wts.h5.zip`` (`ptycholib.archive.save_model` of ``model_archive``) and ``history.csv``."""
        from ptycholib import archive

        with tempfile.TemporaryDirectory(prefix="ptycholib-mlflow-") as folder:
            paths = [archive.save_model(Path(folder) / archive.DEFAULT_NAME, model_archive)]
            written = write_history(Path(folder) / "history.csv", history)
            self.log_files(paths + ([written] if written else []))


def _parameters(model_config, training_config):
    values = {f"model.{k}": v for k, v in dataclasses.asdict(model_config).items()}
    values.update({f"training.{k}": v for k, v in dataclasses.asdict(training_config).items()})
    return {key: str(value)[:250] for key, value in values.items()}  # 250: every MLflow server's limit


@contextlib.contextmanager
def start_run(model_config, training_config, log_dir=None):
    """Open an MLflow run for one training; yield its `MlflowRun` (None in non-zero ranks).

    The run goes to experiment ``ptycholib`` in the store `tracking_uri` (``log_dir``), is tagged
    with `run_tags` and gets both configs as parameters (``model.*``, ``training.*``). It ends
    ``FINISHED``, or ``FAILED`` when the context raises.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    training_config : ptycholib.config.TrainingConfig
    log_dir : str or Path, optional
        Where the file store goes unless ``MLFLOW_TRACKING_URI`` is set.
    """
    if not distributed.is_primary_process():  # other ranks of a multi-process run log nothing
        yield None
        return
    from mlflow.entities import Param

    tags = run_tags()
    uri = tracking_uri(log_dir)
    client = _client(uri)
    run = client.create_run(_experiment_id(client), tags=tags, run_name=tags.get("mlflow.runName"))
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in _parameters(model_config, training_config).items()])
    try:
        yield MlflowRun(run_id=run_id, tracking_uri=uri, client=client)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_files(run_id, paths, *, log_dir=None):
    """Upload files as artifacts of the run ``run_id`` in the store `tracking_uri` (``log_dir``).

    The CLI and the ptychodus adapter call it after saving, so the run holds exactly the files on
    disk (a fine-tuned model's archive records its parent only after `ptycholib.workflow.train_model`).
    """
    uri = tracking_uri(log_dir)
    MlflowRun(run_id=run_id, tracking_uri=uri, client=_client(uri)).log_files(paths)


# --------------------------------------------------------------------------------------------------
# models from runs


def is_run_uri(model):
    """True when ``model`` names an MLflow run artifact (``runs:/RUN_ID/path``) rather than a file.

    Examples
    --------
    >>> is_run_uri("runs:/0123abcd/wts.h5.zip"), is_run_uri("out/wts.h5.zip")
    (True, False)
    """
    return isinstance(model, str) and model.startswith("runs:/")


@contextlib.contextmanager
def local_model(model, *, tracking_uri=None):
    """Yield a local path for ``model``: a path as given, or ``runs:/RUN_ID/wts.h5.zip`` downloaded.

    A run URI is downloaded through MLflow's artifact API into a temporary folder that lives as
    long as the context; load it there with `ptycholib.archive.load_model`, which verifies it like
    any archive. ``runs:/RUN_ID`` alone downloads the run's artifacts, and the folder holds
    ``wts.h5.zip``.

    Parameters
    ----------
    model : str or Path
    tracking_uri : str, optional
        The store to ask; default ``MLFLOW_TRACKING_URI``, else ``./mlruns``.

    Raises
    ------
    ValueError
        One line when the run or the artifact does not exist or the store cannot be reached.
    """
    if not is_run_uri(model):
        yield model
        return
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path("mlruns").resolve().as_uri())
    _client(uri)  # the file-store opt-in, and MLflow's error for a bad URI
    saved = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with tempfile.TemporaryDirectory(prefix="ptycholib-model-") as folder:
            artifact = f"{model}/" if model.count("/") == 1 and len(model) > len("runs:/") else model  # the run root
            try:
                path = mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=folder, tracking_uri=uri)
            except (MlflowException, OSError) as error:
                reason = " ".join(str(error).split())[:300]
                raise ValueError(f"cannot download {model} from the MLflow store {uri}: {reason}") from None
            yield Path(path)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved

