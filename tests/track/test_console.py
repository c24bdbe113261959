"""The console prints user strings as they are: rich markup in a name is text, never a MarkupError."""

import io

from ember.track.console import Console


def test_markup_in_messages_and_tables_prints_as_text():
    console = Console("lines", stream=io.StringIO())
    console.print("column [/y] in /data/[/]/x.csv")
    console.start(10, 2)
    console.table("run /runs/[/]", {"test/mse_[/y]": 1.0, "val/[bold]x": 2.0, "[red]/mae": 3.0})
    console.show({"step": 1, "epoch": 1, "split": "val", "[/y]": 0.5})
    out = console.out.file.getvalue()
    assert "column [/y] in /data/[/]/x.csv" in out and "run /runs/[/]" in out
    assert "mse_[/y]" in out and "[bold]x" in out and "[red]" in out and "[/y] 0.5" in out


def test_a_run_directory_with_markup_in_its_path_trains(tmp_path, capsys):
    from ember.cli import main

    run = tmp_path / "a[/]b"
    code = main(
        [
            "train",
            "data.num_samples=200",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            f"run.dir='{run}'",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"run directory: {run}" in out and (run / "model.safetensors").exists()
