"""ember predict: the run's preprocessing on new files, from a run directory or an exported model."""

import csv
import json

import numpy as np
import pytest
import torch

from ember.cli import main
from ember.data import build_data
from ember.deploy.common import held_out_batch
from ember.deploy.predict import predict
from ember.errors import DataError
from ember.rundir.loading import load_run


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_npy_from_run_and_from_onnx_export_agree(cnn_run, onnx_export, tmp_path):
    _, cfg, spec = load_run(cnn_run)
    x, _ = held_out_batch(cfg, spec, 20)
    np.save(tmp_path / "x.npy", x.numpy())
    eager = predict(cnn_run, tmp_path / "x.npy", output=tmp_path / "eager.csv", batch_size=8, echo=lambda s: None)
    onnx = predict(onnx_export.path, tmp_path / "x.npy", output=tmp_path / "onnx.npz", echo=lambda s: None)
    assert eager.values.shape == (20, 10) and np.allclose(eager.values.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(onnx.values, eager.values, atol=1e-5)
    assert onnx.labels == eager.labels
    rows = _rows(tmp_path / "eager.csv")
    assert list(rows[0]) == ["id", "label"] + [f"prob_{c}" for c in spec.class_names] and len(rows) == 20
    saved = np.load(tmp_path / "onnx.npz")
    assert saved["probabilities"].shape == (20, 10) and list(saved["labels"]) == eager.labels


def test_flattened_rows_in_a_headerless_csv(cnn_run, tmp_path):
    _, cfg, spec = load_run(cnn_run)
    x, _ = held_out_batch(cfg, spec, 4)
    np.save(tmp_path / "x.npy", x.numpy())
    np.savetxt(tmp_path / "x.csv", x.reshape(4, 40).numpy(), delimiter=",")
    a = predict(cnn_run, tmp_path / "x.npy", output=tmp_path / "a.json", echo=lambda s: None)
    b = predict(cnn_run, tmp_path / "x.csv", output=tmp_path / "b.json", echo=lambda s: None)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert json.loads((tmp_path / "b.json").read_text())[0]["label"] == a.labels[0]


def test_a_wrong_shape_names_both_shapes(cnn_run, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 50), np.float32))
    with pytest.raises(
        DataError,
        match=(
            r"holds samples of shape \(50,\) .* but the model takes samples of shape \(1, 40\); "
            r"pass an array of shape \(N, 1, 40\) or \(N, 40\)"
        ),
    ):
        predict(cnn_run, tmp_path / "bad.npy")


def test_table_run_predicts_with_its_one_hot_encoding(tmp_path):
    """A CSV run with a text column: predicting its own file gives what the model gives on the
    training pipeline's encoded, standardized rows."""
    from ember.api import train
    from ember.config import compose

    rng = np.random.default_rng(0)
    n = 120
    site = rng.choice(["alps", "coast", "plain"], n)
    pressure = rng.normal(1000, 10, n)
    rain = ((pressure < 1000) | (site == "coast")).astype(int)
    path = tmp_path / "weather.csv"
    with open(path, "w") as f:
        f.write("pressure,site,rain\n" + "".join(f"{p:.3f},{s},{r}\n" for p, s, r in zip(pressure, site, rain)))
    cfg = compose(
        [
            "data=csv",
            f"data.path={path}",
            "data.target=rain",
            "model=mlp",
            "model.width=16",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            f"run.root={tmp_path / 'runs'}",
        ]
    )
    run_dir = train(cfg).run_dir

    new = tmp_path / "new.csv"
    new.write_text("site,pressure\ncoast,1010\nalps,990\n")  # columns in another order, no target
    preds = predict(run_dir, new, output=tmp_path / "p.csv", echo=lambda s: None)
    assert len(preds.ids) == 2 and preds.columns == ["prob_0", "prob_1"]

    mine = predict(run_dir, path, echo=lambda s: None)  # the training file, target column ignored
    model, cfg, _spec = load_run(run_dir)
    model.eval()
    splits = build_data(cfg.data)
    rows = json.loads((run_dir / "splits.json").read_text())["test"]
    with torch.no_grad():
        want = torch.softmax(model(splits.test.x), 1).numpy()
    np.testing.assert_allclose(mine.values[rows], want, atol=1e-5)

    (tmp_path / "missing.csv").write_text("pressure\n1000\n")
    with pytest.raises(
        DataError, match=r"lacks feature column\(s\) 'site'; the model was trained on columns: pressure, site"
    ):
        predict(run_dir, tmp_path / "missing.csv")

    # The run is self-contained: the training file edited (a new site first in sorted order) or
    # gone changes nothing, since the one-hot categories are kept in spec.json.
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["encoding"] == {"columns": ["pressure", "site"], "categories": {"site": ["alps", "coast", "plain"]}}
    path.write_text("pressure,site,rain\n1000,aaa,1\n" + path.read_text().split("\n", 1)[1])
    np.testing.assert_array_equal(predict(run_dir, new, echo=lambda s: None).values, preds.values)
    path.unlink()
    np.testing.assert_array_equal(predict(run_dir, new, echo=lambda s: None).values, preds.values)


def test_a_time_series_run_predicts_every_window_of_a_table_in_time_order(tmp_path):
    """A run on windows of a monthly series (data.window=3, data.lead=2): a table of its columns,
    rows in any order, gives one forecast per window, named by the window's last month and equal
    to the model on the training pipeline's windows."""
    import pandas as pd

    from ember.api import train
    from ember.config import compose

    months = pd.date_range("1870-01-01", periods=60, freq="MS")
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"date": months.strftime("%Y-%m-%d"), "soi": rng.normal(size=60), "nino34": np.sin(np.arange(60) / 4)}
    )
    path = tmp_path / "enso.csv"
    table.sample(frac=1, random_state=0).to_csv(path, index=False)
    args = [
        "data=csv",
        f"data.path={path}",
        "data.target=nino34",
        "data.time_column=date",
        "data.window=3",
        "data.lead=2",
    ]
    run_dir = train(
        compose(
            [
                *args,
                "model=mlp",
                "trainer.max_epochs=1",
                "trainer.progress=none",
                "track=[]",
                f"run.root={tmp_path / 'runs'}",
            ]
        )
    ).run_dir
    preds = predict(run_dir, path, echo=lambda s: None)
    assert preds.ids == [m.strftime("%Y-%m-%d") for m in months[2:]] and preds.values.shape == (58, 1)
    model, cfg, _ = load_run(run_dir)
    model.eval()
    splits = build_data(cfg.data)
    with torch.no_grad():
        want = model(splits.test.x).numpy() * splits.spec.target_std[0] + splits.spec.target_mean[0]
    np.testing.assert_allclose(preds.values[splits.indices["test"]], want, atol=1e-5)
    table.head(2).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"short.csv has 2 row\(s\), fewer than one window of 3"):
        predict(run_dir, tmp_path / "short.csv")
    pd.concat([table.head(4), table.head(1)]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(
        DataError, match=r"holds the time 1870-01-01 00:00:00 twice \(again in data row 5 \(line 6 of a CSV\)\)"
    ):
        predict(run_dir, tmp_path / "twice.csv")


def test_image_folder(tmp_path):
    from PIL import Image

    from ember.api import train
    from ember.config import compose

    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((8, 8)) * 100 + 150 * k).astype(np.uint8)).save(
                tmp_path / "img" / name / f"{i}.png"
            )
    cfg = compose(
        [
            "data=imagefolder",
            f"data.root={tmp_path / 'img'}",
            "data.image_size=8",
            "data.channels=1",
            "data.val_fraction=0",
            "data.test_fraction=0.25",
            "model=mlp",
            "model.width=8",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            f"run.root={tmp_path / 'runs'}",
        ]
    )
    run_dir = train(cfg).run_dir
    preds = predict(run_dir, tmp_path / "img", output=tmp_path / "p.csv", echo=lambda s: None)
    assert preds.ids[0] == "dark/0.png" and len(preds.ids) == 12
    assert set(preds.labels) <= {"dark", "light"} and list(_rows(tmp_path / "p.csv")[0]) == [
        "id",
        "label",
        "prob_dark",
        "prob_light",
    ]
    single = predict(run_dir, tmp_path / "img" / "light" / "3.png", echo=lambda s: None)
    np.testing.assert_allclose(single.values[0], preds.values[preds.ids.index("light/3.png")], atol=1e-6)


def test_cli(cnn_run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((12, 1, 40), np.float32))
    assert main(["predict", f"run={cnn_run}", f"input={tmp_path / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    assert "12 predictions" in out and "2 more; write them all with output=predictions.csv" in out
    assert main(["predict", f"run={cnn_run}", f"input={tmp_path / 'nope.npy'}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: input={str(tmp_path / 'nope.npy')!r} does not exist")
    assert main(["predict", f"run={cnn_run}", f"input={tmp_path / 'x.npy'}", "output=p.xlsx"]) == 2
    assert "write predictions to a .csv, .npy, .npz, .json file" in capsys.readouterr().err
