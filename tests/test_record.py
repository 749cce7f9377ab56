"""Run records and checkpoints: round trips, atomic non-clobbering writes, clear errors."""

import json
import multiprocessing as mp

import pytest
import torch

from evals.checkpoint import CheckpointError, load_state, save_state
from evals.record import (MAX_IMAGE_BYTES, RecordError, load_record, load_records, new_run_id, publish_images, thin_curve,
                          write_record)
from tests.factories import make_record


def test_round_trip(tmp_path):
    rec = make_record()
    path = write_record(rec, tmp_path)
    assert path == tmp_path / "sac" / "mini" / f"{rec.run_id}.json"
    assert load_record(path) == rec
    assert load_records("sac", "mini", tmp_path) == [rec]


def test_write_never_clobbers(tmp_path):
    write_record(make_record(value=-150.0), tmp_path)
    with pytest.raises(RecordError, match="exists already"):
        write_record(make_record(value=-1.0), tmp_path)
    assert load_records(results=tmp_path)[0].metrics["return"] == -150.0
    assert not list(tmp_path.rglob("*.tmp"))


def _writer(args):
    results, worker = args
    for i in range(25):
        write_record(make_record(run_id=new_run_id("sac", "mini", "ours", worker * 100 + i), seed=worker * 100 + i), results)


def test_concurrent_writers_never_clobber(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_writer, [(tmp_path, 1), (tmp_path, 2)])
    records = load_records(results=tmp_path)
    assert len(records) == 50 and len({r.run_id for r in records}) == 50


def test_malformed_records_name_file_and_field(tmp_path):
    path = write_record(make_record(), tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(RecordError, match=rf"{path}: not valid JSON"):
        load_record(path)
    data = json.loads(text)
    data["provenance"]["wall_time_s"] = "slow"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"field 'provenance.wall_time_s'"):
        load_record(path)
    data = json.loads(text)
    data["status"] = "great"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"field 'status'"):
        load_record(path)


def test_thin_curve_keeps_ends_and_limit():
    pts = [(i, float(i), float(i)) for i in range(1000)]
    thin = thin_curve(pts, 200)
    assert len(thin) == 200 and thin[0] == pts[0] and thin[-1] == pts[-1]
    assert [p[0] for p in thin] == sorted(p[0] for p in thin)


def test_checkpoint_round_trip_keeps_optimizer_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(), "step": 7, "name": "x"}
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors")
    assert back["step"] == 7 and back["name"] == "x" and torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["opt"])  # int-keyed state survives: exp_avg restored
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.99)


def test_checkpoint_refuses_pickles_and_garbage(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_state(tmp_path / "model.pt")
    (tmp_path / "fake.safetensors").write_bytes((tmp_path / "model.pt").read_bytes())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state(tmp_path / "fake.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_state(tmp_path / "missing.safetensors")


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def test_only_real_small_raster_images_are_published_beside_a_record(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.png").write_bytes(PNG)
    (run_dir / "huge.png").write_bytes(PNG + b"\0" * MAX_IMAGE_BYTES)
    (run_dir / "fake.png").write_bytes(b"<svg onload='alert(1)'/>")
    (run_dir / "plot.svg").write_text("<svg/>")
    (run_dir / "final.safetensors").write_bytes(b"weights")
    record = write_record(make_record(), tmp_path / "results")
    assert [p.name for p in publish_images(run_dir, record)] == ["samples.png"]
    assert sorted(p.name for p in record.with_suffix("").iterdir()) == ["samples.png"]
    assert (record.with_suffix("") / "samples.png").read_bytes() == PNG
