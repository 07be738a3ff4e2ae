"""The HTTP server (lit_matching.serving.http): the real server on 127.0.0.1, spoken to over HTTP.

Every answer is compared with ``Retriever.recommend_for`` in this process on the same export.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import uvicorn
from helpers import synthetic_log

from lit_matching import (
    Categorical,
    FeatureTower,
    GRUTower,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MultiInterestTower,
    Numeric,
)
from lit_matching.serving.batching import Batcher
from lit_matching.serving.from_training import export_retriever
from lit_matching.serving.http import Server, create_app
from lit_matching.serving.requests import UserRequest
from lit_matching.serving.retriever import Retriever

TIMEOUT = 30  # seconds: any single HTTP exchange, server start or stop


# ------------------------------------------------------------------ exports and servers
def tower_export(directory, user_tower):
    """An untrained model with ``user_tower`` (history of 5) over the synthetic log, exported."""
    pl.seed_everything(0, verbose=False)
    dm = MatchingDataModule(interactions=synthetic_log(), history_length=5)
    model = ListwiseMatching(user_tower(dm), IDEmbeddingTower(dm.num_items, 8))
    return export_retriever(model, dm, directory)


@pytest.fixture(scope="module")
def gru_dir(tmp_path_factory):
    return tower_export(
        tmp_path_factory.mktemp("gru") / "export", lambda dm: GRUTower(dm.num_items, 8)
    )


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory):
    return tower_export(
        tmp_path_factory.mktemp("multi") / "export",
        lambda dm: MultiInterestTower(dm.num_items, 8, num_interests=3),
    )


@contextlib.contextmanager
def running(retriever, directory=None, **options):
    """The real uvicorn server in a thread on a free port of 127.0.0.1; yields (url, app)."""
    app = create_app(retriever, directory, **options)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while server.url is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.url is not None, "the server did not start"
        yield server.url, app
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def gru_server(gru_dir):
    with running(Retriever.load(gru_dir), gru_dir) as (url, app):
        yield url, app


def call(url, path, body=None):
    """(status, JSON answer) of a GET (no body) or a POST (an object, or raw bytes)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def expected(retriever, **request):
    return retriever.recommend_for(**request).to_json()


def assert_same(answer, reference):
    """Same items in the same order; scores equal up to float noise of batched tower runs."""
    assert answer["items"] == reference["items"]
    np.testing.assert_allclose(answer["scores"], reference["scores"], rtol=1e-5, atol=1e-6)
    rest = {key: value for key, value in answer.items() if key not in ("items", "scores")}
    assert rest == {
        key: value for key, value in reference.items() if key not in ("items", "scores")
    }


# ------------------------------------------------------------------ /recommend
def test_known_user_fresh_history_unknown_user_and_cold_user(gru_server, gru_dir):
    url, _ = gru_server
    reference = Retriever.load(gru_dir)
    status, stored = call(url, "/recommend", {"user_id": "u3", "k": 5})
    assert status == 200 and stored["source"] == "stored" and len(stored["items"]) == 5
    assert_same(stored, expected(reference, user_id="u3", k=5))
    assert stored["items"] == reference.recommend("u3", k=5).item_id.tolist()

    history = [0, 10, 20, 150, 160]
    status, fresh = call(url, "/recommend", {"user_id": "u3", "history": history, "k": 5})
    assert status == 200 and fresh["source"] == "computed"
    assert_same(fresh, expected(reference, user_id="u3", history=history, k=5))
    assert fresh["items"] != stored["items"]
    everything = call(url, "/recommend", {"user_id": "u3", "history": history, "k": 1000})[1]
    assert not set(history) & set(everything["items"])  # the history's items are not returned

    status, anyone = call(url, "/recommend", {"user_id": "new", "history": [10, 999, "x"]})
    assert status == 200 and anyone["source"] == "computed" and anyone["user_id"] == "new"
    assert anyone["num_dropped"] == 2 and anyone["dropped_items"] == [999, "x"]
    assert_same(anyone, expected(reference, user_id="new", history=[10, 999, "x"]))
    assert len(anyone["items"]) == 10  # default_k

    status, cold = call(url, "/recommend", {"user_id": "nobody", "k": 4, "exclude": [0]})
    assert status == 200 and cold["source"] == "popular"
    popular = [reference.item_ids[i] for i in reference.popular_order if i != 0][:4]
    assert cold["items"] == popular
    assert_same(cold, expected(reference, user_id="nobody", k=4, exclude=[0]))
    status, nobody = call(url, "/recommend", {})
    assert status == 200 and nobody["source"] == "popular" and nobody["user_id"] is None


def test_exclude_and_exclude_seen(gru_server, gru_dir):
    url, _ = gru_server
    reference = Retriever.load(gru_dir)
    request = {"user_id": "u1", "k": 30, "exclude_seen": False, "exclude": [10, 20]}
    status, answer = call(url, "/recommend", request)
    assert status == 200 and not {10, 20} & set(answer["items"])
    assert_same(answer, expected(reference, **request))
    seen = set(reference.recommend("u1", k=30, exclude_seen=False).item_id) - set(
        reference.recommend("u1", k=30).item_id
    )
    assert seen and seen <= set(answer["items"]) | {10, 20}


def test_multi_interest_user(multi_dir):
    reference = Retriever.load(multi_dir)
    assert reference.interests == 3
    with running(Retriever.load(multi_dir)) as (url, _):
        for request in (
            {"user_id": "u2", "k": 6},
            {"user_id": "u2", "history": [10, 20, 30], "k": 6},
            {"history": [150, 160]},
        ):
            status, answer = call(url, "/recommend", request)
            assert status == 200, answer
            assert_same(answer, expected(reference, **request))


# ------------------------------------------------------------------ /similar_items, /health
def test_similar_items_and_health(gru_server, gru_dir):
    url, _ = gru_server
    reference = Retriever.load(gru_dir)
    status, answer = call(url, "/similar_items", {"item_id": 10, "k": 3})
    frame = reference.similar_items(10, k=3)
    assert status == 200 and answer["item_id"] == 10
    assert answer["items"] == frame.similar_item_id.tolist()
    np.testing.assert_allclose(answer["scores"], frame.score, rtol=1e-6)
    status, missing = call(url, "/similar_items", {"item_id": 12345})
    assert status == 404 and "12345" in missing["detail"]
    status, health = call(url, "/health")
    assert status == 200
    assert health == {
        "status": "ok",
        "num_users": 40,
        "num_items": 30,
        "user_tower": True,
        "item_tower": False,
        "version": health["version"],
    }
    from lit_matching import __version__

    assert health["version"] == __version__


# ------------------------------------------------------------------ malformed requests
MALFORMED = {
    "bad json": ("/recommend", b'{"user_id": "u1", ', 422, "body: the body is not valid JSON"),
    "not an object": ("/recommend", b"[1, 2]", 422, "body"),
    "wrong type": ("/recommend", {"user_id": "u1", "k": "ten"}, 422, "k"),
    "float k": ("/recommend", {"k": 2.5}, 422, "k"),
    "k zero": ("/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    "k negative": ("/similar_items", {"item_id": 10, "k": -1}, 422, "k"),
    "unknown field": ("/recommend", {"user_id": "u1", "hisstory": [1]}, 422, "hisstory"),
    "history not a list": ("/recommend", {"history": "10 20"}, 422, "history"),
    "bool id": ("/recommend", {"history": [10, True]}, 422, "history[1]"),
    "unknown feature": ("/recommend", {"user_id": "u1", "features": {"age": 3}}, 400, "age"),
    "nested feature": ("/recommend", {"features": {"age": {"a": 1}}}, 422, "features.age"),
    "no item id": ("/similar_items", {"k": 3}, 422, "item_id"),
    "no items": ("/items", {"items": []}, 422, "items"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_name_the_field_and_the_server_answers_on(gru_server, case):
    url, _ = gru_server
    path, body, code, field = MALFORMED[case]
    status, answer = call(url, path, body)
    assert status == code, answer
    assert field in answer["detail"], answer
    if code == 422:
        assert answer["detail"].startswith("invalid request: ")
        assert any(error["field"] in field for error in answer["errors"]), answer
    assert call(url, "/health")[0] == 200
    status, good = call(url, "/recommend", {"user_id": "u1", "k": 2})
    assert status == 200 and len(good["items"]) == 2


def test_items_on_an_id_only_item_tower_is_refused(gru_server):
    url, _ = gru_server
    status, answer = call(url, "/items", {"items": [{"item_id": 999, "half": 1}]})
    assert status == 400 and "item" in answer["detail"]
    assert call(url, "/health")[1]["num_items"] == 30


# ------------------------------------------------------------------ batching
REQUESTS = [
    {"user_id": "u0"},
    {"user_id": "u5", "k": 3},
    {"user_id": "u7", "history": [0, 10, 150]},
    {"history": [160, 170, 180, 190], "k": 7},
    {"user_id": "cold"},
    {"user_id": "u9", "history": [30], "exclude": [20]},
    {"history": [999]},
    {"user_id": "u11", "history": [10, 20], "exclude_seen": False, "k": 12},
]


def test_concurrent_requests_are_all_answered_as_in_process(gru_dir):
    reference = Retriever.load(gru_dir)
    answers = [expected(reference, **request) for request in REQUESTS]
    with running(Retriever.load(gru_dir), max_wait_ms=5) as (url, app):

        def client(worker):
            found = []
            for step in range(20):
                index = (worker + step) % len(REQUESTS)
                found.append((index, *call(url, "/recommend", REQUESTS[index])))
            return found

        with ThreadPoolExecutor(8) as pool:
            results = [item for found in pool.map(client, range(8)) for item in found]
        batches = app.state.batcher.batches
    assert len(results) == 160
    for index, status, answer in results:
        assert status == 200, answer
        assert_same(answer, answers[index])
    assert 0 < batches <= 160


def test_one_bad_request_does_not_fail_its_batch(gru_dir):
    retriever = Retriever.load(gru_dir)
    batcher = Batcher(lambda: retriever, max_batch_size=8, max_wait=0.5)
    requests = [
        UserRequest("u1", k=3),
        UserRequest("u1", features={"age": 3}),
        UserRequest(history=[10, 20]),
    ]

    async def main():
        async with batcher.running():
            return await asyncio.gather(
                *(batcher.submit(request) for request in requests), return_exceptions=True
            )

    good, bad, fresh = asyncio.run(main())
    assert batcher.batches == 1  # gathered together, answered alone after the failure
    assert isinstance(bad, ValueError) and "age" in str(bad)
    assert good == retriever.recommend_for("u1", k=3)
    assert fresh.item_ids == retriever.recommend_for(history=[10, 20]).item_ids
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(lambda: retriever, max_batch_size=0)


# ------------------------------------------------------------------ no torch; the CLI
def test_the_server_runs_without_torch(gru_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, sys, threading, time, urllib.request
        import uvicorn
        from lit_matching.cli import serve_command  # what `lit-matching serve` imports
        from lit_matching.serving.http import Server, create_app
        from lit_matching.serving.retriever import Retriever

        app = create_app(Retriever.load({str(gru_dir)!r}))
        server = Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(1000):
            if server.url:
                break
            time.sleep(0.02)
        request = urllib.request.Request(
            server.url + "/recommend", data=json.dumps({{"history": [10, 20]}}).encode(),
            headers={{"Content-Type": "application/json"}})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        server.should_exit = True
        thread.join(30)
        loaded = [name for name in ("torch", "pytorch_lightning") if name in sys.modules]
        print(json.dumps({{"source": answer["source"], "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=True,
    )
    assert json.loads(result.stdout.splitlines()[-1]) == {"source": "computed", "loaded": []}


def test_cli_serve_prints_its_url_and_answers(gru_dir):
    command = [sys.executable, "-m", "lit_matching.cli", "serve", str(gru_dir), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))
        reader.start()
        reader.join(120)
        assert lines and " at http://127.0.0.1:" in lines[0], process.stderr.read()
        url = lines[0].split(" at ")[-1].strip()
        assert lines[0].startswith(f"Serving {gru_dir}")
        status, answer = call(url, "/recommend", {"user_id": "u2", "k": 3})
        assert status == 200 and answer["source"] == "stored" and len(answer["items"]) == 3
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_cli_serve_refuses_bad_options(gru_dir):
    result = subprocess.run(
        [sys.executable, "-m", "lit_matching.cli", "serve", str(gru_dir), "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--max-batch-size" in result.stderr


# ------------------------------------------------------------------ /items
def feature_export(directory):
    """An untrained GRU user tower and a feature item tower (genre, price), exported."""
    pl.seed_everything(0, verbose=False)
    log = synthetic_log()
    ids = sorted(log.item_id.unique())
    items = pd.DataFrame(
        {
            "item_id": ids,
            "genre": [["jazz", "rock", "pop"][i % 3] for i in range(len(ids))],
            "price": np.linspace(1, 20, len(ids)),
        }
    )
    dm = MatchingDataModule(
        interactions=log,
        history_length=5,
        item_side_features=items,
        item_feature_specs=[Categorical("genre"), Numeric("price")],
    )
    item_tower = FeatureTower(dm.item_feature_table, 8, feature_dim=4, num_ids=dm.num_items)
    model = ListwiseMatching(GRUTower(dm.num_items, 8), item_tower)
    return export_retriever(model, dm, directory)


NEW_ITEMS = [{"item_id": 4242, "genre": "pop", "price": 3.5}, {"item_id": 10, "genre": "jazz"}]
STREAM = [
    {"user_id": "u1", "k": 31, "exclude_seen": False},
    {"user_id": "u2", "history": [0, 20], "k": 31},
    {"user_id": "cold", "k": 31},
]


def test_items_update_during_a_request_stream(tmp_path):
    directory = feature_export(tmp_path / "export")
    old = Retriever.load(directory)
    new = old.with_items(NEW_ITEMS)
    before = [expected(old, **request) for request in STREAM]
    after = [expected(new, **request) for request in STREAM]
    assert 4242 in after[0]["items"] and before[0] != after[0]
    updated = threading.Event()
    stop = threading.Event()
    seen = []  # (request index, updated before it was sent, answer)

    def stream(url):
        for step in range(2000):  # bounded: stops long before, when told
            if stop.is_set():
                return
            sent_after = updated.is_set()
            index = step % len(STREAM)
            status, answer = call(url, "/recommend", STREAM[index])
            assert status == 200, answer
            seen.append((index, sent_after, answer))

    with running(Retriever.load(directory), directory) as (url, _):
        with ThreadPoolExecutor(2) as pool:
            clients = [pool.submit(stream, url) for _ in range(2)]
            deadline = time.monotonic() + TIMEOUT
            while len(seen) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            status, answer = call(url, "/items", {"items": NEW_ITEMS})
            updated.set()
            count = len(seen)
            while len(seen) < count + 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            for client in clients:
                client.result(TIMEOUT)
        assert status == 200, answer
        assert answer == {"num_items": 31, "added": [4242], "replaced": [10]}
        assert call(url, "/health")[1]["num_items"] == 31
        status, similar = call(url, "/similar_items", {"item_id": 4242, "k": 30})
        assert status == 200 and 4242 not in similar["items"] and len(similar["items"]) == 30
        frame = new.similar_items(4242, k=30)
        assert similar["items"] == frame.similar_item_id.tolist()
        status, bad = call(url, "/items", {"items": [{"item_id": 5, "colour": "red"}]})
        assert status == 400 and "colour" in bad["detail"]
        status, bad = call(url, "/items", {"items": [{"genre": "pop"}]})
        assert status == 400 and "item_id" in bad["detail"]
    for index, sent_after, answer in seen:
        if sent_after:
            assert_same(answer, after[index])
        else:
            try:
                assert_same(answer, before[index])
            except AssertionError:
                assert_same(answer, after[index])
    assert sum(sent_after for _, sent_after, _ in seen) >= 20
    assert sum(not sent_after for _, sent_after, _ in seen) >= 20
    loaded = Retriever.load(directory)  # the export on disk holds the update
    assert loaded.item_ids == new.item_ids and 4242 in loaded.item_ids
    np.testing.assert_allclose(loaded.item_embeddings, new.item_embeddings, rtol=1e-6)
    assert_same(expected(loaded, **STREAM[0]), after[0])
