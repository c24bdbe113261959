"""data=audio: WAV files the tests write, labelled by folder or YESNO-style file names."""

import numpy as np
import pytest
import torch
from data_support import fit
from scipy.io import wavfile

from ember import load_data
from ember.data.audio import log_mel
from ember.errors import DataError


def _tone(freq, rate=8000, seconds=0.25, dtype=np.int16, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).normal(size=len(t))
    if dtype == np.int16:
        return (wave * 32767).astype(np.int16)
    return wave.astype(dtype)


def _speech(root, per_class=8):
    for name, freq in (("high", 1500), ("low", 300)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            wavfile.write(root / name / f"{i}.wav", 8000, _tone(freq * (1 + 0.02 * i), seed=i))


def test_folder_labels_fixed_length_and_resampling(tmp_path):
    _speech(tmp_path / "speech")
    # One file at another rate, in stereo float: mixed down and resampled like the rest.
    stereo = np.stack([_tone(300, rate=16000, dtype=np.float32)] * 2, axis=1)
    wavfile.write(tmp_path / "speech/low/stereo.wav", 16000, stereo)
    splits = load_data(
        "audio",
        root=str(tmp_path / "speech"),
        sample_rate=8000,
        duration=0.5,
        normalize=False,
        val_fraction=0,
        test_fraction=0,
    )
    assert splits.spec.class_names == ["high", "low"] and splits.spec.input_shape == (1, 4000)
    x = splits.train.x
    assert len(x) == 17 and x[:, 0, 2000:].abs().max() == 0  # 0.25 s of sound, zero-padded to 0.5 s
    assert 0.3 < x[:, 0, :2000].abs().max() <= 1.0  # int16 scaled to [-1, 1]


def test_yesno_names_give_vector_targets_and_logmel_features(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        labels = rng.integers(0, 2, size=8)
        name = "_".join(map(str, labels))
        wavfile.write(tmp_path / f"{name}.wav", 8000, _tone(440, seed=i))
    splits = load_data(
        "audio",
        root=str(tmp_path),
        labels="filename",
        sample_rate=8000,
        duration=0.25,
        features="logmel",
        n_fft=256,
        hop_length=128,
        n_mels=16,
        val_fraction=0,
        test_fraction=0,
        normalize_target=False,
    )
    assert splits.spec.task == "regression" and splits.spec.target_shape == (8,)
    assert splits.spec.input_shape == (1, 16, 16)  # 2000 samples / hop 128 + 1 frames
    names = sorted(p.stem for p in tmp_path.glob("*.wav"))
    assert sorted("_".join(str(int(v)) for v in row) for row in splits.train.y) == names


def test_log_mel_puts_a_tone_in_the_right_band():
    rate = 8000
    t = torch.arange(rate) / rate
    low, high = torch.sin(2 * torch.pi * 200 * t), torch.sin(2 * torch.pi * 3000 * t)
    mel = log_mel(torch.stack([low, high]), rate, 256, 128, 20)
    assert mel.shape == (2, 20, 63)
    assert mel[0].mean(1).argmax() < 5 and mel[1].mean(1).argmax() > 15


def test_audio_bad_inputs(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="none has no .wav files"):
        load_data("audio", root=str(tmp_path / "none"))
    _speech(tmp_path / "speech", per_class=2)
    wavfile.write(tmp_path / "speech/loose.wav", 8000, _tone(100))
    with pytest.raises(DataError, match="holds .wav files outside class subfolders"):
        load_data("audio", root=str(tmp_path / "speech"))
    (tmp_path / "speech/loose.wav").unlink()
    (tmp_path / "speech/low/bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="cannot read .*bad.wav as a WAV file"):
        load_data("audio", root=str(tmp_path / "speech"))


def test_training_on_recordings_learns(tmp_path):
    _speech(tmp_path / "speech", per_class=20)
    common = [
        "data=audio",
        f"data.root={tmp_path / 'speech'}",
        "data.sample_rate=8000",
        "data.duration=0.25",
        "data.features=logmel",
        "data.n_mels=16",
        "model=mlp",
        "model.width=32",
    ]
    result = fit(tmp_path, *common, "trainer.max_epochs=5", "optim.lr=0.01", "sched=none")
    assert result.metrics["test/accuracy"] >= 0.8
