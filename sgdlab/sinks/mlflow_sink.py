"""MLflow (``pip install 'sgdlab[mlflow]'``) through ``mlflow.tracking.MlflowClient``: one
MLflow run per sgdlab run (run name = the sgdlab run id, tag ``sgdlab.run_id``; a resumed
run continues the same MLflow run), in the experiment ``project`` (default: the run's
group, else ``sgdlab``).

The tracking URI is ``$MLFLOW_TRACKING_URI`` or MLflow's default (a local
``sqlite:///mlflow.db``) unless ``dest`` names one; a folder becomes
``sqlite:///<folder>/mlflow.db`` with artifacts in ``<folder>/artifacts``. The config is
logged as params (dotted keys), scalars as metrics at their steps, a probe's arrays as
``.npz`` artifacts ``arrays/<probe>/<step>.npz``, the end as the MLflow status
(finished: FINISHED; diverged, failed: FAILED) and tags ``sgdlab.status``,
``sgdlab.message``. MLflow stores ±inf as ±1.797e308 (the largest float64) and NaN as NaN.
MLflow keeps every value logged: after a resume, the steps a killed session logged past
the checkpoint hold two values (the last one is the resumed run's).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from sgdlab.sinks.base import Record, RunInfo, Sink
from sgdlab.store.index import flatten

BATCH = 1000  # metrics per log_batch call (MLflow's limit)
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}


class MLflowSink(Sink):
    def __init__(self, uri: str | None = None, project: str = "") -> None:
        self.uri, self.project = uri, project
        self.client = None
        self.run_id: str | None = None

    def start(self, run: RunInfo, step: int) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # no INFO lines on the trainer's stderr
            logging.getLogger(name).setLevel(logging.WARNING)

        self.client = client = MlflowClient(tracking_uri=self.uri)
        name = self.project or run.group or "sgdlab"
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            artifacts = None
            if self.uri and self.uri.startswith("sqlite:///"):
                artifacts = (Path(self.uri[len("sqlite:///"):]).absolute().parent
                             / "artifacts").as_uri()
            experiment_id = client.create_experiment(name, artifact_location=artifacts)
        found = client.search_runs([experiment_id], f"tags.`sgdlab.run_id` = '{run.id}'")
        if found:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            created = client.create_run(experiment_id, run_name=run.id, tags={
                "sgdlab.run_id": run.id, "sgdlab.group": run.group or ""})
            self.run_id = created.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in flatten(run.config).items()]
            for i in range(0, len(params), 100):
                client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, records: list[Record]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(name, float(value), stamp, int(step))
                   for step, _epoch, values in records for name, value in values.items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def log_arrays(self, name: str, step: int, arrays: dict[str, Any]) -> None:
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{int(step):09d}.npz"
            np.savez(path, **{str(k): np.asarray(v) for k, v in arrays.items()})
            self.client.log_artifact(self.run_id, str(path), f"arrays/{name}")

    def end(self, status: str, step: int, message: str | None = None) -> None:
        if self.run_id is None:  # start failed
            return
        self.client.set_tag(self.run_id, "sgdlab.status", status)
        if status == "diverged":
            self.client.set_tag(self.run_id, "sgdlab.diverged_step", str(step))
        if message:
            self.client.set_tag(self.run_id, "sgdlab.message", message[:5000])
        self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
