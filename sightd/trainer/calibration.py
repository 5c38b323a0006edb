"""Temperature scaling: make a confidence of 0.8 mean "right about 80% of the time".

A network trained with cross-entropy is usually surer than it is right. One number, the
temperature T, divides the logits before the softmax; it is fitted after training on the
validation split (images the weights never trained on) by minimising the negative
log-likelihood, and it never changes which class wins (Guo et al., 2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Calibration only ever softens. A validation split of a few dozen images that are all right
# drives the fitted T towards 0 (sure of everything), and on the unseen images the model then
# claims more than it delivers; a model that is too timid costs an event a frame later, one
# that is too sure fires on a wrong label.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1.0, 20.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in [MIN, MAX] that minimises the NLL of softmax(logits / T); 1.0 with no data.

    The NLL is unimodal in log T, so a golden-section search finds it without gradients.
    """
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.float(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(60):  # the bracket shrinks by 0.618 each round: far below 1e-6 in log T
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2)


def confidences(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0):
    """(top probability, whether the top class is right) per image, as numpy arrays."""
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    top, predicted = probabilities.max(dim=1)
    return top.numpy(), (predicted == labels).numpy()
