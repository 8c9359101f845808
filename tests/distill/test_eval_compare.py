"""`framecast eval-compare` (distill/eval_compare.py): the paired difference of two eval reports.

Checked against scipy's paired t-test (`scipy.stats.ttest_rel`, whose statistic is the mean paired
difference over its standard error) and against the figures DISTILL.md reports for the two shipped
reports in docs/eval. Measured with the code broken: differences taken before - after, or the
standard error with n instead of n - 1, or runs paired by position instead of (prompt, seed), fail.
"""

import json
import random

import pytest
from scipy import stats

from client.cli import main
from distill.errors import DistillError
from distill.eval_compare import compare_reports, load_report
from distill.scoring import COMPONENTS


def _report(scores: dict, teacher: dict | None = None) -> dict:
    """An eval.json with one run per (prompt, seed) key of `scores`, every component at the run's score."""
    def runs(s):
        return [{"prompt": p, "seed": seed, "overall": v, "components": {k: v for k in COMPONENTS}}
                for (p, seed), v in s.items()]
    doc = {"runs": runs(scores)}
    if teacher is not None:
        doc["teacher"] = {"runs": runs(teacher)}
    return doc


def _scores(seed: int, shift: float = 0.0) -> dict:
    rng = random.Random(seed)
    return {(p, s): rng.uniform(0.2, 0.8) + shift for p in ("a red circle", "two blue squares", "a cyan triangle")
            for s in range(4)}


def test_the_paired_difference_is_scipys_paired_t_statistic():
    before = _scores(0)
    rng = random.Random(1)
    after = {k: v + 0.02 + rng.gauss(0, 0.03) for k, v in before.items()}
    keys = list(before)
    # AFTER's runs in another order: pairs must be made by (prompt, seed), not by position
    doc = compare_reports(_report(before), _report(dict(reversed(list(after.items())))))
    overall = doc["runs"]["overall"]
    t = stats.ttest_rel([after[k] for k in keys], [before[k] for k in keys])
    assert overall["difference"] == pytest.approx(sum(after[k] - before[k] for k in keys) / len(keys))
    assert overall["z"] == pytest.approx(t.statistic)
    assert overall["n"] == 12
    assert overall["up"] + overall["down"] == 12 and overall["up"] == sum(after[k] > before[k] for k in keys)
    assert doc["runs"]["components"]["colours"]["difference"] == pytest.approx(overall["difference"])
    red = next(r for r in doc["runs"]["per_prompt"] if r["prompt"] == "a red circle")
    reds = [k for k in keys if k[0] == "a red circle"]
    assert red["z"] == pytest.approx(stats.ttest_rel([after[k] for k in reds], [before[k] for k in reds]).statistic)


def test_a_student_against_its_own_teacher_and_a_report_missing_runs():
    student, teacher = _scores(2), _scores(2, shift=-0.1)
    doc = compare_reports(_report(student, teacher), _report(student, teacher), "teacher", "student")
    assert doc["runs"]["overall"]["difference"] == pytest.approx(0.1)
    with pytest.raises(DistillError, match="no teacher section"):
        compare_reports(_report(student), _report(student), "teacher", "student")
    fewer = dict(list(student.items())[1:])
    with pytest.raises(DistillError, match=r"only BEFORE has \('a red circle', 0\)"):
        compare_reports(_report(student), _report(fewer))


def test_the_shipped_reports_give_distills_figures(tmp_path, capsys):
    # DISTILL.md, "The run that produced checkpoints/shapes": +0.024 (0.007), colours +0.043 (0.013);
    # switch objects 0.227 -> 0.268 over 16 switches
    assert main(["eval-compare", "docs/eval/shapes_v13_short_8seeds.json", "docs/eval/shapes_v14_short_8seeds.json",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert "+0.024" in capsys.readouterr().out
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["runs"]["overall"]["difference"] == pytest.approx(0.024, abs=5e-4)
    assert doc["runs"]["overall"]["standard_error"] == pytest.approx(0.007, abs=5e-4)
    assert doc["runs"]["components"]["colours"]["difference"] == pytest.approx(0.043, abs=5e-4)
    switch = compare_reports(load_report("docs/eval/shapes_v13_switch.json"), load_report("docs/eval/shapes_v14_switch.json"))
    assert switch["switch"]["objects"]["n"] == 16
    assert switch["switch"]["objects"]["before"] == pytest.approx(0.227, abs=5e-4)
    assert switch["switch"]["objects"]["after"] == pytest.approx(0.268, abs=5e-4)


def test_a_missing_report_is_one_line_error(tmp_path, capsys):
    assert main(["eval-compare", str(tmp_path), "docs/eval/shapes_v14_short_8seeds.json"]) == 2
    assert "no eval report at" in capsys.readouterr().err
