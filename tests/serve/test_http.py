"""graphrec.serve.http: every endpoint gives the library's (and so `graphrec recommend`'s)
lists, every bad request a 4xx naming its field, write endpoints the API key; and one real
uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from graphrec.serve import Recommender  # noqa: E402
from graphrec.serve.http import create_app  # noqa: E402
from tests.helpers import ok, one_line_error, run  # noqa: E402

KEY = "s3cret-key"


@pytest.fixture
def model_dir(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained model (add-items writes to it)."""
    return Path(shutil.copytree(trained / "model", tmp_path / "model"))


@pytest.fixture
def client(model_dir: Path, tmp_path: Path):
    with TestClient(create_app(model_dir, api_key=KEY, cache_dir=tmp_path / "cache",
                               device="cpu", watch_s=0)) as c:  # reloads only when asked
        yield c


def items_of(response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(i["item"], round(i["score"], 6)) for i in response.json()["items"]]


def expected(recs) -> list[tuple[str, float]]:
    return [(r.item, round(r.score, 6)) for r in recs]


def test_health_and_ready(client: TestClient, model_dir: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    rec = Recommender.load(model_dir)
    assert ready["ready"] is True and len(ready["model_version"]) == 12
    assert (ready["num_users"], ready["num_items"]) == (rec.num_users, rec.num_items)
    assert ready["index"] == "exact" and ready["index_build_s"] is None
    assert "/v1/users/{user}/recommendations" in client.get("/openapi.json").json()["paths"]


def test_user_lists_are_the_recommenders_for_every_user(client: TestClient,
                                                         model_dir: Path) -> None:
    rec = Recommender.load(model_dir)
    version = client.get("/ready").json()["model_version"]
    for user in rec.user_ids:
        r = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert items_of(r) == expected(rec.recommend(str(user), 5))
        assert r.json()["model_version"] == version and r.json()["user"] == str(user)
    user = str(rec.user_ids[0])
    params = {"k": 4, "diversity": 0.5, "tail_boost": 1.0, "exclude_seen": "false"}
    assert items_of(client.get(f"/v1/users/{user}/recommendations", params=params)) == \
        expected(rec.recommend(user, 4, include_seen=True, diversity=0.5, tail_boost=1.0))


def test_new_user_and_similar_items(client: TestClient, model_dir: Path) -> None:
    rec = Recommender.load(model_dir)
    history = [str(i) for i in rec.item_ids[:3]]
    r = client.post("/v1/recommendations", json={"history": history, "k": 6})
    assert items_of(r) == expected(rec.recommend_new_user(history, 6))
    assert not set(history) & {i for i, _ in items_of(r)}
    item = str(rec.item_ids[5])
    assert items_of(client.get(f"/v1/items/{item}/similar", params={"k": 3})) == \
        expected(rec.similar_items(item, 3))


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "field"), [
    ("get", "/v1/users/{user}/recommendations", {"params": {"k": 0}}, 422, "k"),
    ("get", "/v1/users/{user}/recommendations", {"params": {"k": 1001}}, 422, "k"),
    ("get", "/v1/users/{user}/recommendations", {"params": {"k": "ten"}}, 422, "k"),
    ("get", "/v1/users/{user}/recommendations", {"params": {"diversity": 2}}, 422, "diversity"),
    ("get", "/v1/users/{user}/recommendations", {"params": {"tail_boost": 11}}, 422,
     "tail_boost"),
    ("get", "/v1/users/nobody/recommendations", {}, 404, "user"),
    ("post", "/v1/recommendations", {"json": {"history": []}}, 422, "history"),
    ("post", "/v1/recommendations", {"json": {"history": ["no-such-item"]}}, 404, "history"),
    ("post", "/v1/recommendations", {"json": {"k": 3}}, 422, "history"),
    ("post", "/v1/recommendations", {"json": {"history": "x", "k": 3}}, 422, "history"),
    ("post", "/v1/recommendations", {"content": b"{not json", "headers": {
        "content-type": "application/json"}}, 422, None),
    ("get", "/v1/items/no-such-item/similar", {}, 404, "item"),
    ("get", "/v1/items/{item}/similar", {"params": {"k": -1}}, 422, "k"),
])
def test_bad_requests_get_a_4xx_naming_the_field(client: TestClient, model_dir: Path,
                                                 method: str, path: str, kwargs: dict,
                                                 status: int, field: str | None) -> None:
    rec = Recommender.load(model_dir)
    path = path.format(user=rec.user_ids[0], item=rec.item_ids[0])
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["message"]
    if kwargs.get("params", {}).get("k") == 0:
        assert error["expected"] == ">= 1" and error["value"] == "0"
    if field is not None:
        assert field in error["message"]


def test_adding_items_needs_the_key_and_serves_them_at_once(client: TestClient,
                                                            model_dir: Path) -> None:
    body = {"items": [{"id": "new-1", "title": "New", "text": "space rocket galaxy orbit"}]}
    before = client.get("/ready").json()
    assert client.post("/v1/items", json=body).status_code == 401
    assert client.post("/v1/items", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    # The key is checked before the body is read: a broken body without it is still a 401.
    r = client.post("/v1/items", content=b"{broken", headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "X-API-Key"
    r = client.post("/v1/items", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1 and r.json()["num_items"] == before["num_items"] + 1
    assert r.json()["model_version"] != before["model_version"]
    assert client.get("/ready").json()["model_version"] == r.json()["model_version"]
    similar = client.get("/v1/items/new-1/similar", params={"k": 3})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    # Persisted: a fresh recommender from the directory knows the item.
    assert "new-1" in set(Recommender.load(model_dir).item_ids.tolist())
    again = client.post("/v1/items", json=body, headers={"X-API-Key": KEY})
    assert again.status_code == 422 and again.json()["error"]["field"] == "items"
    empty = client.post("/v1/items", json={"items": []}, headers={"X-API-Key": KEY})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "items"


def test_serve_refuses_a_public_address_without_a_key(work: Path) -> None:
    one_line_error(run(work, "serve", "--host", "0.0.0.0"), "--host '0.0.0.0'", "--api-key")
    one_line_error(run(work, "serve", "--model", str(work / "nope")), "nope", "not found")
    one_line_error(run(work, "serve", "--score-device", "tpu"), "--score-device 'tpu'")
    one_line_error(run(work, "serve", "--workers", "0"), "--workers 0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_on_a_loopback_port(model_dir: Path) -> None:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        rec = Recommender.load(model_dir)
        user = str(rec.user_ids[1])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/health").json() == {"status": "ok"}
            r = http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            assert items_of(r) == expected(rec.recommend(user, 5))
            # No key configured, loopback only: writes are open; bad ones are still 4xx.
            assert http.post("/v1/items", json={"items": []}).status_code == 422
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_cache_metrics_and_reload(client: TestClient, model_dir: Path, tmp_path: Path) -> None:
    from graphrec.serve import add_items

    rec = Recommender.load(model_dir)
    user = str(rec.user_ids[2])
    first = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    again = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert first == again
    text = client.get("/metrics").text
    assert 'graphrec_cache_total{outcome="hit"} 1.0' in text
    assert 'graphrec_cache_total{outcome="miss"} 1.0' in text
    assert 'graphrec_requests_total{endpoint="/v1/users/{user}/recommendations",status="200"} 2.0' \
        in text
    assert "graphrec_request_seconds_bucket" in text
    assert f'version="{first["model_version"]}"' in text

    # Reload needs the key; with nothing new it changes nothing.
    assert client.post("/admin/reload").status_code == 401
    same = client.post("/admin/reload", headers={"X-API-Key": KEY}).json()
    assert same == {"model_version": first["model_version"], "changed": False}

    # Another process publishes a new version (add-items on the directory): served on reload,
    # and the cached list of the old version is not served again.
    add_items(model_dir, ["late-1"], ["Late"], ["kitchen recipe chef pasta"],
              cache_dir=tmp_path / "cache", device="cpu")
    assert client.get(f"/v1/users/{user}/recommendations",
                      params={"k": 5}).json()["model_version"] == first["model_version"]
    new = client.post("/admin/reload", headers={"X-API-Key": KEY}).json()
    assert new["changed"] is True and new["model_version"] != first["model_version"]
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert after["model_version"] == new["model_version"]
    assert client.get("/v1/items/late-1/similar", params={"k": 2}).status_code == 200
    assert f'version="{new["model_version"]}"' in client.get("/metrics").text


def test_the_cache_can_be_turned_off(model_dir: Path) -> None:
    with TestClient(create_app(model_dir, cache_size=0)) as c:
        rec = Recommender.load(model_dir)
        user = str(rec.user_ids[0])
        for _ in range(2):
            assert items_of(c.get(f"/v1/users/{user}/recommendations")) == \
                expected(rec.recommend(user, 10))
        assert 'outcome="hit"' not in c.get("/metrics").text


@contextlib.contextmanager
def _serving(work: Path, *args: str):
    """`graphrec serve` in a process of its own on a free loopback port: (the process, a
    client, ``ready()``: /ready's document, or None until the server answers 200)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "graphrec_cli.main", "--workdir", str(work),
                             "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            def ready() -> dict | None:
                try:
                    r = http.get("/ready")
                    return r.json() if r.status_code == 200 else None
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read().decode()
                    return None

            yield proc, http, ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sighup_reloads_a_running_server(work: Path, tmp_path: Path) -> None:
    from graphrec.serve import add_items

    with _serving(work, "--watch-s", "0") as (proc, http, ready):  # reloads only on SIGHUP
        before = _wait_for(ready, 60)
        add_items(work / "model", ["hup-1"], ["Hup"], ["space rocket orbit"],
                  cache_dir=tmp_path / "cache", device="cpu")
        os.kill(proc.pid, signal.SIGHUP)
        now = _wait_for(lambda: (r := ready()) and r["model_version"] != before["model_version"]
                        and r or None, 30)
        assert now["num_items"] == before["num_items"] + 1
        assert http.get("/v1/items/hup-1/similar").status_code == 200

def _wait_for(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (value := condition()) is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def test_a_new_version_is_served_by_watching(trained: Path, tmp_path: Path) -> None:
    from graphrec.serve import add_items

    work = Path(shutil.copytree(trained, tmp_path / "w", symlinks=True))
    with TestClient(create_app(work / "model", watch_s=0.05, cache_dir=tmp_path / "cache",
                               device="cpu")) as c:
        before = c.get("/ready").json()
        assert c.get("/health").headers["X-Model-Version"] == before["model_version"]
        add_items(work / "model", ["watched-1"], ["W"], ["garden flower seeds"],
                  cache_dir=tmp_path / "cache", device="cpu")
        now = _wait_for(lambda: (r := c.get("/ready").json())["model_version"]
                        != before["model_version"] and r or None)
        assert now["num_items"] == before["num_items"] + 1
        similar = c.get("/v1/items/watched-1/similar", params={"k": 3})
        assert similar.headers["X-Model-Version"] == now["model_version"]
        assert similar.json()["model_version"] == now["model_version"]


def test_bodies_too_large_or_without_a_length_are_refused(model_dir: Path) -> None:
    with TestClient(create_app(model_dir, max_body_bytes=200, watch_s=0)) as c:
        big = c.post("/v1/recommendations", json={"history": ["x" * 300]})
        assert big.status_code == 413
        assert big.json()["error"]["field"] == "Content-Length"
        assert big.json()["error"]["expected"] == "at most 200 bytes"
        chunked = c.post("/v1/recommendations", content=iter([b'{"history": ["1"]}']))
        assert chunked.status_code == 411
        assert chunked.json()["error"]["field"] == "Content-Length"


def test_workers_share_one_model_directory(work: Path) -> None:
    with _serving(work, "--workers", "2") as (_, http, ready):
        state = _wait_for(ready, 60)
        user = str(Recommender.load(work / "model").user_ids[3])
        answers = {http.get(f"/v1/users/{user}/recommendations",
                            params={"k": 4}).json()["model_version"] for _ in range(20)}
        assert answers == {state["model_version"]}

def test_an_ann_index_serves_the_exact_lists_when_it_scans_everything(model_dir: Path) -> None:
    pytest.importorskip("faiss")
    rec = Recommender.load(model_dir)
    with TestClient(create_app(model_dir, index="ann", watch_s=0)) as c:
        ready = c.get("/ready").json()
        assert ready["index"] == "ann" and ready["index_bytes"] > 0
        for user in rec.user_ids[:10]:  # a 30-item catalog: one list, scanned whole
            got = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            assert [i for i, _ in items_of(got)] == [r.item for r in rec.recommend(user, 5)]


def test_lists_have_the_documented_shape(client: TestClient, model_dir: Path) -> None:
    from graphrec.serve.http import Recommendations

    rec = Recommender.load(model_dir)
    user, item = str(rec.user_ids[0]), str(rec.item_ids[0])
    for r in (client.get(f"/v1/users/{user}/recommendations", params={"k": 3}),
              client.post("/v1/recommendations", json={"history": [item], "k": 3}),
              client.get(f"/v1/items/{item}/similar", params={"k": 3})):
        doc = r.json()
        assert r.headers["content-type"] == "application/json"
        # what the OpenAPI page promises, field for field (None fields left out)
        assert Recommendations.model_validate(doc).model_dump(exclude_none=True) == doc


def test_no_request_fails_while_versions_are_swapped_in(model_dir: Path, tmp_path: Path) -> None:
    import uvicorn

    from graphrec.serve import add_items

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(model_dir, api_key=KEY, watch_s=0.05, cache_dir=tmp_path / "cache",
                   device="cpu"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    users = [str(u) for u in Recommender.load(model_dir).user_ids]

    def load() -> None:  # bounded: stops when told, or after 3,000 requests
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            n = 0
            while not stop.is_set() and n < 3000:
                r = http.get(f"/v1/users/{users[n % len(users)]}/recommendations")
                statuses.append(r.status_code)
                versions.add(r.headers.get("X-Model-Version", ""))
                n += 1

    try:
        _wait_for(lambda: server.started or None)
        client = threading.Thread(target=load)
        client.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"X-API-Key": KEY}) as http:
            for n in range(3):  # one through the service, two published beside it
                if n == 0:
                    assert http.post("/v1/items", json={"items": [
                        {"id": "swap-0", "text": "space rocket orbit"}]}).status_code == 200
                else:
                    add_items(model_dir, [f"swap-{n}"], [""], ["kitchen recipe chef"],
                              cache_dir=tmp_path / "cache", device="cpu")
                    assert http.post("/admin/reload").status_code == 200
                time.sleep(0.2)
        stop.set()
        client.join(timeout=60)
    finally:
        stop.set()
        server.should_exit = True
        thread.join(timeout=20)
    assert statuses and set(statuses) == {200}
    assert len(versions) >= 3  # the load saw the versions go by


def test_every_bundled_user_gets_the_command_lines_list(tmp_path: Path) -> None:
    import json

    work = tmp_path / "w"  # the bundled MovieLens, no text (quick), one short epoch
    ok(run(work, "build-graph", "--no-text"))
    ok(run(work, "train", "--epochs", "1", "--dim", "16", "--device", "cpu"))
    ok(run(work, "recommend", "--all-users", "-k", "10", "--output", str(tmp_path / "r.jsonl")))
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 610  # every user of ml-latest-small
    with TestClient(create_app(work / "model", watch_s=0)) as c:
        for want in lines:
            got = c.get(f"/v1/users/{want['user']}/recommendations", params={"k": 10}).json()
            assert [i["item"] for i in got["items"]] == want["items"]
            assert [i["score"] for i in got["items"]] == pytest.approx(want["scores"], abs=1e-5)


def test_adding_items_while_another_writer_holds_the_workdir_is_a_409(
        client: TestClient, model_dir: Path) -> None:
    from graphrec.fsio import exclusive_lock

    with exclusive_lock(model_dir.parent, "graphrec train"):
        r = client.post("/v1/items", headers={"X-API-Key": KEY},
                        json={"items": [{"id": "busy-1", "text": "space rocket"}]})
    assert r.status_code == 409
    assert r.json()["error"]["field"] == "workdir" and "graphrec train" in r.text
    assert client.get("/v1/items/busy-1/similar").status_code == 404  # nothing was added


def test_posted_interactions_are_folded_in_at_once_logged_and_taken_by_update(
        work: Path) -> None:
    from graphrec.serve.pending import PendingLog, pending_dir

    model = work / "model"
    rec = Recommender.load(model)
    user = str(rec.user_ids[0])
    top = [r.item for r in rec.recommend(user, 3)]
    body = {"user": user, "items": top[:2]}
    with TestClient(create_app(model, api_key=KEY, watch_s=0)) as c:
        before = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert c.post("/v1/interactions", json=body).status_code == 401
        r = c.post("/v1/interactions", json=body, headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2 and r.json()["new_user"] is False
        assert r.json()["model_version"].endswith("+1")
        after = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        # The next request reflects them: the items are masked and the list is rescored.
        got = [i["item"] for i in after.json()["items"]]
        assert set(top[:2]).isdisjoint(got) and after.json()["items"] != before.json()["items"]
        assert after.headers["x-model-version"].endswith("+1")
        # The same interactions again change nothing; a new user is added.
        again = c.post("/v1/interactions", json=body, headers={"X-API-Key": KEY})
        assert again.json()["accepted"] == 0 and again.json()["model_version"].endswith("+1")
        new = c.post("/v1/interactions", json={"user": "walk-in", "items": top},
                     headers={"X-API-Key": KEY})
        assert new.json()["new_user"] is True
        listed = c.get("/v1/users/walk-in/recommendations", params={"k": 5}).json()["items"]
        assert len(listed) == 5 and set(top).isdisjoint(i["item"] for i in listed)
        # Bad requests are 4xx naming the field, and write nothing.
        log = PendingLog(pending_dir(model))
        n = len(log.records())
        for bad, field in (({"user": user, "items": ["no-such-item"]}, "items"),
                           ({"user": user, "items": []}, "items"),
                           ({"user": "", "items": top}, "user"),
                           ({"items": top}, "user")):
            r = c.post("/v1/interactions", json=bad, headers={"X-API-Key": KEY})
            assert 400 <= r.status_code < 500 and r.json()["error"]["field"] == field, r.text
        assert len(log.records()) == n == 3
    # Acknowledged means on disk: a service started again serves them (replayed from the
    # log), and `graphrec update` takes them into the graph and a version, emptying the log.
    with TestClient(create_app(model, watch_s=0)) as c:
        replayed = c.get("/v1/users/walk-in/recommendations", params={"k": 5})
        assert replayed.status_code == 200 and replayed.json()["items"] == listed
    ok(run(work, "update"))
    assert log.records() == []
    fresh = Recommender.load(model)
    assert "walk-in" in set(fresh.user_ids.tolist())
    assert set(top).isdisjoint(r.item for r in fresh.recommend("walk-in", 5))


def test_explanations_are_served_as_the_command_gives_them(client: TestClient,
                                                            model_dir: Path) -> None:
    from graphrec.serve.explain import explain

    rec = Recommender.load(model_dir)
    user = str(rec.user_ids[0])
    item = rec.recommend(user, 1)[0].item
    r = client.get(f"/v1/users/{user}/recommendations/{item}/explanation", params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    want = explain(rec, user, item, 3).as_dict()
    assert body["contributions"] == want["contributions"] and body["score"] == want["score"]
    assert client.get(f"/v1/users/nobody/recommendations/{item}/explanation").status_code == 404
    bad = client.get(f"/v1/users/{user}/recommendations/{item}/explanation", params={"k": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "k"
