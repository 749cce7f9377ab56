"""The FID evaluator and the project's own feature extractor, through torch-fidelity, offline."""

import pytest
import torch
import torch_fidelity

from evals import feature_extractors as fx
from evals.evaluators import fid as fid_eval
from evals.tasks.images import load_digits


@pytest.fixture(scope="module")
def digits():
    fx.register()
    train, _ = load_digits("train", size=8)
    test, test_labels = load_digits("test", size=8)
    return fid_eval.to_uint8_rgb(train), fid_eval.to_uint8_rgb(test), test_labels


def metrics(a: torch.Tensor, b: torch.Tensor) -> dict:
    return torch_fidelity.calculate_metrics(
        input1=fid_eval.ImageSet(a), input2=fid_eval.ImageSet(b), cuda=False, fid=True,
        feature_extractor=fx.DIGITS_NAME, cache=False, save_cpu_ram=True, verbose=False)


def test_extractor_is_registered_and_is_a_digit_classifier(digits):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fx.register()  # a second registration is a no-op, not torch-fidelity's duplicate-name error
    assert FEATURE_EXTRACTORS_REGISTRY[fx.DIGITS_NAME] is fx.DigitsFeatureExtractor
    ext = torch_fidelity.utils.create_feature_extractor(fx.DIGITS_NAME, ["features", "logits_unbiased"], cuda=False)
    _, test, labels = digits
    features, logits = ext(test)
    assert features.shape == (len(test), 64) and logits.shape == (len(test), 10)
    assert (logits.argmax(1) == labels).float().mean() > 0.95  # the committed weights know the digits
    with pytest.raises(ValueError, match="uint8"):
        ext(test.float())


def test_fid_of_identical_sets_is_near_zero_and_rises_with_noise(digits):
    train, _, _ = digits
    x = train.float() / 255
    gen = torch.Generator().manual_seed(0)
    fids = []
    for sigma in (0.0, 0.1, 0.3, 0.6):
        noisy = fid_eval.to_uint8_rgb((x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1))
        fids.append(metrics(noisy, train)["frechet_inception_distance"])
    assert abs(fids[0]) < 1e-2
    assert fids == sorted(fids) and fids[1] > 0.5 and fids[3] > 10 * fids[1]


class Replay:
    """A 'generator' that returns given images in order: a memoriser or a noise source."""

    def __init__(self, images: torch.Tensor):
        self.images, self.i = images, 0

    def sample(self, n, generator):
        out = self.images[self.i:self.i + n]
        self.i += n
        return out


def test_evaluator_places_the_reference_itself_at_zero_real_data_above_and_noise_far_above():
    x_train, _ = load_digits("train", size=8)
    opts = fid_eval.FIDOptions(num_samples=len(x_train), kid_subsets=10, batch_size=500)
    result = fid_eval.fid(Replay(x_train), None, opts)
    m = result.metrics
    assert abs(m["fid"]) < 1e-2 < m["fid_real_floor"]
    assert m["fid_noise_baseline"] > 20 * m["fid_real_floor"]
    assert abs(m["kid"]) < 0.05 and abs(m["kid_real_floor"]) < 0.05  # unbiased: about 0 for one distribution
    assert 9 < m["isc"] <= 10  # ten balanced, confidently classified classes
    assert result.protocol["extractor_sha256"] == fx.sha256_file(fx.DIGITS_WEIGHTS)
    assert "360 of the 360 images of the test split" in result.protocol["real_floor"]


def test_uint8_conversion_and_shapes():
    x = torch.tensor([0.0, 0.5, 1.0, 1.2]).reshape(1, 1, 2, 2)
    out = fid_eval.to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 2].flatten().tolist() == [0, 128, 255, 255]
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        fid_eval.to_uint8_rgb(torch.zeros(2, 2, 4, 4))


def test_inception_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / fx.INCEPTION_FILE
    with pytest.raises(FileNotFoundError, match=str(expected)):
        fx.inception_weights()
    expected.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, expected)  # present, but not the published file
    with pytest.raises(ValueError, match="sha256"):
        fx.inception_weights()


def test_missing_digits_weights_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-digits") as e:
        fx.digits_weights(tmp_path / "absent.safetensors")
    assert str(tmp_path / "absent.safetensors") in str(e.value)
