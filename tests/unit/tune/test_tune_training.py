"""Training recipe on a small synthetic data set: artifacts round-trip, CV schemes, row filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tune.errors import DataError
from tune.predict.perfdata import data_hash, load_measured
from tune.predict.predictor import Predictor
from tune.predict.roofline import roofline
from tune.predict.training import SCHEMES, cross_validate, train, usable_rows
from tune.predict.workload import resolve

SMALL = {"n_estimators": 20, "max_depth": 3}


def synthetic(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Rows whose 'measurements' are a known distortion of the roofline, with 5% noise."""
    rng = np.random.default_rng(seed)
    models = ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-32B", "openai/gpt-oss-120b"]
    systems = ["h100_sxm", "h200_sxm", "b200_sxm"]
    frame = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "backend": rng.choice(["vllm", "sglang"], n),
        "model_path": rng.choice(models, n), "system": rng.choice(systems, n),
        "isl": rng.choice([512, 1024, 4096], n), "osl": rng.choice([128, 1024], n),
        "batch_size": rng.choice([1, 4, 16, 64], n), "tp_size": rng.choice([2, 4, 8], n),
    })
    _, physics = resolve(frame)
    r = roofline(physics)
    noise = np.exp(rng.normal(0, 0.05, (2, n)))
    frame["silicon_ttft_ms"] = (30 + 2.0 * r.ttft_ms + 0.5 * r.ttft_queued_ms) * noise[0]
    frame["silicon_tpot_ms"] = (1.5 + 1.8 * r.tpot_ms) * noise[1]
    return frame


def test_train_save_load_round_trip(tmp_path: Path):
    data = synthetic()
    predictor = train(data, params=SMALL)
    files = predictor.save(tmp_path)
    assert sorted(p.name for p in files) == ["metadata.json", "tpot.json", "ttft.json",
                                             "ttft_seen.json"]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["training_rows"] == len(data)
    assert meta["training_data_sha256"] == data_hash(data.sample(frac=1, random_state=1))
    loaded = Predictor.load(tmp_path)
    a, b = predictor.predict(data), loaded.predict(data)
    np.testing.assert_allclose(a["pred_tpot_ms"], b["pred_tpot_ms"], rtol=1e-5)
    ape = np.abs(a["pred_tpot_ms"] / data["silicon_tpot_ms"] - 1)
    assert ape.mean() < 0.10  # the calibrated physics captures the known distortion


def test_training_is_reproducible():
    data = synthetic(120)
    a = train(data, params=SMALL, seed=3).predict(data)
    b = train(data, params=SMALL, seed=3).predict(data)
    pd.testing.assert_frame_equal(a, b)


def test_cross_validation_reports_every_scheme_and_metric():
    report = cross_validate(synthetic(), params=SMALL)
    assert tuple(report.results) == SCHEMES
    for scheme in SCHEMES:
        for target in ("ttft", "tpot"):
            m = report.results[scheme][target]
            assert set(m) == {"mape", "median_ape", "p90_ape", "signed_mean_error",
                              "p90_coverage", "n"}
            assert m["n"] == 240 and 0 <= m["median_ape"] <= m["mape"] < 50
            assert m["median_ape"] <= m["p90_ape"]
            assert 70 <= m["p90_coverage"] <= 100  # a 90% bound covers about 90% held out
    assert set(report.groups["leave_one_gpu_out"]) == {"h100_sxm", "h200_sxm", "b200_sxm"}
    assert len(report.table_rows()) == 6
    for scheme in SCHEMES:
        picking = report.picking[scheme]
        assert picking["groups"] > 0
        assert picking["met_slo_pct"] >= 80  # 5% noise: the picks hold by the "measured" truth


def test_usable_rows_skips_unknown_models_and_systems():
    data = synthetic(30)
    data.loc[0, "system"] = "tpu_v5"
    data.loc[1, "model_path"] = "foundry-tiny"
    kept, skipped = usable_rows(data)
    assert len(kept) == 28 and len(skipped) == 2
    assert any("system='tpu_v5'" in line for line in skipped)


def test_load_measured_reads_every_measured_csv_and_skips_others(tmp_path: Path):
    synthetic(10).to_csv(tmp_path / "a.csv", index=False)
    synthetic(5, seed=1).to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "argonne.csv").write_text("Hardware,Latency\nA100,1.0\n")
    frame = load_measured(tmp_path)
    assert len(frame) == 15 and set(frame["source"]) == {"a.csv", "b.csv"}
    with pytest.raises(DataError, match="no CSV"):
        load_measured(tmp_path / "argonne.csv")
    with pytest.raises(DataError, match="no such"):
        load_measured(tmp_path / "missing")


def test_engine_offsets_carry_an_engine_over_to_unseen_models():
    """An engine measured 2x slower than the physics on some models is predicted 2x slower on
    a model it was never measured on (the offset lives in the calibration, not in the damped
    learned residual)."""
    data = synthetic(360, seed=4)
    slow = (data["backend"] == "sglang").to_numpy()
    data.loc[slow, "silicon_ttft_ms"] *= 2.0
    held_out = data["model_path"] == "openai/gpt-oss-120b"
    predictor = train(data[~held_out], params=SMALL)
    offsets = predictor.calibration.engine_offsets["ttft"]
    # shrunk towards no offset by ENGINE_SHRINK_ROWS: ~120 rows per engine keep ~70% of it
    assert 0.5 * np.log(2.0) < offsets["sglang"] - offsets["vllm"] <= np.log(2.0)
    pred = predictor.predict(data[held_out])
    assert set(pred["pred_case"]) == {"unseen_model"}
    sglang = (pred["backend"] == "sglang").to_numpy()
    ratio = np.median(pred["pred_ttft_ms"][sglang]) / np.median(pred["pred_ttft_ms"][~sglang])
    measured = data.loc[held_out, "silicon_ttft_ms"].to_numpy()
    truth = np.median(measured[sglang]) / np.median(measured[~sglang])
    assert ratio == pytest.approx(truth, rel=0.25)


def test_an_engine_without_training_rows_gets_no_offset():
    from tune.predict.features import build_features
    from tune.predict.predictor import engine_keys

    calibration = train(synthetic(120), params=SMALL).calibration  # vllm and sglang rows only
    assert set(calibration.engine_offsets["ttft"]) == {"sglang", "vllm"}
    feats = build_features(synthetic(20, seed=5).assign(backend="trtllm"))
    for target in ("ttft", "tpot"):
        np.testing.assert_allclose(
            calibration.estimate(target, feats.physics, feats.roofline, engine_keys(feats.frame)),
            calibration.estimate(target, feats.physics, feats.roofline))


def test_version_2_artifacts_without_engine_offsets_still_load(tmp_path: Path):
    predictor = train(synthetic(120), params=SMALL)
    predictor.save(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["calibration"].pop("engine_offsets")
    meta["artifact_version"] = 2
    meta["unseen_residual_weight"] = 0.5  # version 2 stored one weight for both targets
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    loaded = Predictor.load(tmp_path)
    assert loaded.calibration.engine_offsets == {}
    assert (loaded.predict(synthetic(10, seed=6))["pred_ttft_ms"] > 0).all()


def test_unseen_rows_damp_the_learned_residual_per_target():
    from tune.predict.features import build_features
    from tune.predict.predictor import engine_keys

    data = synthetic(240, seed=7)
    held_out = data["model_path"] == "openai/gpt-oss-120b"
    predictor = train(data[~held_out], params=SMALL)
    predictor.metadata["unseen_residual_weight"] = {"ttft": 0.0, "tpot": 1.0}
    feats = build_features(data[held_out])
    log_pred, cases = predictor.raw_log_predict(feats)
    assert set(cases) == {"unseen_model"}
    calibrated = predictor.calibration.estimate("ttft", feats.physics, feats.roofline,
                                                engine_keys(feats.frame))
    np.testing.assert_allclose(log_pred["ttft"], np.log(calibrated), rtol=1e-6)
    tpot = predictor.calibration.estimate("tpot", feats.physics, feats.roofline,
                                          engine_keys(feats.frame))
    assert np.abs(log_pred["tpot"] - np.log(tpot)).max() > 1e-3  # the full residual


def test_seen_rows_are_predicted_by_their_own_booster(tmp_path: Path):
    """A target with seen parameters gets a second booster: rows of a trained architecture and
    GPU use it, unseen rows the first one (damped); both survive save and load."""
    from tune.predict.features import build_features
    from tune.predict.predictor import engine_keys

    data = synthetic(240, seed=8)
    held_out = data["model_path"] == "openai/gpt-oss-120b"
    predictor = train(data[~held_out], params=SMALL,
                      seen_params={"ttft": {"max_depth": 6, "n_estimators": 60}})
    assert set(predictor.seen_boosters) == {"ttft"}
    predictor.save(tmp_path)
    assert not (tmp_path / "tpot_seen.json").exists()
    loaded = Predictor.load(tmp_path)
    assert set(loaded.seen_boosters) == {"ttft"}
    feats = build_features(data)
    log_pred, cases = loaded.raw_log_predict(feats)
    seen = cases == "seen"
    assert seen.any() and set(cases[~seen]) == {"unseen_model"}
    base = np.log(loaded.calibration.estimate("ttft", feats.physics, feats.roofline,
                                              engine_keys(feats.frame)))
    x = np.column_stack([feats.matrix, base]).astype(np.float32)
    own = loaded.seen_boosters["ttft"].inplace_predict(x)
    shared = loaded.boosters["ttft"].inplace_predict(x)
    assert np.abs(own - shared)[seen].max() > 1e-3  # two different boosters
    np.testing.assert_allclose(log_pred["ttft"][seen], (base + own)[seen], rtol=1e-5)
    weight = loaded.residual_weights(cases, "ttft")
    np.testing.assert_allclose(log_pred["ttft"][~seen], (base + weight * shared)[~seen],
                               rtol=1e-5)


def test_version_3_artifacts_with_one_booster_per_target_still_load(tmp_path: Path):
    data = synthetic(120)
    predictor = train(data, params=SMALL, seen_params={})
    assert predictor.seen_boosters == {}
    predictor.save(tmp_path)
    assert not (tmp_path / "ttft_seen.json").exists()
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta.pop("seen_boosters")
    meta["artifact_version"] = 3
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    loaded = Predictor.load(tmp_path)
    assert loaded.seen_boosters == {}
    pd.testing.assert_frame_equal(loaded.predict(data), predictor.predict(data),
                                  check_exact=False, rtol=1e-5)
