"""Sample quality of an image generator: FID, KID and Inception Score through torch-fidelity, with
the real-vs-real floor and a trivial baseline measured the same way, so that a number can be placed.

Protocol:
- the model draws `num_samples` images with `agent.sample(n, generator)` (uint8, or float in [0, 1];
  N x C x H x W), from a generator seeded with `seed`, in batches of `batch_size`;
- the reference is the dataset's training split at the samples' resolution (FID against the
  training set, as the DDPM paper and most of the field report it);
- `fid_real_floor`: FID of the held-out split (disjoint from the reference; a random subset of
  `num_samples` images when it has more) against the same reference: what real data of that size
  scores;
- `fid_noise_baseline`: FID of as many images of independent per-pixel Gaussian noise with the
  reference's per-pixel mean and standard deviation (clipped to [0, 1]);
- every image, real or generated, is quantised to uint8 the same way and fed to the same extractor;
  the extractor and its weights' sha256 are named in the protocol, since FIDs from different
  extractors (or different sample sizes) are not comparable.
Inception Score (`isc`) uses the extractor's classifier logits: with `digits-cnn` it is a 10-class
score (at most 10), not the Inception network's.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import ImageSampler, capability
from evals.evaluators import Measured, register, shrunk


METRICS = ("fid", "fid_real_floor", "fid_noise_baseline", "kid", "kid_real_floor", "isc", "isc_real")


class FIDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["digits", "shapes", "cifar10"] = "digits"
    data_root: str | None = None             # cifar10: the folder holding cifar-10-batches-py/
    extractor: Literal["digits-cnn", "inception-v3-compat"] = "digits-cnn"
    inception_weights: str | None = None      # default: torch hub's cache (see evals.feature_extractors)
    num_samples: int = Field(ge=2)            # generated images (the floor uses as many held-out ones, if there are)
    batch_size: int = Field(500, ge=1)
    seed: int = 0
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2)


class ImageSet(torch.utils.data.Dataset):
    """uint8 N x 3 x H x W in memory, as torch-fidelity reads a dataset."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float-in-[0, 1] N x C x H x W (C = 1 or 3) to uint8 N x 3 x H x W."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"fid: expected images N x 1 x H x W or N x 3 x H x W, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous()


def real_images(dataset: str, split: str, size: int, root: str | None) -> torch.Tensor:
    """A split of a dataset of evals.tasks.image_loaders as float N x C x H x W in [0, 1]."""
    from evals.tasks.image_loaders import image_dataset

    ds = image_dataset(dataset, split, size, root)
    if isinstance(ds, torch.utils.data.TensorDataset):
        return ds.tensors[0]
    return torch.stack([ds[i][0] for i in range(len(ds))])


def noise_like(reference: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Per-pixel independent Gaussian noise with the reference's per-pixel mean and std, in [0, 1]."""
    mean, std = reference.mean(0), reference.std(0)
    return (mean + std * torch.randn((n, *reference.shape[1:]), generator=generator)).clamp(0.0, 1.0)


def draw_samples(agent, n: int, batch_size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([agent.sample(min(batch_size, n - start), gen).cpu() for start in range(0, n, batch_size)])


def fidelity(images: torch.Tensor, reference: torch.Tensor, options: FIDOptions, weights: str) -> dict[str, float]:
    import torch_fidelity

    n = min(len(images), len(reference))
    out = torch_fidelity.calculate_metrics(
        input1=ImageSet(images), input2=ImageSet(reference), cuda=torch.cuda.is_available(), isc=True, fid=True, kid=True,
        feature_extractor=options.extractor, feature_extractor_weights_path=weights,
        kid_subsets=options.kid_subsets, kid_subset_size=min(options.kid_subset_size, n),
        batch_size=options.batch_size, cache=False, save_cpu_ram=True, verbose=False,
    )
    return {"fid": out["frechet_inception_distance"], "kid": out["kernel_inception_distance_mean"],
            "isc": out["inception_score_mean"]}


def tiny(options: FIDOptions) -> FIDOptions:
    """A dry run's budget: 10 generated images (the Inception Score's 10 splits need as many), KID
    on 2 subsets of them."""
    return shrunk(options, num_samples=10, batch_size=10, kid_subsets=2, kid_subset_size=10)


def stand_in(options: FIDOptions, folder) -> tuple[FIDOptions, list[str]]:
    """Inception's weights, when absent: the dry run measures with the project's own `digits-cnn`
    extractor instead (the weights are checked against their published hash, so no stand-in file
    can take their place); the rest of the protocol is the tier's."""
    from evals import feature_extractors as fx

    if options.extractor != fx.INCEPTION_NAME:
        return options, []
    try:
        fx.inception_weights(options.inception_weights)
    except (FileNotFoundError, ValueError) as e:
        return options.model_copy(update={"extractor": fx.DIGITS_NAME, "inception_weights": None}), [f"fid: {e}"]
    return options, []


@register("fid", version=1, options=FIDOptions, tiny=tiny, stand_in=stand_in, metric_names=lambda o: list(METRICS))
def fid(agent, config, options: FIDOptions) -> Measured:
    import torch_fidelity

    from evals import feature_extractors as fx
    from evals.tasks.image_loaders import HELDOUT

    if options.extractor == fx.DIGITS_NAME:
        fx.register()
        weights = fx.digits_weights()
    else:
        weights = fx.inception_weights(options.inception_weights)

    with torch.no_grad():
        generated = draw_samples(capability(agent, ImageSampler, "fid"), options.num_samples, options.batch_size, options.seed)
    size = generated.shape[-1]
    reference = real_images(options.dataset, "train", size, options.data_root)
    heldout = real_images(options.dataset, HELDOUT[options.dataset], size, options.data_root)
    pick = torch.Generator().manual_seed(options.seed + 1)
    floor = heldout[torch.randperm(len(heldout), generator=pick)[:len(generated)]]
    noise = noise_like(reference, len(floor), pick)

    ref = to_uint8_rgb(reference)
    ours = fidelity(to_uint8_rgb(generated), ref, options, str(weights))
    real = fidelity(to_uint8_rgb(floor), ref, options, str(weights))
    base = fidelity(to_uint8_rgb(noise), ref, options, str(weights))
    metrics = {
        "fid": ours["fid"], "fid_real_floor": real["fid"], "fid_noise_baseline": base["fid"],
        "kid": ours["kid"], "kid_real_floor": real["kid"], "isc": ours["isc"], "isc_real": real["isc"],
    }
    return Measured(metrics={k: float(v) for k, v in metrics.items()},
        protocol={
            "extractor": options.extractor,
            "extractor_weights": weights.name,
            "extractor_sha256": fx.sha256_file(weights),
            "torch_fidelity": torch_fidelity.__version__,
            "dataset": options.dataset,
            "reference": f"{options.dataset} train split, {len(reference)} images at {size}x{size}",
            "samples": f"{len(generated)} from agent.sample, torch.Generator seed {options.seed}",
            "real_floor": f"{len(floor)} of the {len(heldout)} images of the {HELDOUT[options.dataset]} split (disjoint from the reference)",
            "noise_baseline": f"{len(noise)} images of per-pixel Gaussian noise with the reference's per-pixel mean and std, clipped to [0, 1]",
            "kid": f"{options.kid_subsets} subsets of {min(options.kid_subset_size, len(generated), len(reference))}",
            "isc": "the extractor's classifier logits, 10 splits",
            "quantisation": "every image to uint8 by round(255 x), grey repeated to 3 channels",
        },
    )
