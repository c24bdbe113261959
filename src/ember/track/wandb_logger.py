"""`track=[wandb]`: the run in Weights & Biases, project `run.wandb_project` (default "ember"),
grouped by experiment.

Offline unless an API key is set (WANDB_API_KEY, or `wandb login`): the run is written under
`<run>/wandb/` and `wandb sync <run>/wandb/offline-run-*` uploads it later, so a machine without
network (a compute node) never waits for one. WANDB_MODE, when set, wins. Online, W&B sends in the
background; starting gives up after 15 s and leaves a warning.

Logged: the resolved config, every record as `split/name` at its optimizer step, the final
metrics and status in the run summary, and config.yaml, spec.json, summary.json, report.html and
the model summary as files.
"""

import netrc
import os
import shutil
from pathlib import Path

from ember.track import TrackContext, metric_items

INIT_TIMEOUT_S = 15


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger:
    name = "wandb"

    def __init__(self, ctx: TrackContext):
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
        previous = ctx.state().get("wandb", {})
        if ctx.kept is not None and previous.get("id") and mode == "offline":
            # The interrupted attempt's steps after the checkpoint cannot be taken back: a new
            # offline run gets the kept history, and the old one is removed so a sync sends one.
            for old in (ctx.path / "wandb").glob(f"offline-run-*-{previous['id']}"):
                shutil.rmtree(old, ignore_errors=True)
        settings = wandb.Settings(
            init_timeout=INIT_TIMEOUT_S,
            console="off",
            silent=True,
            quiet=True,
            disable_git=True,
            disable_code=True,
            x_save_requirements=False,
        )
        self.run = wandb.init(
            mode=mode,
            dir=str(ctx.path),
            project=ctx.cfg.run.get("wandb_project") or "ember",
            group=ctx.experiment,
            name=ctx.path.name,
            config=ctx.config_dict(),
            tags=["resumed"] if ctx.kept is not None else None,
            settings=settings,
            reinit="create_new",
        )
        ctx.save_state("wandb", {"id": self.run.id, "mode": mode, "project": self.run.project})
        for record in ctx.kept or []:
            self.log(record)

    def log(self, record: dict) -> None:
        values = metric_items(record)
        if values:
            self.run.log({**values, "epoch": record.get("epoch")}, step=int(record["step"]))

    def finish(self, summary: dict, artifacts: dict) -> None:
        final = {k: v for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))}
        extra = {
            k: summary[k]
            for k in ("status", "best_epoch", "monitor", "epochs", "steps", "wall_time_s", "params")
            if summary.get(k) is not None
        }
        self.run.summary.update({**final, **extra})
        files_dir = Path(self.run.dir)
        for name, item in artifacts.items():
            if isinstance(item, Path):
                if item.is_file():
                    shutil.copyfile(item, files_dir / name)
            else:
                (files_dir / name).write_text(str(item))
            self.run.save(str(files_dir / name), base_path=str(files_dir), policy="now")
        run, self.run = self.run, None
        run.finish(exit_code=0 if summary.get("status") == "finished" else 1)

    def close(self) -> None:
        if getattr(self, "run", None) is not None:  # closed without finish: the run did not end well
            run, self.run = self.run, None
            run.finish(exit_code=1)
