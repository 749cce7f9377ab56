"""Spec schema, config overrides and CLI errors: one clear message naming file and field."""

import json
import textwrap

import pytest

from evals import cli
from evals.config import build_config, parse_overrides, resolve
from evals.spec import SpecError, all_specs, load_spec, load_spec_file, parse_expr

GOOD = """
id: demo
title: Demo
authors: [A]
year: 2020
area: reinforcement-learning
module: reproductions.sac
tiers:
  mini:
    seeds: [1, 2]
    arms: {ours: {}, base: {}}
    evaluators: [{kind: rl_return, episodes: 2}]
    targets:
      - {expr: "return[ours] >= -200"}
"""


def write(tmp_path, text, folder="demo"):
    path = tmp_path / folder / "spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_all_25_specs_validate():
    specs = all_specs()
    assert len(specs) == 25
    assert {s.area for s in specs} == {"llm-backbone", "vision-multimodal", "generative", "alignment-reasoning",
                                       "efficiency-systems", "reinforcement-learning"}


def test_good_spec_loads(tmp_path):
    spec = load_spec_file(write(tmp_path, GOOD))
    assert spec.tiers["mini"].targets[0].arms() == {"ours"}


@pytest.mark.parametrize("change, field", [
    (("area: reinforcement-learning", "area: robotics"), "area"),
    (("year: 2020", "year: twenty"), "year"),
    (("seeds: [1, 2]", "seeds: [1, 1]"), "tiers.mini.seeds"),
    (('expr: "return[ours] >= -200"', 'expr: "return(ours) >= -200"'), "tiers.mini.targets[0].expr"),
    (('expr: "return[ours] >= -200"', 'expr: "return[other] >= -200"'), "tiers.mini"),
    (("arms: {ours: {}, base: {}}", "arms: {ours: {colour: red}}"), "tiers.mini.arms.ours.colour"),
    (("mini:", "medium:"), "tiers.medium"),
])
def test_malformed_spec_names_file_and_field(tmp_path, change, field):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(SpecError) as e:
        load_spec_file(path)
    msg = str(e.value)
    assert str(path) in msg and f"'{field}" in msg and "\n" not in msg


SUPERSEDED = """
    superseded:
      - expr: "return[ours] >= 0"
        spec_version: 1
        result: "-150 [-180, -120]: not met"
        reason: "could not be met by construction: the task's best return is negative"
"""


def test_a_superseded_target_keeps_its_result_and_reason_from_an_older_spec_version(tmp_path):
    spec = load_spec_file(write(tmp_path, "version: 2\n" + GOOD + SUPERSEDED))
    old = spec.tiers["mini"].superseded[0]
    assert (old.expr, old.spec_version) == ("return[ours] >= 0", 1) and "by construction" in old.reason
    with pytest.raises(SpecError, match="spec version 1, which must be below the spec's version 1"):
        load_spec_file(write(tmp_path, GOOD + SUPERSEDED))  # replacing a target means a new spec version
    with pytest.raises(SpecError, match=r"tiers\.mini\.superseded\[0\]\.reason.: Field required"):
        load_spec_file(write(tmp_path, "version: 2\n" + GOOD + SUPERSEDED.replace("        reason:", "        why:")))


def test_id_must_match_folder_and_yaml_must_parse(tmp_path):
    with pytest.raises(SpecError, match="does not match its folder"):
        load_spec_file(write(tmp_path, GOOD, folder="other"))
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(write(tmp_path, "id: [unclosed", folder="bad"))


def test_target_expressions():
    lhs, op, rhs = parse_expr("steps[muon] <= 0.8 * steps[adamw]")
    assert (lhs.metric, lhs.arm, op, rhs.scale, rhs.arm) == ("steps", "muon", "<=", 0.8, "adamw")
    _, _, rhs = parse_expr("val_loss[rope] < 1e-2")
    assert rhs.const == 0.01
    with pytest.raises(ValueError):
        parse_expr("3 < val_loss[rope]")


def test_overrides_are_typed_and_checked():
    spec = load_spec("sac")
    r = resolve(spec, "smoke", "ours", 1, parse_overrides(["total_steps=500", "lr=1e-3", "target_entropy=-2"]))
    assert (r.config.total_steps, r.config.lr, r.config.target_entropy) == (500, 1e-3, -2.0)
    with pytest.raises(SpecError, match=r"--set: unknown config field 'total_step'; did you mean total_steps"):
        resolve(spec, "smoke", "ours", 1, {"total_step": 5})
    with pytest.raises(SpecError, match=r"--set: config field 'total_steps': 'many' is not a valid int"):
        resolve(spec, "smoke", "ours", 1, parse_overrides(["total_steps=many"]))
    with pytest.raises(SpecError, match="expected key=value"):
        parse_overrides(["total_steps"])


def test_tier_config_errors_name_the_spec_file():
    from reproductions.sac import Config

    with pytest.raises(SpecError, match=r"spec.yaml: tiers.mini.config: unknown config field 'bogus'"):
        build_config(Config, [("reproductions/sac/spec.yaml: tiers.mini.config", {"bogus": 1})])


def test_a_config_field_s_declared_bounds_are_checked_before_anything_runs():
    """A paper declares bounds with `Annotated[int, Field(gt=0)]`: a value outside them is one
    error naming where it came from, the field, the value and the bound."""
    import dataclasses
    from typing import Annotated

    from pydantic import Field

    @dataclasses.dataclass
    class Config:
        steps: Annotated[int, Field(gt=0)] = 10
        lr: Annotated[float, Field(gt=0, le=1)] = 0.1
        warmup_steps: Annotated[int, Field(ge=0)] = 0

    assert build_config(Config, [("--set", {"steps": 5, "lr": 0.5, "warmup_steps": 0})]) == Config(5, 0.5, 0)
    for field, value, why in (("steps", 0, "greater than 0"), ("lr", -1e-3, "greater than 0"), ("lr", 2, "less than or equal to 1"),
                              ("warmup_steps", -1, "greater than or equal to 0")):
        with pytest.raises(SpecError, match=rf"--set: config field '{field}': {value!r} is not a valid \w+ \(Input should be {why}\)"):
            build_config(Config, [("--set", {field: value})])


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_unknown_paper_suggests_nearest(capsys):
    code, _, err = run_cli(capsys, "show", "sca")
    assert code == 2 and "unknown paper 'sca'; did you mean sac" in err and err.count("\n") == 1


def test_cli_bad_override_is_one_line(capsys):
    code, _, err = run_cli(capsys, "reproduce", "sac", "--tier", "smoke", "--set", "hiden=3")
    assert code == 2 and "did you mean hidden" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "reproduce", "sac", "--tier", "smoke", "--seeds", "1,x")
    assert code == 2 and "--seeds" in err


def test_cli_list_shows_all_25(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and len(out.strip().splitlines()) == 26 and "sac" in out


def test_cli_status_json(capsys):
    code, out, _ = run_cli(capsys, "status", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 25 * 3
    allowed = {"not-implemented", "implemented", "reproduced", "partly-reproduced", "not-reproduced"}
    for row in rows:
        assert {"paper", "tier", "status", "seeds", "targets_met", "targets_total"} <= row.keys()
        assert row["status"] in allowed


def test_dry_run_of_the_full_tier(capsys):
    code, out, _ = run_cli(capsys, "reproduce", "sac", "--tier", "full", "--dry-run", "--arms", "ours,ours_humanoid")
    assert code == 0
    assert "parameters" in out and "one optimisation step" in out and "dry run of sac/full: ready" in out


def test_a_target_on_a_metric_no_evaluator_reports_is_a_spec_error(tmp_path):
    path = write(tmp_path, GOOD.replace('"return[ours] >= -200"', '"retrun[ours] >= -200"'))
    with pytest.raises(SpecError) as e:
        load_spec_file(path)
    assert str(e.value) == (f"{path}: field 'tiers.mini.targets[0]': no evaluator of the tier reports a metric "
                            "'retrun' (evaluators: rl_return)")


def test_one_broken_spec_does_not_stop_list_and_status(capsys, monkeypatch, tmp_path):
    import evals.spec

    real = evals.spec.load_spec

    def broken_sac(paper):
        if paper == "sac":
            raise SpecError("reproductions/sac/spec.yaml: field 'tiers.mini.targets[0]': broken")
        return real(paper)

    monkeypatch.setattr(evals.spec, "load_spec", broken_sac)
    for command in ("list", "status"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command])
        out, err = capsys.readouterr()
        assert exit_.value.code == 1 and " ppo " in out and " sac " not in out, out
        assert err.strip() == "repro: invalid, left out: reproductions/sac/spec.yaml: field 'tiers.mini.targets[0]': broken"


def test_a_malformed_record_does_not_stop_status(capsys, monkeypatch, tmp_path):
    from tests.factories import make_record
    from evals.record import write_record

    write_record(make_record(), tmp_path)
    bad = tmp_path / "sac" / "mini" / "sac-mini-ours-s2-x.json"
    bad.write_bytes(b"\xff\xfe")
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "sac"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 1 and "sac  mini implemented" in out
    assert err.strip() == f"repro: invalid, left out: {bad}: not UTF-8 text (byte 0xff at offset 0)"
