"""scikit-learn's bundled data sets (`pip install 'ember[sklearn]'`): shipped inside the package,
so they load offline in milliseconds. Test splits are carved with data.test_fraction.

    ember train data=digits model=mlp
    ember train data=diabetes model=mlp optim.lr=0.01
"""

import numpy as np
import torch

from ember.data import Splits, register_data
from ember.data.checks import require
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec


def _load(name: str):
    datasets = require("sklearn.datasets", "sklearn", name)
    return getattr(datasets, f"load_{name}")()


def _classification(name: str, input_shape: tuple[int, ...]) -> Splits:
    bunch = _load(name)
    x = torch.as_tensor(np.asarray(bunch.data, dtype=np.float32)).reshape(-1, *input_shape)
    y = torch.as_tensor(np.asarray(bunch.target, dtype=np.int64))
    names = [str(n) for n in bunch.target_names]
    spec = DataSpec(input_shape=input_shape, task="classification", num_classes=len(names), class_names=names)
    return Splits(train=TensorData(x, y), spec=spec)


@register_data("digits")
def digits(cfg) -> Splits:
    """scikit-learn's 8x8 handwritten digits: 1797 images, 10 classes."""
    return _classification("digits", (1, 8, 8))


@register_data("wine")
def wine(cfg) -> Splits:
    """scikit-learn's wine recognition: 178 wines, 13 chemical features, 3 cultivars."""
    return _classification("wine", (13,))


@register_data("breast_cancer")
def breast_cancer(cfg) -> Splits:
    """scikit-learn's Wisconsin breast cancer: 569 tumours, 30 features, malignant or benign."""
    return _classification("breast_cancer", (30,))


@register_data("diabetes")
def diabetes(cfg) -> Splits:
    """scikit-learn's diabetes: 442 patients, 10 features, disease progression after a year."""
    bunch = _load("diabetes")
    x = torch.as_tensor(np.asarray(bunch.data, dtype=np.float32))
    y = torch.as_tensor(np.asarray(bunch.target, dtype=np.float32)).unsqueeze(1)
    spec = DataSpec(input_shape=(10,), task="regression", target_shape=(1,))
    return Splits(train=TensorData(x, y), spec=spec)
