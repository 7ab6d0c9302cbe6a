"""Serving: export -> load gives the trained model's scores; recommend semantics; CLI; the live HTTP API."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import learec
from learec.cli import main
from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError
from learec.evaluate.evaluator import evaluate
from learec.models.ranking import RankingModel
from learec.serve.api import MicroBatcher, ServeSettings, background_server, create_app
from learec.serve.catalog import ItemCatalog, UnknownItemsError
from learec.serve.export import export_run
from learec.serve.recommender import Query, Recommender
from learec.train.run import objective_for, train_run

SMALL = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16", "train.batch_size=64",
         "train.threads=1", "train.progress=false", "train.patience=0", "eval.batch_size=512", "train.epochs=1"]

# Every backbone and every objective at least once, plus a tied head, Q-head ranking and popularity.
RUNS = {
    "sasrec-ce": ["model.backbone=sasrec", "train.epochs=2", "train.lr=0.01"],
    "gru4rec-ce-tied": ["model.backbone=gru4rec", "model.tie_head=true"],
    "caser-sqn-qhead": ["model.backbone=caser", "objective=sqn", "rl.rank_by=q"],
    "nextitnet-sac": ["model.backbone=nextitnet", "objective=sac"],
    "gru4rec-snqn": ["model.backbone=gru4rec", "objective=snqn"],
    "sasrec-sa2c": ["model.backbone=sasrec", "objective=sa2c", "rl.warmup_steps=2"],
    "pop": ["model.backbone=pop", "train.epochs=0"],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEAREC_DATA_DIR", str(root / "data"))
        generate_synthetic_log(raw_dir("synthetic"), n_users=150, n_items=40)
        yield root


@pytest.fixture(scope="module")
def trained(data_dir):
    """``trained(name)`` -> the run directory of RUNS[name], trained once per module."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            run = data_dir / "runs" / name
            train_run(load_config(None, [*SMALL, *RUNS[name]]), run)
            cache[name] = run
        return cache[name]

    return get


@pytest.fixture(scope="module")
def model_dir(trained, data_dir) -> Path:
    out = data_dir / "models" / "sasrec-ce"
    export_run(trained("sasrec-ce"), out)
    return out


@pytest.fixture(scope="module")
def rec(model_dir) -> Recommender:
    return Recommender.from_pretrained(model_dir)


def _run_scorer(run: Path):
    """The run's own ranking network and data, loaded the way `learec evaluate` loads them."""
    cfg = load_config(run / "config.yaml")
    data = prepare(cfg.data, log=lambda *_: None)
    objective = objective_for(cfg, data)
    if objective.trainable:
        objective.scorer().load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True))
    scorer = objective.scorer()
    scorer.eval()
    return cfg, data, scorer


def _same(got: dict, expected: dict) -> bool:
    """Same answer up to float noise: a query ranked in a batch may differ from one ranked alone by ~1e-7."""
    scores = [i.pop("score") for i in got["items"]], [i.pop("score") for i in expected["items"]]
    return got == expected and scores[0] == pytest.approx(scores[1], rel=1e-5, abs=1e-5)


# --- export -> load ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RUNS))
def test_export_load_gives_the_trained_models_scores(name, trained, data_dir):
    run = trained(name)
    out = data_dir / "exports" / name
    export_run(run, out)
    assert {p.name for p in out.iterdir()} == {"learec_model.json", "ranking_model.json", "train_config.yaml",
                                               "model.safetensors", "items.json"}
    loaded = learec.Recommender.from_pretrained(out)

    cfg, data, scorer = _run_scorer(run)
    test = data.test
    real = np.flatnonzero(test.history[:, 0] != data.n_items)[:300]  # rows with a non-empty history
    hist = torch.as_tensor(np.asarray(test.history[real]), dtype=torch.long)
    length = torch.as_tensor(np.asarray(test.length[real]), dtype=torch.long)
    with torch.no_grad():
        expected = scorer(hist, length)
    ids = data.sequences.item_ids
    # Original ids, as strings on even rows and as integers on odd rows: both must resolve alike.
    histories = [[ids[j] if r % 2 == 0 else int(ids[j]) for j in h[:n]]
                 for r, (h, n) in enumerate(zip(hist.tolist(), length.tolist()))]
    torch.testing.assert_close(loaded.scores(histories), expected, atol=1e-6, rtol=0)

    # The exported network reproduces the run's test metrics, so it is the best checkpoint.
    metrics, _ = evaluate(loaded.model, test, data.event_types, cfg.eval.ks, 512)
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics == pytest.approx(saved, abs=1e-9)

    # And the served top-k is the top-k of the run's scores (ties by item index).
    answer = loaded.recommend(histories[0], k=5)
    order = torch.sort(expected[0], descending=True, stable=True).indices[:5].tolist()
    assert [item["id"] for item in answer.items] == [int(ids[j]) for j in order]


def test_export_leaves_training_only_weights_and_refuses_what_it_cannot_reproduce():
    from torch import nn

    cfg = load_config(None, ["objective=sqn", "model.backbone=gru4rec", "model.hidden=8", "data.history=4"])
    trained = RankingModel.from_config(cfg, 12)
    trained.network.le_proj = nn.Linear(3, 8)  # a critic-only part, as the LE-augmented objectives add
    served = trained.for_serving()
    assert "network.le_proj.weight" not in served.state_dict()
    assert torch.equal(served.network.ce_head.weight, trained.network.ce_head.weight)

    class Shifted(RankingModel):  # ranks with something beyond backbone + head
        def forward(self, histories, lengths):
            return super().forward(histories, lengths) + histories[:, :1].float()

    with pytest.raises(UserError, match="does not reproduce the run's scores"):
        Shifted(trained.network, "ce", cfg).for_serving()


def test_save_pretrained_round_trips(rec, tmp_path):
    rec.save_pretrained(tmp_path / "copy")
    again = Recommender.from_pretrained(tmp_path / "copy")
    histories = [[1, 2, 3], [5], list(range(12))]
    assert torch.equal(again.scores(histories), rec.scores(histories))
    assert again.catalog.ids == rec.catalog.ids and again.catalog.text == rec.catalog.text
    assert np.array_equal(again.catalog.popularity, rec.catalog.popularity)
    assert again.manifest()["source"] == rec.manifest()["source"]


def test_string_ids_round_trip_as_strings(tmp_path):
    cfg = load_config(None, ["model.backbone=gru4rec", "model.hidden=8", "data.history=3"])
    catalog = ItemCatalog(["sku-a", "sku-b", "7", "007"], ["A", "B", "seven", "double-o seven"], [3, 1, 2, 0])
    Recommender(RankingModel.from_config(cfg, 4), catalog).save_pretrained(tmp_path / "m")
    rec = Recommender.from_pretrained(tmp_path / "m")
    assert rec.catalog.id_type == "str"
    answer = rec.recommend(["sku-a", 7], k=4)
    assert sorted(item["id"] for item in answer.items) == ["007", "7", "sku-a", "sku-b"]  # strings, all distinct
    assert rec.recommend([], k=2).items[0] == {"id": "sku-a", "score": 3.0, "text": "A"}
    with pytest.raises(UnknownItemsError, match="'sku-c'"):
        rec.recommend(["sku-c"], k=2)


def test_missing_or_wrong_model_directories_are_user_errors(tmp_path, trained):
    with pytest.raises(UserError, match="does not exist"):
        Recommender.from_pretrained(tmp_path / "nothing")
    with pytest.raises(UserError, match="is a training run, not an exported model"):
        Recommender.from_pretrained(trained("sasrec-ce"))
    with pytest.raises(UserError, match="no config.yaml"):
        export_run(tmp_path, tmp_path / "out")


def test_corrupt_weights_are_a_user_error(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="model.safetensors"):
        Recommender.from_pretrained(broken)


# --- recommend semantics -------------------------------------------------------------------------------

def test_topk_is_the_models_ranking_and_long_histories_use_the_last_L(rec):
    L = rec.history_length
    history = [3, 9, 4, 17, 21, 8, 30, 2, 11, 5, 6, 19]
    assert len(history) > L
    answer = rec.recommend(history, k=10)
    scores = rec.scores([history[-L:]])[0]
    assert [i["id"] for i in answer.items] == torch.sort(scores, descending=True, stable=True).indices[:10].tolist()
    assert [i["score"] for i in answer.items] == pytest.approx(sorted(scores.tolist(), reverse=True)[:10])
    assert answer.history_used == L and answer.fallback is None
    assert rec.recommend(history[-L:], k=10).items == answer.items
    assert answer.items[0]["text"] == rec.catalog.text[answer.items[0]["id"]]


def test_exclude_seen_removes_every_history_item(rec):
    history = [3, 9, 4, 17, 21, 8, 30, 2, 11, 5, 6, 19]  # longer than L: the early items are masked too
    answer = rec.recommend(history, k=rec.n_items, exclude_seen=True)
    ids = [i["id"] for i in answer.items]
    assert not set(ids) & set(history) and len(ids) == rec.n_items - len(set(history))
    assert "only" in answer.warnings[-1]  # fewer than k were left
    plain = [i["id"] for i in rec.recommend(history, k=rec.n_items).items]
    assert ids == [i for i in plain if i not in history]


def test_empty_history_falls_back_to_popularity(rec):
    answer = rec.recommend([], k=5)
    assert answer.fallback == "popularity" and "popularity" in answer.warnings[0]
    pop = rec.catalog.popularity
    expected = sorted(range(len(pop)), key=lambda i: (-pop[i], i))[:5]
    assert [i["id"] for i in answer.items] == expected
    assert [i["score"] for i in answer.items] == [pop[i] for i in expected]


def test_unknown_ids_raise_or_are_dropped(rec):
    with pytest.raises(UnknownItemsError) as err:
        rec.recommend([1, "nope", 999, 2])
    assert err.value.unknown == ["nope", 999] and "'nope', 999" in str(err.value)
    dropped = rec.recommend([1, "nope", 999, 2], k=3, unknown_items="drop")
    assert dropped.dropped_items == ["nope", 999] and "dropped 2 unknown" in dropped.warnings[0]
    assert dropped.items == rec.recommend([1, 2], k=3).items
    everything_unknown = rec.recommend(["x"], k=3, unknown_items="drop")
    assert everything_unknown.fallback == "popularity"
    for bad_k in (0, rec.n_items + 1, True, 2.5):
        with pytest.raises(UserError, match="k must be an integer"):
            rec.recommend([1], k=bad_k)


def test_micro_batcher_ranks_queued_queries_in_one_call():
    calls = []

    def rank(batch):
        calls.append(len(batch))
        return [f"answer {q}" for q in batch]

    async def go():
        batcher = MicroBatcher(rank, max_batch=8)
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(10)),
                                       batcher.submit([10, 11]))
        return batcher, results

    batcher, results = asyncio.run(go())
    assert results[:10] == [[f"answer {i}"] for i in range(10)] and results[10] == ["answer 10", "answer 11"]
    assert calls == [8, 4]  # two forward calls for 12 queries, none over max_batch
    assert (batcher.batches, batcher.queries) == (2, 12)


# --- CLI -----------------------------------------------------------------------------------------------

def _user_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("learec: error:")
    return err


def test_cli_export_and_recommend(trained, rec, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(trained("sasrec-ce")), "--out", str(out)]) == 0
    assert "exported sasrec/ce" in capsys.readouterr().out
    assert "already exists" in _user_error(capsys, ["export", str(trained("sasrec-ce")), "--out", str(out)])
    assert main(["export", str(trained("sasrec-ce")), "--out", str(out), "--force"]) == 0
    capsys.readouterr()

    assert main(["recommend", str(out), "--history", "3, 9,4", "-k", "4", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer == rec.recommend([3, 9, 4], k=4).to_dict()
    assert main(["recommend", str(out), "--history", "3,9,4", "-k", "2", "--exclude-seen"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["rank", "item", "score", "text"] and len(table.splitlines()) == 3
    assert main(["recommend", str(out), "--history", "", "-k", "2"]) == 0
    assert "popularity" in capsys.readouterr().out

    err = _user_error(capsys, ["recommend", str(out), "--history", "3,abc,77"])
    assert "'abc', '77'" in err and "--unknown-items drop" in err
    assert main(["recommend", str(out), "--history", "3,abc", "--unknown-items", "drop", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_items"] == ["abc"]
    assert "export it first" in _user_error(capsys, ["recommend", str(trained("sasrec-ce")), "--history", "1"])
    assert "k must be an integer" in _user_error(capsys, ["recommend", str(out), "--history", "1", "-k", "1000"])


def test_help_of_the_serving_commands():
    for command in ("export", "recommend", "serve"):
        result = subprocess.run([sys.executable, "-m", "learec", command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: learec " + command in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_learec_serve_command_answers_and_stops_on_ctrl_c(model_dir, rec):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "learec", "serve", str(model_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "learec serve did not come up"
                time.sleep(0.2)
        assert health.json()["model"]["backbone"] == "sasrec"
        r = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"history": [3, 9], "k": 3})
        assert r.status_code == 200 and _same(r.json(), rec.recommend([3, 9], k=3).to_dict())
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0


# --- the HTTP API on a live server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(rec):
    settings = ServeSettings(max_k=30, max_history=50, max_batch=8, max_body_bytes=4096)
    with background_server(create_app(rec, settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_health_and_openapi(api, rec):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["model"]["n_items"] == rec.n_items
    assert health["limits"]["max_k"] == 30
    schema = api.get("/openapi.json").json()
    assert {"/recommend", "/recommend/batch", "/items/{item_id}", "/health"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["RecommendRequest"]["properties"]
    assert request["k"]["maximum"] == 30 and request["history"]["maxItems"] == 50


def test_recommend_endpoint_matches_the_model(api, rec):
    r = api.post("/recommend", json={"history": [3, "9", 4], "k": 5})
    assert r.status_code == 200
    assert _same(r.json(), rec.recommend([3, 9, 4], k=5).to_dict())
    assert all(isinstance(i["id"], int) and i["text"] for i in r.json()["items"])
    seen = api.post("/recommend", json={"history": [3, 9, 4], "k": 30, "exclude_seen": True}).json()
    assert not {3, 9, 4} & {i["id"] for i in seen["items"]}


def test_unknown_ids_are_named_or_dropped(api):
    r = api.post("/recommend", json={"history": [3, "no-such-item", 12345], "k": 3})
    assert r.status_code == 422
    assert r.json()["unknown_items"] == ["no-such-item", 12345] and "no-such-item" in r.json()["detail"]
    r = api.post("/recommend", json={"history": [3, "no-such-item"], "k": 3, "unknown_items": "drop"})
    assert r.status_code == 200 and r.json()["dropped_items"] == ["no-such-item"] and r.json()["warnings"]


def test_empty_history_is_a_flagged_popularity_answer(api, rec):
    body = api.post("/recommend", json={"history": [], "k": 3}).json()
    assert body["fallback"] == "popularity" and _same(body, rec.recommend([], k=3).to_dict())


@pytest.mark.parametrize("body, field", [
    ({"history": [1], "k": 0}, "k"),
    ({"history": [1], "k": 31}, "k"),  # over max_k
    ({"history": [1], "k": "5"}, "k"),
    ({"history": [1], "k": 2.0}, "k"),
    ({"history": [1], "k": None}, "k"),
    ({"history": "1,2", "k": 3}, "history"),
    ({"history": [1, True]}, "history.1"),
    ({"history": [1, 2.5]}, "history.1"),
    ({"history": [[1]]}, "history.0"),
    ({"history": ["x" * 300]}, "history.0"),
    ({"history": list(range(51))}, "history"),  # over max_history
    ({"history": [1], "exclude_seen": "yes"}, "exclude_seen"),
    ({"history": [1], "unknown_items": "ignore"}, "unknown_items"),
    ({"history": [1], "K": 3}, "K"),  # a typo is an error, not silently ignored
    ({"k": 3}, "history"),
    ([1, 2], "body"),
])
def test_bad_requests_get_422_naming_the_field(api, body, field):
    r = api.post("/recommend", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid request: ") and f"{field}:" in detail, detail


def test_malformed_and_oversized_bodies(api):
    r = api.post("/recommend", content=b'{"history": [1,', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON decode error" in r.json()["detail"]
    r = api.post("/recommend", content=b'{"history": [1]}', headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    big = json.dumps({"history": ["a" * 200] * 30}).encode()  # 6 KB > the 4 KB limit
    r = api.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        for _ in range(10):
            yield b" " * 1000

    r = api.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert api.post("/recommend", json={"history": [1]}).status_code == 200  # the server is still fine


def test_items_endpoint(api, rec):
    r = api.get("/items/3")
    assert r.status_code == 200 and r.json() == {"id": 3, "text": rec.catalog.text[3],
                                                 "popularity": float(rec.catalog.popularity[3])}
    for missing in ("999", "abc", "a/b", "%00"):
        r = api.get(f"/items/{missing}")
        assert r.status_code == 404 and "unknown item id" in r.json()["detail"]


def test_batch_endpoint(api, rec):
    queries = [{"history": [3, 9], "k": 2}, {"history": [], "k": 3}, {"history": [5], "k": 4, "exclude_seen": True}]
    r = api.post("/recommend/batch", json={"requests": queries})
    assert r.status_code == 200
    expected = [rec.recommend(q["history"], q["k"], q.get("exclude_seen", False)).to_dict() for q in queries]
    assert all(_same(got, want) for got, want in zip(r.json()["results"], expected, strict=True))
    r = api.post("/recommend/batch", json={"requests": [{"history": [1]}, {"history": ["zz"]}, {"history": ["yy"]}]})
    assert r.status_code == 422 and r.json()["unknown_items"] == [{"index": 1, "ids": ["zz"]}, {"index": 2, "ids": ["yy"]}]
    assert "requests[1]" in r.json()["detail"]
    r = api.post("/recommend/batch", json={"requests": [{"history": [1]}] * 9})  # over max_batch
    assert r.status_code == 422 and "requests:" in r.json()["detail"]
    assert api.post("/recommend/batch", json={"requests": []}).json() == {"results": []}


def test_concurrent_requests_each_get_their_own_answer(api, rec):
    histories = [[i % rec.n_items, (3 * i + 1) % rec.n_items] for i in range(64)]

    async def go():
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30,
                                     limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*(client.post("/recommend", json={"history": h, "k": 5}) for h in histories))

    before = api.get("/health").json()["micro_batches"]
    responses = asyncio.run(go())
    after = api.get("/health").json()["micro_batches"]
    assert all(r.status_code == 200 for r in responses)
    batch = rec.recommend_batch([Query(h, 5) for h in histories])
    assert all(_same(r.json(), b.to_dict()) for r, b in zip(responses, batch, strict=True))
    assert after["queries"] - before["queries"] == 64
    assert after["forward_calls"] - before["forward_calls"] <= 64


def test_recommender_is_exposed_lazily():
    assert learec.Recommender is Recommender
    code = "import sys, learec; assert 'torch' not in sys.modules and 'learec.serve' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # `import learec` stays cheap
