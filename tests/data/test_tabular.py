"""data=csv / data=parquet on small files the tests write."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from data_support import cli_error, cli_train, fit, run_dirs

from ember import load_data
from ember.errors import ConfigError, DataError
from ember.inspection.evaluation import evaluate_run
from ember.track.console import Console


def _table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    site = rng.choice(["north", "south", "east"], size=n)
    label = np.where(a + (site == "north") > 0.3, "rain", "dry")
    return pd.DataFrame({"a": a, "b": b, "site": site, "label": label, "amount": 2 * a - b})


@pytest.fixture
def weather(tmp_path):
    path = tmp_path / "weather.csv"
    _table().to_csv(path, index=False)
    return path


def test_csv_classification_with_text_labels_and_a_categorical_feature(weather):
    splits = load_data("csv", path=str(weather), target="label", features=["a", "b", "site"])
    spec = splits.spec
    assert spec.task == "classification" and spec.num_classes == 2 and spec.class_names == ["dry", "rain"]
    # a, b and the one-hot columns of the three sites.
    assert spec.input_shape == (5,) and splits.train.x.dtype == torch.float32
    # 200 rows: 20% test, 10% validation, the rest train; the indices are file rows, disjoint.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (140, 20, 40)
    rows = [set(splits.indices[k]) for k in ("train", "val", "test")]
    assert set.union(*rows) == set(range(200)) and sum(map(len, rows)) == 200
    # Stratified: each split has the file's share of rain.
    share = (_table()["label"] == "rain").mean()
    for data in (splits.train, splits.val, splits.test):
        assert abs(data.y.float().mean().item() - share) < 0.06


def test_csv_regression_on_several_targets_and_chosen_features(weather):
    splits = load_data(
        "csv",
        path=str(weather),
        target=["amount", "b"],
        features=["a"],
        normalize=False,
        normalize_target=False,
        val_fraction=0,
    )
    assert splits.spec.task == "regression" and splits.spec.target_shape == (2,) and splits.spec.input_shape == (1,)
    x, y = splits.train.x, splits.train.y
    assert torch.allclose(y[:, 0], 2 * x[:, 0] - y[:, 1], atol=1e-5)
    assert splits.val is None and len(splits.test) == 40


def test_integer_labels_and_data_task(tmp_path):
    df = pd.DataFrame({"x": np.arange(30.0), "y": np.arange(30) % 3})
    df.to_csv(tmp_path / "t.csv", index=False)
    assert load_data("csv", path=str(tmp_path / "t.csv"), target="y").spec.num_classes == 3
    reg = load_data("csv", path=str(tmp_path / "t.csv"), target="y", task="regression")
    assert reg.spec.task == "regression" and reg.train.y.dtype == torch.float32
    df.assign(y=df.y * 2).to_csv(tmp_path / "gaps.csv", index=False)  # ids 0, 2, 4
    with pytest.raises(
        DataError,
        match=r"class ids are not contiguous: 3 classes between 0 and 4, none with id 1, 3; .*data.num_classes=5",
    ):
        load_data("csv", path=str(tmp_path / "gaps.csv"), target="y")
    assert load_data("csv", path=str(tmp_path / "gaps.csv"), target="y", num_classes=5).spec.num_classes == 5
    df.assign(y=df.y - 1).to_csv(tmp_path / "neg.csv", index=False)
    with pytest.raises(DataError, match="label -1 is out of range"):
        load_data("csv", path=str(tmp_path / "neg.csv"), target="y")


def test_parquet_and_a_separate_test_file(tmp_path):
    _table(seed=0).to_parquet(tmp_path / "train.parquet")
    _table(n=50, seed=1).to_parquet(tmp_path / "test.parquet")
    splits = load_data(
        "parquet", path=str(tmp_path / "train.parquet"), target="label", test_path=str(tmp_path / "test.parquet")
    )
    assert len(splits.test) == 50 and (len(splits.train), len(splits.val)) == (180, 20)
    assert splits.train.x.shape[1] == splits.test.x.shape[1] == 6  # a, b, amount, 3 sites


def test_nan_is_an_error_that_says_where_or_rows_are_dropped(tmp_path, weather):
    df = _table()
    df.loc[[5, 17], "b"] = np.nan
    df.loc[9, "a"] = np.inf
    df.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(
        DataError,
        match=(
            r"holes.csv has 3 missing or infinite values \(a: 1, b: 2\); the first is in column 'b' of data row 6 "
            r"\(line 7 of a CSV\); .*data.nan=drop"
        ),
    ):
        load_data("csv", path=str(tmp_path / "holes.csv"), target="label")
    splits = load_data("csv", path=str(tmp_path / "holes.csv"), target="label", nan="drop")
    kept = sorted(r for k in ("train", "val", "test") for r in splits.indices[k])
    assert kept == sorted(set(range(200)) - {5, 9, 17})  # file rows, not positions after dropping
    with pytest.raises(ConfigError, match="data.nan='keep' is not a valid choice; choose one of: error, drop"):
        load_data("csv", path=str(weather), target="label", nan="keep")


def test_bad_columns_files_and_keys(tmp_path, weather):
    with pytest.raises(
        DataError,
        match=(
            r"no target column 'lable' in .*weather.csv; did you mean 'label'\? set data.target to columns of the "
            r"file: a, b, site, label, amount"
        ),
    ):
        load_data("csv", path=str(weather), target="lable")
    with pytest.raises(DataError, match="no feature column 'c'"):
        load_data("csv", path=str(weather), target="label", features=["a", "c"])
    with pytest.raises(
        ConfigError, match="data=csv needs data.target=...: the column.* columns of .*: a, b, site, label, amount"
    ):
        load_data("csv", path=str(weather))
    with pytest.raises(DataError, match=r"data.path='nope.csv' does not exist"):
        load_data("csv", path="nope.csv", target="y")
    with pytest.raises(ConfigError, match="data=csv needs data.path"):
        load_data("csv", target="y")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00\x9c")
    with pytest.raises(DataError, match="cannot read .*binary.csv as csv"):
        load_data("csv", path=str(tmp_path / "binary.csv"), target="y")
    _table().to_parquet(tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DataError, match="cannot read .*t.parquet as parquet"):
        load_data("parquet", path=str(tmp_path / "t.parquet"), target="label")
    (tmp_path / "empty.csv").write_text("a,b,label\n")
    with pytest.raises(DataError, match="empty.csv holds no data rows"):
        load_data("csv", path=str(tmp_path / "empty.csv"), target="label")


def test_training_on_a_csv_learns(tmp_path, weather):
    result = fit(
        tmp_path,
        "data=csv",
        f"data.path={weather}",
        "data.target=label",
        "model=mlp",
        "trainer.max_epochs=15",
        "optim.lr=0.01",
        "sched=none",
    )
    assert result.metrics["test/accuracy"] > 0.85
    # The run records its held-out rows, and a later evaluation rebuilds exactly that test set.
    recorded = json.loads((result.run_dir / "splits.json").read_text())
    assert recorded == load_data("csv", path=str(weather), target="label").indices
    metrics = evaluate_run(result.run_dir, console=Console("none"))
    assert metrics["test/accuracy"] == pytest.approx(result.metrics["test/accuracy"])


def test_cli_trains_on_a_csv_and_rejects_a_bad_column(ember_cli, tmp_path, weather):
    r = cli_train(
        ember_cli, "data=csv", f"data.path={weather}", "data.target=amount", "model=mlp", "trainer.max_epochs=1"
    )
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(tmp_path)
    assert set(json.loads((run / "splits.json").read_text())) == {"train", "val", "test"}
    assert json.loads((run / "spec.json").read_text())["task"] == "regression"
    import shutil

    shutil.rmtree(tmp_path / "runs")
    cli_error(
        ember_cli,
        tmp_path,
        "data=csv",
        f"data.path={weather}",
        "data.target=amout",
        "model=mlp",
        match="did you mean 'amount'?",
    )


def _spoiled(tmp_path, column: str, values: list, name="spoiled.csv"):
    """The weather table with `column` replaced by `values` (one per row), written as CSV."""
    df = _table()
    df[column] = values
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _stray(n=200, at=57, word="12,5"):
    values = [f"{v:.3f}" for v in np.random.default_rng(1).normal(size=n)]
    values[at] = word
    return values


# column, its values, what the error must say
TEXT_THAT_IS_NO_CATEGORY = {
    "stray_text_in_a_feature": (
        "b",
        _stray(),
        ["column 'b'", "'12,5'", "data row 58 (line 59 of a CSV)", "fix or empty"],
    ),
    "stray_text_in_the_target": ("amount", _stray(at=3, word="error"), ["column 'amount'", "'error'", "data row 4 "]),
    "dates": (
        "b",
        [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(200)],
        ["column 'b'", "dates such as '2024-01-01'", "data.categorical=[b]"],
    ),
    "ids": (
        "site",
        [f"station-{i}" for i in range(200)],
        ["column 'site'", "200 distinct text values in 200 rows", "data.features"],
    ),
}


@pytest.mark.parametrize("case", TEXT_THAT_IS_NO_CATEGORY)
def test_text_that_is_no_category_is_an_error_naming_column_row_and_value(tmp_path, case):
    column, values, expected = TEXT_THAT_IS_NO_CATEGORY[case]
    path = _spoiled(tmp_path, column, values)
    target = "amount" if column == "amount" else "label"
    with pytest.raises(DataError) as e:
        load_data("csv", path=str(path), target=target)
    for part in expected:
        assert part in str(e.value), str(e.value)


def test_a_named_categorical_column_is_one_hot_and_a_true_category_passes(tmp_path):
    ids = [f"station-{i % 40}" for i in range(200)]  # 40 values in 200 rows: a category, kept
    assert load_data("csv", path=str(_spoiled(tmp_path, "site", ids)), target="label").spec.input_shape == (3 + 40,)
    many = [f"station-{i}" for i in range(200)]
    splits = load_data("csv", path=str(_spoiled(tmp_path, "site", many)), target="label", categorical=["site"])
    assert splits.spec.input_shape == (3 + 200,)
    with pytest.raises(DataError, match="no categorical column 'sight'"):
        load_data("csv", path=str(_spoiled(tmp_path, "site", many)), target="label", categorical=["sight"])


def test_stray_text_in_the_test_file_is_an_error_naming_its_row(tmp_path, weather):
    test = _spoiled(tmp_path, "b", _stray(at=9, word="?"), name="test.csv")
    with pytest.raises(DataError, match=r"column 'b' of .*test.csv holds the text '\?' in data row 10 "):
        load_data("csv", path=str(weather), target="label", test_path=str(test))


def test_cli_stray_text_is_one_line(ember_cli, tmp_path):
    # A DataError is one line, exit 2, whatever the defect: a number beyond float32 the same way.
    path = _spoiled(tmp_path, "b", _stray())
    cli_error(
        ember_cli, tmp_path, "data=csv", f"data.path={path}", "data.target=label", "model=mlp", match="data row 58"
    )


def test_one_class_and_the_target_as_a_feature_are_errors_and_numeric_names_work(tmp_path, weather):
    df = _table()
    df.assign(label="rain").to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(
        DataError, match=r"column 'label' of .*one.csv: every sample has the label 'rain', one class only"
    ):
        load_data("csv", path=str(tmp_path / "one.csv"), target="label", features=["a", "b"])
    with pytest.raises(
        DataError,
        match=(
            r"column 'label' of .*weather.csv is both the target and a feature, so the model would be shown the answer"
        ),
    ):
        load_data("csv", path=str(weather), target="label", features=["a", "label"])
    # Columns named by numbers: Hydra reads data.target=3 as the integer 3.
    df[["a", "b", "amount"]].set_axis(["1", "2", "3"], axis=1).to_csv(tmp_path / "numbered.csv", index=False)
    splits = load_data("csv", path=str(tmp_path / "numbered.csv"), target=3, features=[1, 2])
    assert splits.spec.task == "regression" and splits.spec.target_names == ["3"]


# Time series from a table (data.time_column, data.window, data.lead) and numbers float32 cannot hold.

MONTHS = pd.date_range("1870-01-01", periods=60, freq="MS")
RAW = {"normalize": False, "normalize_target": False}


def _series(n=60):
    """A monthly series whose values say their row in time: nino34 = row, soi = 100 + row."""
    return pd.DataFrame(
        {"date": MONTHS[:n].strftime("%Y-%m-%d"), "soi": 100.0 + np.arange(n), "nino34": np.arange(n, dtype=float)}
    )


@pytest.fixture
def enso(tmp_path):
    """The series as a CSV whose rows are not in time order."""
    path = tmp_path / "enso.csv"
    _series().sample(frac=1, random_state=0).to_csv(path, index=False)
    return path


def _spans(splits, window=3, lead=2):
    """The rows each split's samples read, inputs and targets (sample i: rows i..i+window-1, i+window-1+lead)."""
    return {
        k: {r for i in splits.indices[k] for r in [*range(i, i + window), i + window - 1 + lead]}
        for k in ("train", "val", "test")
    }


def test_a_time_series_table_gives_windows_of_the_past_and_the_target_lead_steps_later(enso):
    s = load_data("csv", path=str(enso), target="nino34", time_column="date", window=3, lead=2, **RAW)
    spec = s.spec
    assert spec.input_names == ["soi[t-2]", "soi[t-1]", "soi[t-0]", "nino34[t-2]", "nino34[t-1]", "nino34[t-0]"]
    assert spec.lead == 2 and spec.identity_channels == [5] and s.gap == 5 and spec.encoding["window"] == 3
    for name in ("train", "val", "test"):
        data, first = getattr(s, name), np.array(s.indices[name])  # a sample's number: its first row in time
        assert np.array_equal(
            data.x.numpy(), np.stack([100 + first, 101 + first, 102 + first, first, first + 1, first + 2], axis=1)
        )
        assert np.array_equal(data.y[:, 0].numpy(), first + 4)
        assert np.array_equal(s.times[name].to_numpy(), MONTHS[first + 4].to_numpy())  # the target's time
        # Persistence, the target's last observed value, is the identity channel.
        assert torch.equal(data.x[:, spec.identity_channels], data.y - 2)
    # 56 windows in time: train, then validation, then test, and no row read by two splits.
    assert [len(s.indices[k]) for k in ("train", "val", "test")] == [29, 6, 11]
    spans = _spans(s)
    assert (
        not (spans["train"] & spans["val"])
        and not (spans["val"] & spans["test"])
        and not (spans["train"] & spans["test"])
    )
    assert s.times["train"].max() < s.times["val"].min() and s.times["val"].max() < s.times["test"].min()
    assert s.record()["periods"]["test"] == ["1874-02-01", "1874-12-01"] and s.notes[0].startswith(
        "split in time: train 1870-05-01..1872-09-01 (29), gap 5"
    )


def test_persistence_in_physical_units_from_standardized_windows(enso):
    from ember.scoring.units import physical_targets, raw_inputs

    s = load_data("csv", path=str(enso), target="nino34", time_column="date", window=3, lead=2)
    last = raw_inputs(s.test.x.double(), s.spec)[:, s.spec.identity_channels]
    assert torch.allclose(last, physical_targets(s.test.y.double(), s.spec) - 2, atol=1e-4)


def test_years_as_numbers_periods_and_a_test_file(tmp_path):
    years = np.arange(1950, 2000)
    frame = pd.DataFrame({"year": years, "x": np.sin(years), "y": np.cos(years)})
    frame[:40].to_csv(tmp_path / "train.csv", index=False)
    frame[40:].to_csv(tmp_path / "test.csv", index=False)
    s = load_data(
        "csv",
        path=str(tmp_path / "train.csv"),
        target="y",
        time_column="year",
        window=2,
        lead=1,
        test_path=str(tmp_path / "test.csv"),
        val_period="1980:1989",
    )
    assert list(s.times["test"].year) == list(range(1992, 2000)) and list(s.times["val"].year) == list(
        range(1980, 1990)
    )
    assert list(s.times["train"].year) == list(range(1952, 1977))  # 3 samples left out before validation
    assert s.record()["periods"] == {
        "train": ["1952-01-01", "1976-01-01"],
        "val": ["1980-01-01", "1989-01-01"],
        "test": ["1992-01-01", "1999-01-01"],
    }
    from ember.data.series import parse_times

    assert parse_times(pd.Series([2001.0, 2001.5]), "c", str)[1] == pd.Timestamp("2001-07-02 12:00")


def test_a_missing_value_drops_the_windows_that_read_its_row(tmp_path):
    df = _series()
    df.loc[20, "soi"] = np.nan
    df.to_csv(tmp_path / "holes.csv", index=False)
    s = load_data(
        "csv",
        path=str(tmp_path / "holes.csv"),
        target="nino34",
        time_column="date",
        window=3,
        lead=2,
        nan="drop",
        val_fraction=0,
        test_fraction=0,
    )
    # inputs 18..20, target 16 (row 19 is unread by 15)
    assert s.indices["train"] == sorted(set(range(56)) - {16, 18, 19, 20})
    with pytest.raises(DataError, match=r"the first is in column 'soi' of data row 21 \(line 22 of a CSV\)"):
        load_data("csv", path=str(tmp_path / "holes.csv"), target="nino34", time_column="date", window=3, lead=2)


def test_time_series_mistakes_are_one_line_errors(tmp_path, enso):
    with pytest.raises(ConfigError, match="data.window=3 with data.lead=0 would show the model the target's own value"):
        load_data("csv", path=str(enso), target="nino34", time_column="date", window=3)
    with pytest.raises(DataError, match="no time column 'dat'"):
        load_data("csv", path=str(enso), target="nino34", time_column="dat", lead=1)
    with pytest.raises(DataError, match="has 60 rows, too few for one window of 58 plus a lead of 3"):
        load_data("csv", path=str(enso), target="nino34", time_column="date", window=58, lead=3)
    df = _series()
    df.loc[7, "date"] = "1870-03-01"
    df.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(
        DataError, match=r"column 'date' of .*twice.csv holds the time 1870-03-01 00:00:00 twice \(again in data row 8 "
    ):
        load_data("csv", path=str(tmp_path / "twice.csv"), target="nino34", time_column="date", lead=1)
    df.loc[7, "date"] = "soon"
    df.to_csv(tmp_path / "soon.csv", index=False)
    with pytest.raises(DataError, match=r"holds 1 value that is no date, the first 'soon' in data row 8 "):
        load_data("csv", path=str(tmp_path / "soon.csv"), target="nino34", time_column="date", lead=1)


def test_a_number_beyond_float32_is_an_error_naming_column_and_row(tmp_path):
    b = np.random.default_rng(0).normal(size=200)
    b[57] = 1e39  # finite in float64, inf in float32: the run would train on NaN losses
    with pytest.raises(
        DataError,
        match=r"column 'b' of .*big.csv holds 1e\+39 in data row 58 \(line 59 of a CSV\), beyond the float32 range",
    ):
        load_data("csv", path=str(_spoiled(tmp_path, "b", b, name="big.csv")), target="label")
    amount = _table()["amount"].to_numpy().copy()
    amount[3] = -1e39
    with pytest.raises(DataError, match=r"column 'amount' of .*holds -1e\+39 in data row 4 "):
        load_data("csv", path=str(_spoiled(tmp_path, "amount", amount)), target="amount")


def test_training_on_a_time_series_records_its_periods_and_eval_rebuilds_them(tmp_path, enso):
    args = [
        "data=csv",
        f"data.path={enso}",
        "data.target=nino34",
        "data.time_column=date",
        "data.window=3",
        "data.lead=2",
        "model=mlp",
        "trainer.max_epochs=2",
    ]
    result = fit(tmp_path, *args)
    recorded = json.loads((result.run_dir / "splits.json").read_text())
    rebuilt = load_data("csv", path=str(enso), target="nino34", time_column="date", window=3, lead=2)
    assert recorded == rebuilt.record() and recorded["periods"]["val"] == ["1873-03-01", "1873-08-01"]
    metrics = evaluate_run(result.run_dir, console=Console("none"))
    assert metrics["test/rmse"] == pytest.approx(result.metrics["test/rmse"])
