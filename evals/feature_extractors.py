"""Feature extractors for FID, KID and the Inception Score through torch-fidelity.

- `digits-cnn`: a small convolutional classifier that the project trains itself on the training split
  of scikit-learn's handwritten digits, for the offline mini tiers. Its weights are
  `evals/assets/digits_cnn.safetensors`, made by `python -m evals.feature_extractors train-digits`
  (about 10 s on one CPU core, seeded). FID and KID read its 64-d penultimate layer (before the
  ReLU, standardised with the training digits' mean and std), the Inception Score its 10 logits. Distances in this space are comparable only with distances
  made with the same weights: every result names the file's sha256.
- `inception-v3-compat`: torch-fidelity's standard Inception-v3 (pool3 for FID and KID, logits for
  IS), for the full tiers. Its weights are read from the local torch hub cache and never
  downloaded; a missing file is an error that names it.

torch-fidelity feeds extractors uint8 tensors N x 3 x H x W; `digits-cnn` averages the channels
and resizes to its 16 x 16 input (bilinear, as `load_digits` upsamples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from evals.checkpoint import sha256_file

ASSETS = Path(__file__).resolve().parent / "assets"
DIGITS_WEIGHTS = ASSETS / "digits_cnn.safetensors"
DIGITS_SIZE = 16
DIGITS_NAME = "digits-cnn"
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file; the suffix is its sha256 prefix


# -- digits-cnn ---------------------------------------------------------------------------------
class DigitsCNN(nn.Module):
    def __init__(self, features: int = 64, classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(64 * (DIGITS_SIZE // 4) ** 2, features)
        self.head = nn.Linear(features, classes)
        # the training digits' feature mean and std: features come out standardised, so that KID's
        # cubic kernel (x.y / d + 1)^3 sees values of order one, as with Inception's
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float N x 1 x 16 x 16 in [0, 1]. Returns (standardised features, logits)."""
        h = self.fc(self.conv((x - 0.5) / 0.5).flatten(1))
        return (h - self.feature_mean) / self.feature_std, self.head(F.relu(h))


def to_digits_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W to float N x 1 x 16 x 16 in [0, 1]."""
    x = images.float().div(255.0).mean(1, keepdim=True)
    if x.shape[-1] != DIGITS_SIZE or x.shape[-2] != DIGITS_SIZE:
        down = x.shape[-1] > DIGITS_SIZE
        x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False, antialias=down)
    return x.clamp(0.0, 1.0)


class DigitsFeatureExtractor(FeatureExtractorBase):
    """`digits-cnn` as a torch-fidelity feature extractor."""

    FEATURES = ("features", "logits_unbiased")

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net = DigitsCNN()
        self.net.load_state_dict(load_file(str(digits_weights(feature_extractor_weights_path))))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return DigitsFeatureExtractor.FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, DIGITS_SIZE, DIGITS_SIZE, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"{DIGITS_NAME}: expected uint8 N x 3 x H x W images, got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        features, logits = self.net(to_digits_input(x))
        out = {"features": features, "logits_unbiased": logits}
        return tuple(out[name] for name in self.features_list)


def digits_weights(path: str | Path | None = None) -> Path:
    file = Path(path or DIGITS_WEIGHTS)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: the {DIGITS_NAME} weights are missing; make them with "
                                "`python -m evals.feature_extractors train-digits`")
    return file


def register() -> None:
    """Make `digits-cnn` known to torch-fidelity (idempotent)."""
    if DIGITS_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(DIGITS_NAME, DigitsFeatureExtractor)


def train_digits(out: Path = DIGITS_WEIGHTS, epochs: int = 30, seed: int = 0) -> dict[str, float]:
    """Train `digits-cnn` on the digits training split (16 x 16, random shifts of up to 2 pixels),
    seeded and single-threaded so the same machine gives the same bytes. Returns test accuracy."""
    from evals.tasks.images import load_digits

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits("train", size=DIGITS_SIZE)
    x_test, y_test = load_digits("test", size=DIGITS_SIZE)
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(xb)[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        h = net.fc(net.conv((x - 0.5) / 0.5).flatten(1))
        net.feature_mean.copy_(h.mean(0))
        net.feature_std.copy_(h.std(0))
        accuracy = (net(x_test)[1].argmax(1) == y_test).float().mean().item()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    return {"test_accuracy": accuracy}


# -- inception-v3-compat ------------------------------------------------------------------------
def inception_weights(path: str | None = None) -> Path:
    """torch-fidelity's Inception weights from the local cache (torch hub's checkpoints folder, where
    torch-fidelity itself keeps them) or `path`; never downloaded. The file is checked against the
    sha256 prefix in its name and loaded once with torch's tensors-only unpickler, so that the
    plain load torch-fidelity then makes reads a file known to hold nothing but tensors."""
    file = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: torch-fidelity's Inception-v3 weights are not on this machine; copy "
                                f"{INCEPTION_FILE} there (this project never downloads them)")
    prefix = INCEPTION_FILE.rsplit("-", 1)[1].split(".")[0]
    digest = sha256_file(file)
    if not digest.startswith(prefix):
        raise ValueError(f"{file}: sha256 {digest[:16]}... does not start with {prefix}, the hash of {INCEPTION_FILE}")
    torch.load(file, map_location="cpu", weights_only=True)
    return file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.feature_extractors", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train-digits", help=f"train {DIGITS_NAME} and write its weights")
    p.add_argument("--out", type=Path, default=DIGITS_WEIGHTS)
    args = parser.parse_args(argv)
    stats = train_digits(args.out)
    print(f"{args.out}: test accuracy {stats['test_accuracy']:.4f}, sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
