"""The whole prototype-guided pipeline as a user types it: prototypes build -> train -> species -> evaluate.

Tiny random backbone and classifier (no downloads), sample photos, a small crop grid: what must hold is the chain
(every command reads what the one before wrote) and that the F1 printed is the F1 of the species file written.
"""

from __future__ import annotations

import json
import shutil

import timm
import torch
from safetensors.torch import save_file

from protolens.core.metrics import set_f1
from protolens.core.runs import RunFolder
from protolens.core.species import read_species_csv
from tests.cli.conftest import run_cli

BACKBONE = "vit_small_patch14_dinov2.lvd142m"


def test_prototypes_train_species_evaluate(monkeypatch, capsys, samples, tmp_path):
    training = tmp_path / "training"
    for species, names in (("bird", ["crow.png", "robin.jpg", "magpie.png"]),
                           ("plant", ["dahlia.jpg", "potted_plant.jpg"])):
        (training / species).mkdir(parents=True)
        for name in names:
            source = samples / ("birds" if species == "bird" else "plants") / name
            shutil.copy(source, training / species / name)
    quadrats = tmp_path / "quadrats"
    shutil.copytree(samples / "quadrats", quadrats)

    prototypes = tmp_path / "prototypes.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "prototypes", "build", "--images", training, "--backbone", BACKBONE,
                             "--k", 3, "--input", 56, "--niter", 10, "--nredo", 2, "--out", prototypes,
                             "--allow-random-weights")
    assert code == 0, err
    provenance = json.loads(prototypes.with_suffix(".json").read_text())
    assert provenance["k"] == 3 and provenance["dim"] == 384 and "adjusted_rand_index" in provenance

    run_dir = tmp_path / "run"
    tiling = ["--photo-size", "256x128", "--crop", 32, "--crop-input", 28]
    code, out, err = run_cli(monkeypatch, capsys, "train", "prototype-vit", "--quadrats", quadrats, "--prototypes",
                             prototypes, "--epochs", 2, "--out", run_dir, *tiling, "--backbone", BACKBONE,
                             "--depth", 1, "--heads", 2, "--accumulation", 2, "--probe", 2, "--allow-random-weights")
    assert code == 0, err
    run = RunFolder(run_dir)
    assert [r.epoch for r in run.epochs()] == [1, 2]
    assert run.epoch(2).steps == 4  # 4 quadrats, 2 per update, 2 epochs

    torch.manual_seed(3)
    classifier = tmp_path / "classifier.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict(), str(classifier))
    mapping = tmp_path / "classes.csv"
    mapping.write_text("class_index,species_id,name\n0,1395807,Poa annua\n1,1741880,Trifolium repens\n"
                       "2,1392323,Bellis perennis\n")
    out_dir = tmp_path / "species"
    code, out, err = run_cli(monkeypatch, capsys, "species", quadrats, "--run", run_dir, "--epoch", 1,
                             "--classifier", "test_resnet", "--classifier-weights", classifier,
                             "--class-mapping", mapping, "--grid", 3, "--classifier-input", 32, "--prob", 0.4,
                             "--threshold", 0.6, "--out", out_dir, "--allow-random-weights")
    assert code == 0, err
    predicted = read_species_csv(out_dir / "submission.csv")
    assert sorted(predicted) == sorted(p.stem for p in quadrats.iterdir())
    assert all(1 <= len(ids) for ids in predicted.values())  # the fallback guarantees one species per quadrat
    assert (out_dir / "moss_carpet.mask.png").is_file() and (out_dir / "moss_carpet.species.json").is_file()

    truth = tmp_path / "truth.csv"
    truth.write_text("quadrat_id,species_ids,transect\n"
                     'forest_floor,"[1395807]",A\nforget_me_not,"[1741880; 1392323]",A\n'
                     'green_meadow,"[1395807, 1741880]",B\nmoss_carpet,[],B\n')
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "species", "--pred", out_dir / "submission.csv",
                             "--truth", truth, "--json", tmp_path / "scores.json")
    assert code == 0, err
    expected = {"forest_floor": ["1395807"], "forget_me_not": ["1741880", "1392323"],
                "green_meadow": ["1395807", "1741880"], "moss_carpet": []}
    f1s = {q: set_f1(predicted[q], ids) for q, ids in expected.items()}
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert abs(scores["f1"] - sum(f1s.values()) / 4) < 1e-9
    transect = ((f1s["forest_floor"] + f1s["forget_me_not"]) / 2 + (f1s["green_meadow"] + f1s["moss_carpet"]) / 2) / 2
    assert abs(scores["f1_transect"] - transect) < 1e-9
