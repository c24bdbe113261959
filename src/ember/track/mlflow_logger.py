"""`track=[mlflow]`: the run in MLflow, as the experiment `run.name` (or `<data>-<model>`).

Where: `run.mlflow_uri` (a tracking server URL, or any store URI), else MLFLOW_TRACKING_URI, else a
SQLite store beside the runs, `<run.root>/mlflow.db`, with artifacts in `<run.root>/mlartifacts`;
browse it with `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`.

Logged: the resolved config as parameters, every record as metrics `split/name` at its optimizer
step, the final metrics and status, and config.yaml, spec.json, summary.json, report.html and the
model summary as artifacts. A server is asked once, with a short timeout, before the run starts,
and metrics go to it asynchronously, so a slow or lost server never holds up training.
"""

import logging
import os
import time
import urllib.request
from pathlib import Path

from ember.track import TrackContext, flatten, metric_items

STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "preempted": "KILLED"}
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def tracking_uri(ctx: TrackContext) -> str:
    uri = ctx.cfg.run.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return str(uri)
    return f"sqlite:///{(Path(ctx.cfg.run.root).resolve() / 'mlflow.db').as_posix()}"


def _check_server(uri: str, timeout: float = 3.0) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read(64)
    except Exception as e:  # URLError, timeout, connection refused
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"the MLflow server {uri} does not answer ({reason})") from None


class MlflowLogger:
    name = "mlflow"

    def __init__(self, ctx: TrackContext):
        import mlflow  # noqa: F401  (ImportError: the caller says which extra to install)
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(ctx)
        self.remote = uri.startswith(("http://", "https://"))
        if self.remote:
            _check_server(uri)
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
        self.client = MlflowClient(tracking_uri=uri)
        experiment_id = self._experiment(ctx, uri)
        previous = ctx.state().get("mlflow", {})
        if ctx.kept is not None and previous.get("run_id") and previous.get("uri") == uri:
            # The interrupted attempt logged steps after the checkpoint that MLflow cannot forget:
            # a new MLflow run gets the kept history, the old one goes to MLflow's trash.
            try:
                self.client.delete_run(previous["run_id"])
            except Exception:
                pass
        tags = {"ember.run_dir": str(ctx.path.resolve()), "ember.experiment": ctx.experiment}
        if ctx.kept is not None:
            tags["ember.resumed"] = "true"
        run = self.client.create_run(experiment_id, run_name=ctx.path.name, tags=tags)
        self.run_id = run.info.run_id
        ctx.save_state("mlflow", {"uri": uri, "run_id": self.run_id, "experiment_id": experiment_id})
        self._log_params(flatten(ctx.config_dict()))
        for record in ctx.kept or []:
            self.log(record, synchronous=True)

    def _experiment(self, ctx: TrackContext, uri: str) -> str:
        existing = self.client.get_experiment_by_name(ctx.experiment)
        if existing is not None:
            return existing.experiment_id
        artifacts = None
        if (
            uri.startswith("sqlite:///")
            and not ctx.cfg.run.get("mlflow_uri")
            and not os.environ.get("MLFLOW_TRACKING_URI")
        ):
            artifacts = (Path(ctx.cfg.run.root).resolve() / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(ctx.experiment, artifact_location=artifacts)
        except Exception:  # created meanwhile by another process
            existing = self.client.get_experiment_by_name(ctx.experiment)
            if existing is None:
                raise
            return existing.experiment_id

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit of params per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, record: dict, synchronous: bool | None = None) -> None:
        self._log_metrics(metric_items(record), record["step"], synchronous)

    def _log_metrics(self, values: dict, step: int, synchronous: bool | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step)) for k, v in values.items()]
        if synchronous is None:
            synchronous = not self.remote
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH], synchronous=synchronous)

    def finish(self, summary: dict, artifacts: dict) -> None:
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if self.remote and hasattr(store, "flush_async_logging"):
            store.flush_async_logging()  # the metrics still queued for the server
        final = {k: float(v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))}
        if final:
            self._log_metrics(
                {k: v for k, v in final.items() if k.startswith("test/")}, summary.get("steps") or 0, True
            )
        for key in ("status", "best_epoch", "monitor", "stop_reason", "device", "params"):
            if summary.get(key) is not None:
                self.client.set_tag(self.run_id, f"ember.{key}", str(summary[key]))
        for name, item in artifacts.items():
            if isinstance(item, Path):
                if item.is_file():
                    self.client.log_artifact(self.run_id, str(item))
            else:
                self.client.log_text(self.run_id, str(item), name)
        self.client.set_terminated(self.run_id, STATUS.get(summary.get("status"), "FAILED"))
        self.run_id = None

    def close(self) -> None:
        if getattr(self, "run_id", None):  # closed without finish: the run did not end well
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id = None
