"""``protolens evaluate species`` on hand-computed files."""

from __future__ import annotations

import json

from tests.cli.conftest import run_cli


def _files(tmp_path):
    pred = tmp_path / "pred.csv"
    pred.write_text('quadrat_id,species_ids\nQ1,"[1, 2]"\nQ2,[3]\nQ9,[3]\n')
    truth = tmp_path / "truth.csv"
    truth.write_text("quadrat_id;species_ids;transect\nQ1;1;T1\nQ2;3,4;T2\nQ3;[5];T2\n")
    return pred, truth


def test_evaluate_species_prints_scores_and_writes_tables(tmp_path, monkeypatch, capsys):
    pred, truth = _files(tmp_path)
    table, report = tmp_path / "out" / "per_quadrat.csv", tmp_path / "out" / "eval.json"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "species", "--pred", pred, "--truth", truth,
                             "--per-quadrat", table, "--json", report)
    assert code == 0, err
    # Q1 F1 2/3, Q2 F1 2/3, Q3 missing -> 0: macro 4/9; transects T1 2/3, T2 1/3 -> 0.5
    assert "macro F1      0.44444  (mean over 3 quadrats)" in out
    assert "transect F1   0.50000" in out and "2 transects" in out
    assert "precision     0.50000" in out  # (1/2 + 1 + 0) / 3
    assert "recall        0.50000" in out  # (1 + 1/2 + 0) / 3
    assert "predicted 1.00, truth 1.33" in out
    assert "missing from the prediction (scored as empty): 1: Q3" in out
    assert "not in the truth (ignored): 1: Q9" in out
    rows = table.read_text().splitlines()
    assert rows[0] == "quadrat_id,transect,n_pred,n_truth,tp,precision,recall,f1"
    assert rows[3] == "Q3,T2,0,1,0,0.000000,0.000000,0.000000"
    data = json.loads(report.read_text())
    assert data["schema"] == "protolens.species-evaluation/1"
    assert abs(data["f1_transect"] - 0.5) < 1e-12 and data["extra"] == ["Q9"]


def test_evaluate_species_without_transects(tmp_path, monkeypatch, capsys):
    pred, _ = _files(tmp_path)
    truth = tmp_path / "plain.csv"
    truth.write_text("quadrat_id,species_ids\nQ1,[1]\nQ2,[3]\n")
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "species", "--pred", pred, "--truth", truth)
    assert code == 0, err
    assert "macro F1      0.83333" in out and "transect F1" not in out and "missing" not in out


def test_evaluate_species_errors_exit_1(tmp_path, monkeypatch, capsys):
    pred, truth = _files(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "species", "--pred", tmp_path / "nope.csv",
                           "--truth", truth)
    assert code == 1 and "error: " in err and "nope.csv: file not found" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("quadrat_id,species_ids\nQ1,[1]\nQ1,[2]\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "species", "--pred", pred, "--truth", bad)
    assert code == 1 and "bad.csv:3: quadrat Q1 already given on line 2" in err
