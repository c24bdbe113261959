"""In a notebook a run shows as its metrics table beside its loss curves (ember.rundir.notebook)."""

import torch
from torch import nn

import ember


def test_fit_result_and_loaded_run_render_a_table_and_curves(tmp_path):
    x = torch.randn(200, 4)
    y = (x[:, 0] > 0).long()
    result = ember.fit(
        nn.Linear(4, 2),
        (x, y),
        val=(x[:50], y[:50]),
        max_epochs=3,
        progress="none",
        log_every_n_steps=1,
        run={"root": str(tmp_path)},
    )
    html = result._repr_html_()
    assert "<table>" in html and "val/" not in html and ">accuracy<" in html and "<svg" in html and "polyline" in html
    cfg = ember.api.compose(
        ["data.num_samples=300", "trainer.max_epochs=1", "trainer.progress=none", f"run.root={tmp_path / 'cli'}"]
    )
    run = ember.api.train(cfg).run_dir
    loaded = ember.load_run(run)
    model, saved, spec = loaded  # still the (model, config, spec) tuple
    assert isinstance(model, nn.Module) and spec.num_classes == 10 and loaded.path == run
    html = loaded._repr_html_()
    assert "cnn1d on mnist1d" in html and ">accuracy<" in html and "<svg" in html
