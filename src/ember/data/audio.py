"""Audio: a folder of WAV recordings, read with SciPy (`pip install 'ember[audio]'`).

    ember train data=audio data.root=speech_commands data.duration=1.0 data.features=logmel model=mlp
    ember train data=audio data.root=waves_yesno data.labels=filename data.duration=6.0 model=mlp

Labels come from subfolders (`data.labels=folder`: root/<class>/*.wav) or from file names
(`data.labels=filename`): a name made of integers separated by `_`, like the YESNO corpus's
`0_1_0_0_1_0_1_1.wav`, gives each recording that vector of values as a regression target (one
integer: a class id); otherwise the text before the first `_` is the class (`dog_017.wav`).
Every recording is mixed to mono, resampled to `data.sample_rate` and cropped or zero-padded to
`data.duration` seconds; `data.features=logmel` turns it into a log-mel spectrogram.
"""

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ember.data import Splits, register_data
from ember.data.checks import check_labels, existing_path, require
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import DataError
from ember.ranges import AT_LEAST_1, POSITIVE, check_choice


@register_data("audio")
def audio(
    cfg,
    *,
    labels: str = "folder",
    sample_rate: Annotated[int, AT_LEAST_1] = 16000,
    duration: Annotated[float, POSITIVE] = 1.0,
    features: str = "waveform",
    n_mels: Annotated[int, AT_LEAST_1] = 40,
    n_fft: Annotated[int, AT_LEAST_1] = 400,
    hop_length: Annotated[int, AT_LEAST_1] = 160,
) -> Splits:
    """WAV files labelled by subfolder or by file name, at a fixed rate and length; optional log-mel."""
    require("scipy.io.wavfile", "audio", "audio")
    check_choice("data.labels", labels, ("folder", "filename"))
    check_choice("data.features", features, ("waveform", "logmel"))
    root = existing_path(
        cfg.root or cfg.path,
        "data.root",
        "audio",
        "a folder of .wav files (one subfolder per class, or labels in the file names)",
        directory=True,
    )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not files:
        raise DataError(
            f"{root} has no .wav files; put the recordings there (one subfolder per class, or data.labels=filename)"
        )
    length = round(duration * sample_rate)
    if length < 1:
        raise DataError(
            f"data.duration={duration} s at data.sample_rate={sample_rate} is less than one sample; "
            "use a longer duration"
        )
    y, spec_extra = _labels(files, root, labels)
    x = torch.from_numpy(np.stack([_load(f, sample_rate, length) for f in files])).unsqueeze(1)
    if features == "logmel":
        x = log_mel(x[:, 0], sample_rate, n_fft, hop_length, n_mels).unsqueeze(1)
    spec = DataSpec(input_shape=tuple(x.shape[1:]), **spec_extra)
    return Splits(train=TensorData(x, y), spec=spec)


def _labels(files: list[Path], root: Path, mode: str):
    if mode == "folder":
        names = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files]
        loose = [f.name for f, n in zip(files, names) if n is None]
        if loose:
            raise DataError(
                f"{root} holds .wav files outside class subfolders ({loose[0]}, ...); move them into {root}/<class>/ "
                "or use data.labels=filename"
            )
        classes = sorted(set(names))
        y = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
        return y, {"task": "classification", "num_classes": len(classes), "class_names": classes}
    tokens = [f.stem.split("_") for f in files]
    if all(t and all(s.lstrip("-").isdigit() for s in t) for t in tokens):
        sizes = {len(t) for t in tokens}
        if len(sizes) > 1:
            raise DataError(
                f"the file names in {root} hold different numbers of labels ({', '.join(map(str, sorted(sizes)))}); "
                "every name needs the same count, like 0_1_0_0_1_0_1_1.wav"
            )
        values = np.array([[int(s) for s in t] for t in tokens])
        if values.shape[1] == 1:  # one number per name: a class id
            k = check_labels(values[:, 0], f"labels in the file names of {root}")
            return torch.from_numpy(values[:, 0]), {
                "task": "classification",
                "num_classes": k,
                "class_names": [str(i) for i in range(k)],
            }
        # Several numbers per name (YESNO: one yes/no per spoken word): a vector target.
        return torch.from_numpy(values.astype(np.float32)), {"task": "regression", "target_shape": (values.shape[1],)}
    names = [t[0] for t in tokens]
    classes = sorted(set(names))
    y = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
    return y, {"task": "classification", "num_classes": len(classes), "class_names": classes}


def _load(path: Path, sample_rate: int, length: int) -> np.ndarray:
    """A recording as float32 mono at `sample_rate`, cropped or zero-padded to `length` samples."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    try:
        rate, data = wavfile.read(path)
    except Exception as e:  # noqa: BLE001 - truncated headers, compressed WAVs, files that are not WAV
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot read {path} as a WAV file ({first}); convert it to PCM WAV or remove it") from None
    if data.size == 0:
        raise DataError(f"{path} holds no audio samples; remove it")
    data = _to_float(data)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        data = resample_poly(data, sample_rate // g, rate // g)
    out = np.zeros(length, dtype=np.float32)
    n = min(length, len(data))
    out[:n] = data[:n]
    return out


def _to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (data.astype(np.float32) - 128) / 128
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32)


def log_mel(wave: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> torch.Tensor:
    """(N, L) waveforms -> (N, n_mels, frames) log-mel power spectrograms (HTK mel scale)."""
    window = torch.hann_window(n_fft)
    power = torch.stft(wave, n_fft, hop_length, window=window, return_complex=True).abs().pow(2)
    return torch.log(mel_filters(sample_rate, n_fft, n_mels) @ power + 1e-6)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the mel scale."""
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = hz(np.linspace(mel(0), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])
    return torch.from_numpy(np.maximum(0, np.minimum(lower, upper))).float()
