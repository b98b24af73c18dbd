"""Species lists (METHODS.md §1 step 8), PlantCLEF CSVs and the F1 evaluation (step 9), on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protolens.core.errors import ParamError, ProtolensError
from protolens.core.species import (
    ClassMapping,
    SpeciesFileError,
    SpeciesHit,
    SpeciesTable,
    evaluate_species,
    format_species_ids,
    parse_species_ids,
    read_species_csv,
    softmax,
    species_list,
    write_per_quadrat,
    write_submission,
)


def _probs(rows: list[tuple[int, float]], classes: int = 5) -> np.ndarray:
    """One row per stitched image: top-1 class ``c`` with probability ``p``, the rest spread below it."""
    out = np.zeros((len(rows), classes))
    for i, (c, p) in enumerate(rows):
        out[i] = (1.0 - p) / (classes - 1)
        out[i, c] = p
    return out


# ------------------------------------------------------------------------------------------------ species rule

def test_species_list_threshold_dedup_order_and_sources():
    p = _probs([(3, 0.9), (1, 0.4), (3, 0.7), (0, 0.6), (1, 0.55), (3, 0.95)])
    hits = species_list(p, 0.5)
    assert hits == [SpeciesHit(3, 0.95, (0, 2, 5)), SpeciesHit(0, 0.6, (3,)), SpeciesHit(1, 0.55, (4,))]


def test_species_list_threshold_is_inclusive():
    p = _probs([(2, 0.5), (4, 0.5), (1, 0.49)])
    assert species_list(p, 0.5) == [SpeciesHit(2, 0.5, (0,)), SpeciesHit(4, 0.5, (1,))]
    assert [h.class_index for h in species_list(p, 0.0)] == [2, 4, 1]


def test_species_list_fallback_single_most_confident():
    p = _probs([(1, 0.3), (2, 0.45), (0, 0.2), (2, 0.45), (4, 0.45)])
    # nothing reaches 0.6: the single most confident top-1; ties go to the first image in order
    assert species_list(p, 0.6) == [SpeciesHit(2, 0.45, (1, 3))]
    assert species_list(p, 1.0) == [SpeciesHit(2, 0.45, (1, 3))]


def test_species_list_empty_and_errors():
    assert species_list(np.zeros((0, 7)), 0.5) == []
    p = _probs([(0, 0.9)])
    for bad in (50, -0.1, 1.01, float("nan"), "x"):
        with pytest.raises(ParamError, match=r"\[0, 1\]"):
            species_list(p, bad)
    with pytest.raises(ParamError, match="percent"):
        species_list(p, 50)
    with pytest.raises(ParamError, match="shape"):
        species_list(np.ones(5) / 5, 0.5)
    with pytest.raises(ParamError, match="softmax"):
        species_list(np.array([[3.0, -1.0]]), 0.5)  # logits given by mistake


def test_species_list_from_softmax_of_logits():
    logits = np.array([[0.0, 4.0, 0.0], [2.0, 0.0, 0.0], [1000.0, 0.0, 999.0]], dtype=np.float32)
    probs = softmax(logits)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.all(np.isfinite(probs))  # stable with large logits
    hits = species_list(probs, 0.6)
    assert [(h.class_index, h.sources) for h in hits] == [(1, (0,)), (0, (1, 2))]
    assert hits[0].probability == pytest.approx(np.exp(4) / (np.exp(4) + 2))


# ---------------------------------------------------------------------------------------------- class mapping

def test_mapping_with_header_names_and_any_row_order(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("class_index,species_id,name\n1,1741880,Poa annua\n\n0,1395807,\"Acer campestre, L.\"\n2,99,\n")
    mapping = ClassMapping.from_file(path)
    assert len(mapping) == 3 and mapping.species_ids == ("1395807", "1741880", "99")
    assert mapping.species_id(1) == "1741880" and mapping.index("99") == 2
    assert mapping.name("1395807") == "Acer campestre, L." and mapping.name("99") is None
    with pytest.raises(ParamError, match="outside 0..2"):
        mapping.species_id(3)


def test_mapping_semicolons_without_header(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("0;10;Acer, campestre\n1;11\n")
    mapping = ClassMapping.from_file(path)
    assert mapping.species_ids == ("10", "11") and mapping.name("10") == "Acer, campestre"


@pytest.mark.parametrize(("text", "message"), [
    ("0,10\n0,11\n", r"map.csv:2: class_index 0 already given on line 1"),
    ("0,10\n1,10\n", r"map.csv:2: species 10 already given on line 1"),
    ("class_index,species_id\n0,10\nx,11\n", r"map.csv:3: class_index 'x' is not an integer"),
    ("0,10\n2,12\n", r"must cover 0..1; missing 1"),
    ("0,10\n1\n", r"map.csv:2: expected class_index,species_id"),
    ("0,10\n-1,12\n", r"map.csv:2: class_index -1 is negative"),
    ("class_index,species_id\n", r"no class_index,species_id rows"),
])
def test_mapping_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(SpeciesFileError, match=message):
        ClassMapping.from_file(path)


def test_mapping_missing_file(tmp_path):
    with pytest.raises(ProtolensError, match="file not found"):
        ClassMapping.from_file(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------------ species CSV

@pytest.mark.parametrize(("cell", "ids"), [
    ("[1395807, 1741880]", ("1395807", "1741880")),
    ("1395807;1741880", ("1395807", "1741880")),
    ("['1395807', '1741880']", ("1395807", "1741880")),
    ('["a b"; "c"]', ("a b", "c")),
    ("[]", ()), ("", ()), ("  [ ] ", ()),
    ("[7, 7, 8]", ("7", "7", "8")),
])
def test_parse_species_ids(cell, ids):
    assert parse_species_ids(cell) == ids


@pytest.mark.parametrize("cell", ["[1 2]", "1,,2", "[1,]"])
def test_parse_species_ids_rejects(cell):
    with pytest.raises(ValueError):
        parse_species_ids(cell)


def test_submission_round_trip(tmp_path):
    rows = {"CBN-PdlC-A1-20130807": ["1395807", "1741880"], "Q2": [], "Q3": ["42"]}
    path = tmp_path / "out" / "submission.csv"
    write_submission(path, rows)
    text = path.read_text()
    assert text.splitlines() == ["quadrat_id,species_ids", 'CBN-PdlC-A1-20130807,"[1395807, 1741880]"',
                                 "Q2,[]", "Q3,[42]"]
    table = read_species_csv(path)
    assert dict(table) == {q: tuple(v) for q, v in rows.items()} and table.transects is None
    assert table.lines == {"CBN-PdlC-A1-20130807": 2, "Q2": 3, "Q3": 4}
    assert format_species_ids(["1", "2"]) == "[1, 2]"


def test_submission_rejects_ids_that_would_not_read_back(tmp_path):
    with pytest.raises(ParamError, match="species id"):
        write_submission(tmp_path / "s.csv", {"Q1": ["1,2"]})
    with pytest.raises(ParamError, match="quadrat id"):
        write_submission(tmp_path / "s.csv", {" ": ["1"]})
    assert not (tmp_path / "s.csv").exists()


def test_read_semicolon_file_with_transect_and_unquoted_lists(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("\ufeffTransect;Quadrat_ID;species_ids\nT1;Q1;[1; 2]\nT1;Q2;3,4\n\nT2;Q3;\n")
    table = read_species_csv(path)
    assert dict(table) == {"Q1": ("1", "2"), "Q2": ("3", "4"), "Q3": ()}
    assert table.transects == {"Q1": "T1", "Q2": "T1", "Q3": "T2"}
    comma = tmp_path / "pred.csv"
    comma.write_text("quadrat_id,species_ids\nQ1,[1, 2]\n")  # unquoted list in the last column
    assert dict(read_species_csv(comma)) == {"Q1": ("1", "2")}


@pytest.mark.parametrize(("text", "message"), [
    ("", r"empty file"),
    ("Q1,[1]\n", r"f.csv:1: the first row must be a header"),
    ("quadrat_id,species_ids\nQ1,[1]\nQ1,[2]\n", r"f.csv:3: quadrat Q1 already given on line 2"),
    ("quadrat_id,species_ids\n,[1]\n", r"f.csv:2: empty quadrat_id"),
    ("quadrat_id,species_ids\nQ1,[1 2]\n", r"f.csv:2: separate species ids"),
    ("quadrat_id,species_ids,transect\nQ1,[1, 2],T\n", r"f.csv:2: expected 3 fields, found 4 \(quote"),
    ("quadrat_id,species_ids,transect\nQ1,[1],\n", r"f.csv:2: empty transect"),
    ("quadrat_id,species_ids\nQ1\n", r"f.csv:2: expected 2 fields, found 1"),
])
def test_read_species_csv_errors(tmp_path, text, message):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(SpeciesFileError, match=message):
        read_species_csv(path)
    with pytest.raises(SpeciesFileError, match="file not found"):
        read_species_csv(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------------- evaluation

def test_evaluate_hand_computed_with_missing_and_extra_quadrats():
    truth = {"Q1": ["a", "b"], "Q2": ["c"], "Q3": ["d", "e", "f"]}
    pred = {"Q1": ["a", "x"], "Q3": ["d", "e"], "Q9": ["a"]}
    result = evaluate_species(pred, truth)
    # Q1: tp 1, P 2, G 2 -> F1 0.5; Q2 missing -> empty prediction -> 0; Q3: tp 2, P 2, G 3 -> 4/5
    assert [s.f1 for s in result.per_quadrat] == pytest.approx([0.5, 0.0, 0.8])
    assert result.f1 == pytest.approx(1.3 / 3)
    assert result.precision == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert result.recall == pytest.approx((0.5 + 0.0 + 2 / 3) / 3)
    assert result.mean_predicted == pytest.approx(4 / 3) and result.mean_truth == pytest.approx(2.0)
    assert result.missing == ("Q2",) and result.extra == ("Q9",)
    assert result.f1_transect is None and result.n_transects == 0 and result.n_quadrats == 3


def test_evaluate_empty_prediction_and_empty_truth_conventions():
    result = evaluate_species({"Q1": [], "Q2": ["a"], "Q3": []}, {"Q1": ["a"], "Q2": [], "Q3": []})
    scores = {s.quadrat_id: (s.precision, s.recall, s.f1) for s in result.per_quadrat}
    assert scores == {"Q1": (0.0, 0.0, 0.0), "Q2": (0.0, 0.0, 0.0), "Q3": (1.0, 1.0, 1.0)}
    assert result.f1 == pytest.approx(1 / 3)
    with pytest.raises(ParamError, match="no quadrats"):
        evaluate_species({"Q1": ["a"]}, {})


def test_evaluate_duplicates_count_once():
    result = evaluate_species({"Q1": ["a", "a", "b", "b"]}, {"Q1": ["a", "c", "c"]})
    score = result.per_quadrat[0]
    assert (score.n_pred, score.n_truth, score.tp) == (2, 2, 1)
    assert score.f1 == pytest.approx(0.5) and result.mean_predicted == 2.0


def test_transect_average_differs_from_plain_macro_average():
    truth = SpeciesTable({"Q1": ["a"], "Q2": ["b"], "Q3": ["c"]}, transects={"Q1": "T1", "Q2": "T1", "Q3": "T2"})
    pred = {"Q1": ["a"], "Q2": ["a"], "Q3": ["c"]}
    result = evaluate_species(pred, truth)
    assert result.f1 == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert result.f1_transect == pytest.approx(0.75)  # T1: (1 + 0) / 2, T2: 1 -> (0.5 + 1) / 2
    assert result.n_transects == 2 and [s.transect for s in result.per_quadrat] == ["T1", "T1", "T2"]
    with pytest.raises(ParamError, match="Q3 has no transect"):
        evaluate_species(pred, truth, transects={"Q1": "T1", "Q2": "T1"})


def test_evaluation_json_and_per_quadrat_table(tmp_path):
    result = evaluate_species({"Q1": ["a"]}, {"Q1": ["a", "b"], "Q2": ["c"]})
    data = json.loads(json.dumps(result.to_json()))
    assert data["f1"] == pytest.approx(1 / 3) and data["missing"] == ["Q2"]
    assert data["per_quadrat"][0] == {"quadrat_id": "Q1", "transect": "", "n_pred": 1, "n_truth": 2, "tp": 1,
                                      "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    write_per_quadrat(tmp_path / "pq.csv", result)
    assert (tmp_path / "pq.csv").read_text().splitlines() == [
        "quadrat_id,transect,n_pred,n_truth,tp,precision,recall,f1",
        "Q1,,1,2,1,1.000000,0.500000,0.666667",
        "Q2,,0,1,0,0.000000,0.000000,0.000000",
    ]
