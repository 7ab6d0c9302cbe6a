"""Property-based fuzz of the live HTTP API: no request, however malformed, gets a 5xx, and every
accepted one gets the library's own answer."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from learec.config import load_config
from learec.models.ranking import RankingModel
from learec.serve.api import ServeSettings, background_server, create_app
from learec.serve.catalog import ItemCatalog
from learec.serve.recommender import Recommender

# A string catalogue with numeric-looking, empty, blank and non-ASCII ids: the awkward cases.
IDS = [str(i) for i in range(25)] + ["sku-a", "sku-b", "", " ", "ünï"]
LIMITS = ServeSettings(max_k=20, max_history=40, max_batch=5, max_body_bytes=20_000)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module")
def rec() -> Recommender:
    cfg = load_config(None, ["model.backbone=sasrec", "model.hidden=8", "data.history=4"])
    catalog = ItemCatalog(IDS, [f"item {i}" for i in IDS], [float(i % 7) for i in range(len(IDS))])
    return Recommender(RankingModel.from_config(cfg, len(IDS)), catalog)


@pytest.fixture(scope="module")
def client(rec):
    with background_server(create_app(rec, LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
item_ids = (st.sampled_from(IDS) | st.integers(-3, 30) | st.sampled_from(IDS).map(lambda i: int(i) if i.isdigit() else i)
            | st.text(max_size=10) | json_values)
fields = {
    "history": st.lists(item_ids, max_size=45) | json_values,
    "k": st.integers(-2, 25) | json_values,
    "exclude_seen": st.booleans() | json_values,
    "unknown_items": st.sampled_from(["error", "drop"]) | json_values,
}
known_ids = st.sampled_from(IDS) | st.integers(0, 24)
# Mostly well-formed: known ids (as strings or integers), sometimes an unknown one, k near its limits.
well_formed = st.fixed_dictionaries(
    {"history": st.lists(known_ids | st.just("unknown-id"), max_size=45)},
    optional={"k": st.integers(0, 21), "exclude_seen": st.booleans(), "unknown_items": st.sampled_from(["error", "drop"])})
near_valid = st.tuples(st.fixed_dictionaries({}, optional=fields),
                       st.dictionaries(st.text(max_size=8), json_values, max_size=2)).map(lambda t: {**t[1], **t[0]})
bodies = well_formed | near_valid | json_values


def _expected(rec: Recommender, body: dict) -> dict:
    return rec.recommend(body["history"], body.get("k", 10), body.get("exclude_seen", False),
                         body.get("unknown_items", "error")).to_dict()


def _check(r: httpx.Response) -> None:
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def _same(got: dict, expected: dict) -> None:
    scores = [i.pop("score") for i in got["items"]], [i.pop("score") for i in expected["items"]]
    assert got == expected and scores[0] == pytest.approx(scores[1], rel=1e-5, abs=1e-5)


@FUZZ
@given(body=bodies)
def test_recommend_never_5xx_and_accepted_bodies_get_the_library_answer(client, rec, body):
    r = client.post("/recommend", content=json.dumps(body), headers={"content-type": "application/json"})
    _check(r)
    if r.status_code == 200:
        _same(r.json(), _expected(rec, body))


@FUZZ
@given(body=st.fixed_dictionaries({"requests": st.lists(well_formed, max_size=6)})
       | st.fixed_dictionaries({"requests": st.lists(well_formed | near_valid, max_size=6)}) | json_values)
def test_batch_never_5xx(client, rec, body):
    r = client.post("/recommend/batch", content=json.dumps(body), headers={"content-type": "application/json"})
    _check(r)
    if r.status_code == 200:
        for got, one in zip(r.json()["results"], body["requests"], strict=True):
            _same(got, _expected(rec, one))


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_raw_bytes_never_5xx(client, raw, content_type):
    _check(client.post("/recommend", content=raw, headers={"content-type": content_type}))


@FUZZ
@given(item=st.sampled_from(IDS) | st.text(max_size=30))
def test_items_lookup_never_5xx(client, rec, item):
    r = client.get("/items/" + quote(item, safe=""))
    _check(r)
    if r.status_code == 200:
        assert r.json()["text"] == f"item {item}"
