"""The best checkpoint on the test split, for the report: confusion matrix, per-class precision
and recall, the most confused examples (classification); predicted against true values, residuals
and maps of gridded targets (regression).

After `ember train` the report uses the model and data still in memory; `ember report RUN` loads
the best checkpoint (ember.api.load_run) and rebuilds the data (ember.data.build_data).
"""

import base64
import math
import struct
import zlib

import numpy as np
import torch

MAX_SAMPLES = 20000  # the report's evaluation stops here: it shows a picture, not a benchmark
SCATTER_POINTS = 2000
EXAMPLES = 8


def evaluate(model: torch.nn.Module, data, spec, batch_size: int = 512) -> dict:
    """Outputs of `model` on `data` (a TensorData or Dataset), as numpy arrays."""
    from ember.data import EpochLoader

    device = next(iter(model.parameters()), torch.empty(0)).device
    loader = EpochLoader(data, batch_size, shuffle=False)
    loader.set_epoch(0, 0)
    outs, targets, seen = [], [], 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in loader:
                out = model(x.to(device)).float().cpu()
                y = y.cpu()
                if spec.task != "classification" and out.numel() == y.numel():
                    # Pictures in the data's units: the model trained on standardized targets.
                    out, y = physical(out.reshape(y.shape), spec), physical(y, spec)
                outs.append(out)
                targets.append(y)
                seen += len(y)
                if seen >= MAX_SAMPLES:
                    break
    finally:
        model.train(was_training)
    result = {"output": torch.cat(outs).numpy(), "target": torch.cat(targets).numpy(), "truncated": seen >= MAX_SAMPLES and seen < len(data)}
    return result


def physical(y: torch.Tensor, spec) -> torch.Tensor:
    """Standardized regression targets (or outputs) of a batch back in the data's units."""
    if spec.target_mean is None or spec.target_std is None:
        return y
    shape = (1, -1) + (1,) * (y.ndim - 2) if y.ndim > 1 else (-1,)
    return y * torch.tensor(spec.target_std).reshape(shape) + torch.tensor(spec.target_mean).reshape(shape)


def classification(ev: dict, spec, data) -> dict:
    logits, y = ev["output"], ev["target"].astype(np.int64)
    k = int(spec.num_classes)
    if logits.ndim > 2:  # per-pixel classes: (N, C, ...) -> (N*..., C)
        logits = np.moveaxis(logits, 1, -1).reshape(-1, k)
        y = y.reshape(-1)
    pred = logits.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
    names = list(spec.class_names or [str(i) for i in range(k)])
    out = {
        "labels": names,
        "confusion": cm.tolist(),
        "precision": [round(float(v), 4) for v in precision],
        "recall": [round(float(v), 4) for v in recall],
        "support": cm.sum(1).tolist(),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "n": int(len(y)),
    }
    if ev["output"].ndim == 2:
        out["examples"] = confused_examples(ev["output"], ev["target"].astype(np.int64), data, spec, names)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confused_examples(logits: np.ndarray, y: np.ndarray, data, spec, names: list[str]) -> list[dict]:
    """The wrong predictions made with the most confidence, with their inputs drawn: images as
    PNG, signals as small line charts; feature vectors are not drawn."""
    shape = tuple(spec.input_shape)
    kind = "image" if len(shape) == 3 and shape[0] in (1, 3, 4) and min(shape[1:]) >= 4 else "signal" if len(shape) == 2 and shape[1] >= 8 else None
    if kind is None:
        return []
    prob = _softmax(logits)
    pred = prob.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-prob[wrong, pred[wrong]])][:EXAMPLES]
    examples = []
    for i in order:
        x = _input(data, int(i))
        if x is None:
            continue
        x = _denormalize(x, spec)
        item = {"index": int(i), "true": names[int(y[i])], "pred": names[int(pred[i])], "p": round(float(prob[i, pred[i]]), 3)}
        if kind == "image":
            item["png"] = png_data_uri(_to_uint8_image(x))
        else:
            item["signal"] = [[round(float(v), 4) for v in ch] for ch in x[:4]]
        examples.append(item)
    return examples


def _input(data, i: int) -> np.ndarray | None:
    try:
        x = data.x[i] if hasattr(data, "x") else data[i][0]
        return torch.as_tensor(x).float().cpu().numpy()
    except Exception:
        return None


def _denormalize(x: np.ndarray, spec) -> np.ndarray:
    if spec.mean and spec.std and len(spec.mean) == x.shape[0] == len(spec.std):
        shape = (-1,) + (1,) * (x.ndim - 1)
        return x * np.asarray(spec.std, dtype=np.float32).reshape(shape) + np.asarray(spec.mean, dtype=np.float32).reshape(shape)
    return x


def _to_uint8_image(x: np.ndarray) -> np.ndarray:
    """(C, H, W) floats -> (H, W) or (H, W, 3) uint8, stretched to the sample's own range."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    img = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)


def regression(ev: dict, spec) -> dict:
    out, y = ev["output"].astype(np.float64), ev["target"].astype(np.float64)
    pred, true = out.reshape(-1), y.reshape(-1)
    if pred.size != true.size:
        return {"error": f"the model's outputs ({out.shape}) do not match the targets ({y.shape})"}
    finite = np.isfinite(pred) & np.isfinite(true)
    pred, true = pred[finite], true[finite]
    resid = pred - true
    rng = np.random.default_rng(0)
    pick = rng.choice(pred.size, SCATTER_POINTS, replace=False) if pred.size > SCATTER_POINTS else np.arange(pred.size)
    lo, hi = np.percentile(resid, [0.5, 99.5]) if resid.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(resid, lo, hi), bins=40, range=(lo, hi))
    ss_res, ss_tot = float((resid**2).sum()), float(((true - true.mean()) ** 2).sum()) if true.size else 0.0
    result = {
        "scatter": [[_r(true[i]), _r(pred[i])] for i in pick],
        "hist": {"edges": [_r(e) for e in edges], "counts": counts.tolist()},
        "n": int(len(y)),
        "values": int(pred.size),
        "rmse": math.sqrt(ss_res / max(pred.size, 1)),
        "mae": float(np.abs(resid).mean()) if resid.size else float("nan"),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "clipped": int(((resid < lo) | (resid > hi)).sum()),
    }
    target_shape = tuple(spec.target_shape)
    if len(target_shape) >= 2 and min(target_shape[-2:]) >= 4 and out.shape[1:] == target_shape:
        result["maps"] = maps(out, y)
    return result


def _r(v: float) -> float:
    return float(f"{float(v):.5g}")


def maps(out: np.ndarray, y: np.ndarray, n: int = 3) -> list[dict]:
    """Target, prediction and error of the first channel of a few gridded samples, as PNGs."""
    rows = []
    for i in range(min(n, len(y))):
        t = y[i].reshape(-1, *y.shape[-2:])[0]
        p = out[i].reshape(-1, *out.shape[-2:])[0]
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        err = p - t
        e = float(np.abs(err).max()) or 1.0
        rows.append({
            "index": i,
            "range": [_r(lo), _r(hi)],
            "error_max": _r(e),
            "true": png_data_uri(colormap((t - lo) / (hi - lo or 1), VIRIDIS)),
            "pred": png_data_uri(colormap((p - lo) / (hi - lo or 1), VIRIDIS)),
            "error": png_data_uri(colormap((err / e + 1) / 2, DIVERGING)),
        })
    return rows


VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
DIVERGING = [(33, 102, 172), (146, 197, 222), (247, 247, 247), (244, 165, 130), (178, 24, 43)]


def colormap(v: np.ndarray, anchors: list[tuple]) -> np.ndarray:
    v = np.clip(np.nan_to_num(v, nan=0.0), 0, 1)
    pos = np.linspace(0, 1, len(anchors))
    rgb = [np.interp(v, pos, [a[c] for a in anchors]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def png_data_uri(img: np.ndarray) -> str:
    """A (H, W) grey or (H, W, 3) RGB uint8 array as a data: URI holding a PNG (zlib, no Pillow)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    color = 0 if img.ndim == 2 else 2
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
