"""The standard-library code corpus: which files, which split, the fingerprint, batches, tokens."""

import math

import pytest
import torch

from evals.tasks import code_corpus as cc


@pytest.fixture
def fake_stdlib(tmp_path):
    files = {"os.py": "import sys\n", "json/__init__.py": "x = 1\n", "json/decoder.py": "y = 2\n",
             "test/test_os.py": "bad\n", "unittest/test/helper.py": "bad\n", "lib2to3/tests/a.py": "bad\n",
             "idlelib/idle_test/b.py": "bad\n", "test_top.py": "bad\n", "site-packages/pkg/mod.py": "bad\n",
             "notes.txt": "not python\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_corpus_files_exclude_tests_and_site_packages(fake_stdlib):
    files = [f.as_posix() for f in cc.corpus_files(fake_stdlib)]
    assert files == ["json/__init__.py", "json/decoder.py", "os.py"]


def test_splits_partition_the_files_by_path(fake_stdlib):
    for percent in (0, 50, 100):
        train = [f for f in cc.corpus_files(fake_stdlib) if cc.split_of(f, percent) == "train"]
        val = [f for f in cc.corpus_files(fake_stdlib) if cc.split_of(f, percent) == "validation"]
        assert sorted(train + val) == cc.corpus_files(fake_stdlib) and not set(train) & set(val)
    assert all(cc.split_of(f, 0) == "train" for f in cc.corpus_files(fake_stdlib))
    assert all(cc.split_of(f, 100) == "validation" for f in cc.corpus_files(fake_stdlib))


def test_fingerprint_changes_with_content_and_split(fake_stdlib):
    a = cc.fingerprint(10, str(fake_stdlib))
    assert a == cc.fingerprint(10, str(fake_stdlib)) and "3 files" in a
    assert cc.fingerprint(100, str(fake_stdlib)) != a
    (fake_stdlib / "os.py").write_text("import sys  # changed\n")
    cc.fingerprint.cache_clear()
    assert cc.fingerprint(10, str(fake_stdlib)) != a


def test_real_corpus_is_large_and_held_out_by_file():
    files = cc.corpus_files()
    assert len(files) > 300 and not any(f.name.startswith("test_") for f in files)
    train, val = cc.load_split("train"), cc.load_split("validation")
    assert len(train) > 5_000_000 and 0.03 < len(val) / (len(train) + len(val)) < 0.25
    val_files = [f for f in files if cc.split_of(f, 10) == "validation"]
    first = (cc.stdlib_root() / val_files[0]).read_bytes()
    assert val.startswith(first) and first not in train


def test_batches_are_shifted_windows_and_reproducible():
    tokens = torch.arange(1000) % 251
    x, y = cc.random_batch(tokens, 4, 16, torch.Generator().manual_seed(3))
    x2, _ = cc.random_batch(tokens, 4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (4, 16)
    windows = list(cc.fixed_windows(tokens, 100, 10, 3))
    xs = torch.cat([w[0] for w in windows])
    assert xs.shape == (10, 10) and torch.equal(xs.flatten(), tokens[:100])
    assert torch.equal(torch.cat([w[1] for w in windows]).flatten(), tokens[1:101])


def test_byte_and_bpe_tokenizers_round_trip():
    text = "def f(x):\n    return x + 1  # é\n"
    byte = cc.ByteTokenizer()
    assert byte.decode(byte.encode(text)) == text and len(byte.encode(text)) == len(text.encode())
    bpe = cc.BPETokenizer(text * 50 + "class A:\n    pass\n" * 50, vocab_size=300)
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text and len(ids) < len(text.encode())


def test_bits_per_byte():
    assert cc.bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert cc.bits_per_byte(math.log(256), 2.0) == pytest.approx(4.0)  # 8 bits per 2-byte token
