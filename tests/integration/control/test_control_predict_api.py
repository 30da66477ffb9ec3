"""POST /predict and GET /predict/status: the optimizer's predictions with the active version."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from control.app import create_app
from control.keys import bootstrap_admin
from serve.metrics.store import ChdbStore
from tune.predict.predictor import ARTIFACT_DIR, ArtifactStore, Predictor

ROW = {"model_path": "Qwen/Qwen3-32B", "system": "h100_sxm", "isl": 1024, "osl": 256, "batch_size": 8,
       "tp_size": 2}


@pytest.fixture
async def api(database_url: str, tmp_path, monkeypatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    store = ChdbStore(str(tmp_path / "metrics"))
    admin = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=store)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control", headers={"Authorization": f"Bearer {admin}"}
    ) as client:
        yield client
    await store.close()


async def test_predict_rows_with_the_active_version(api: httpx.AsyncClient, tmp_path) -> None:
    r = await api.post("/predict", json={"rows": [ROW, ROW | {"system": "tpu_v5"}, ROW | {"system": "l40s", "tp_size": 8}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "shipped"
    assert [d["row"] for d in body["data"]] == [0, 2]
    assert body["data"][0]["pred_case"] == "seen" and body["data"][1]["pred_case"] == "unseen_gpu"
    assert body["data"][0]["pred_ttft_ms_p90"] > body["data"][0]["pred_ttft_ms"] > 0
    assert body["invalid"] == [{"row": 1, "message": body["invalid"][0]["message"]}]
    assert "tpu_v5" in body["invalid"][0]["message"]

    ArtifactStore((tmp_path / "home") / "tune").add(Predictor.load(ARTIFACT_DIR))  # a new version
    again = (await api.post("/predict", json={"rows": [ROW]})).json()
    assert again["version"] == "v0001"
    assert again["data"][0]["pred_tpot_ms"] == pytest.approx(body["data"][0]["pred_tpot_ms"])
    status = (await api.get("/predict/status")).json()
    assert status["version"] == "v0001" and status["training_rows"] > 0
    assert set(status["cross_validation"]) == {"random", "leave_one_model_out", "leave_one_gpu_out"}


async def test_bad_requests_are_400_in_the_error_shape(api: httpx.AsyncClient) -> None:
    for body in ({"rows": []}, {"rows": [ROW], "risk": 1.5}, {"rows": [ROW], "extra": 1}, {"rows": [{"isl": 1}]}):
        r = await api.post("/predict", json=body)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_the_published_schema_says_which_columns_a_row_needs(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]["PredictRow"]
    assert set(schema["required"]) == {"model_path", "system", "isl", "osl", "batch_size", "tp_size"}
    assert schema["additionalProperties"] is False
    for row, param in (({}, "rows.0.model_path"), (ROW | {"isl": 0}, "rows.0.isl"), (ROW | {"islx": 1}, "rows.0.islx"),
                       (ROW | {"tp_size": True}, "rows.0.tp_size")):  # fmt: skip
        r = await api.post("/predict", json={"rows": [row]})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    # rows giving different optional columns: the ones a row leaves out take their defaults
    r = await api.post("/predict", json={"rows": [ROW | {"pp_size": 2, "id": "a"}, ROW | {"moe_ep_size": 0}]})
    assert r.status_code == 200, r.text
    assert [d["row"] for d in r.json()["data"]] == [0, 1] and r.json()["invalid"] == []


async def test_predict_needs_an_admin_key(api: httpx.AsyncClient) -> None:
    r = await api.post("/predict", json={"rows": [ROW]}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
