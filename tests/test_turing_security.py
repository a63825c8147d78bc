"""Security of the visual-Turing-test server, one test per point of issue 8, against a real server
on an ephemeral 127.0.0.1 port (in-process, so the raw HTTP requests stay fast)."""

import http.client
import json
import re
import socket
import sqlite3
import threading

import numpy as np
import pytest
from lesion_turing import Study, StudySpec, create_study, make_server
from PIL import Image

SECRET_WORDS = ("truthfolderreal", "truthfoldersynth", "realsource", "fakesource", "synthetic\":", "is_synthetic")


def make_study(root, real_name, synth_name, n=4):
    rng = np.random.default_rng(0)
    folders = {}
    for name, stem, shape, suffix in ((real_name, "REALSOURCE", (48, 64, 3), ".jpg"),
                                      (synth_name, "FAKESOURCE", (32, 32, 3), ".png")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{stem}_{i}{suffix}")
        folders[name] = folder
    return folders


class Client:
    """Raw HTTP against the server: paths are sent exactly as written, never normalised."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)  # the first report imports torch via lesion_metrics
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def answer(self, token, payload, **headers):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", f"/api/r/{token}/answer", body, {"Content-Type": "application/json", **headers})

    def new_rater(self, name):
        status, headers, _ = self.request("POST", "/raters", f"name={name}".encode(),
                                          {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, status
        return headers["Location"].rsplit("/", 1)[1]

    def state(self, token):
        return json.loads(self.request("GET", f"/api/r/{token}/state")[2])


@pytest.fixture
def served(tmp_path):
    """A running server over a 4-image study; yields (client, study)."""
    folders = make_study(tmp_path, "truthfolderreal", "truthfoldersynth")
    create_study(tmp_path / "s.sqlite", StudySpec(str(folders["truthfolderreal"]), str(folders["truthfoldersynth"]),
                                                  n=4, size=32, diagnoses=("nevus", "melanoma")))
    study = Study(tmp_path / "s.sqlite")
    server = make_server(study)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Client(server.server_address[1]), study
    server.shutdown()
    server.server_close()
    study.close()


def answer_count(study):
    return len(study.answers())


def test_images_only_by_opaque_ids_no_traversal_no_listing(served, tmp_path):
    client, study = served
    token = client.new_rater("Ada")
    item = client.state(token)["item"]
    assert client.request("GET", f"/api/r/{token}/image/{item}")[0] == 200
    (tmp_path / "secret.txt").write_text("top secret")
    probes = [
        "/static/../../secret.txt", "/static/..%2f..%2fsecret.txt", "/static/%2e%2e/%2e%2e/secret.txt",
        "/static/", "/static", "/static/quiz.js/", "/static/./quiz.js", "/static//quiz.js",
        f"/api/r/{token}/image/", f"/api/r/{token}/image/../state", f"/api/r/{token}/image/..%2F..%2Fs.sqlite",
        f"/api/r/{token}/image/REALSOURCE_0.jpg", f"/api/r/{token}/image/%2Fetc%2Fpasswd", "/etc/passwd",
        "//etc/passwd", "/s.sqlite", "/truthfolderreal/REALSOURCE_0.jpg", "/api/", "/api/r/", "/admin/", "/r/",
        f"/r/{token}/../../s.sqlite", "/%2e%2e/%2e%2e/etc/passwd", "http://127.0.0.1/static/../secret.txt",
    ]
    for path in probes:
        status, _, body = client.request("GET", path)
        assert status == 404, (path, status)
        assert b"top secret" not in body and b"REALSOURCE" not in body
    # Every image comes from the study database, never from a path: even a symlink placed in the
    # image folder after start-up is invisible.
    (tmp_path / "truthfolderreal" / "link.png").symlink_to(tmp_path / "secret.txt")
    assert client.request("GET", f"/api/r/{token}/image/link.png")[0] == 404


def test_unknown_ids_and_other_raters_images_are_4xx_and_change_nothing(served):
    client, study = served
    ada, bob = client.new_rater("Ada"), client.new_rater("Bob")
    bob_item = client.state(bob)["item"]
    ada_item = client.state(ada)["item"]
    assert client.request("GET", f"/api/r/{ada}/image/{bob_item}")[0] == 404
    assert client.request("GET", "/api/r/AAAAAAAAAAAA/state")[0] == 404
    assert client.request("GET", "/r/AAAAAAAAAAAA")[0] == 404
    good = {"item": ada_item, "answer": "real", "confidence": 3}
    cases = [
        ({**good, "item": bob_item}, 404),  # someone else's image
        ({**good, "item": "AAAAAAAAAAAAAAAA"}, 404),
        ({**good, "answer": "REAL"}, 400),
        ({**good, "answer": None}, 400),
        ({**good, "confidence": 0}, 400),
        ({**good, "confidence": 6}, 400),
        ({**good, "confidence": "3"}, 400),
        ({**good, "confidence": 3.0}, 400),
        ({**good, "confidence": True}, 400),
        ({**good, "diagnosis": "flu"}, 400),
        ({**good, "diagnosis": 1}, 400),
        ({**good, "extra": 1}, 400),
        ({"item": ada_item, "answer": "real"}, 400),
        ([good], 400),
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"", 400),
        (b"[" * 4000, 400),  # nesting deep enough to exhaust the JSON parser's recursion
    ]
    for payload, status in cases:
        assert client.answer(ada, payload)[0] == status, payload
    assert client.answer("AAAAAAAAAAAA", good)[0] == 404
    # An image assigned to Ada but not yet due (answers go in order): the database tells us one.
    future = study._query("SELECT token FROM items WHERE rater_id = 1 AND position = 2")[0][0]
    assert client.answer(ada, {**good, "item": future})[0] == 409
    assert answer_count(study) == 0
    assert client.state(ada)["item"] == ada_item


def test_oversized_bodies_wrong_types_and_forged_requests_are_rejected(served):
    client, study = served
    ada = client.new_rater("Ada")
    item = client.state(ada)["item"]
    good = json.dumps({"item": item, "answer": "real", "confidence": 3}).encode()
    json_type = {"Content-Type": "application/json"}
    assert client.request("POST", f"/api/r/{ada}/answer", good + b" " * 5000, json_type)[0] == 413
    assert client.request("POST", f"/api/r/{ada}/answer", good, {**json_type, "Content-Length": "99999999999"})[0] == 413
    for length in ("-1", "\u00b2", "1e3", " 5", ""):
        assert client.request("POST", f"/api/r/{ada}/answer", good, {**json_type, "Content-Length": length})[0] == 400
    assert client.request("POST", f"/api/r/{ada}/answer", None, json_type)[0] == 411
    assert client.request("POST", f"/api/r/{ada}/answer", good, {"Content-Type": "text/plain"})[0] == 415
    assert client.request("POST", f"/api/r/{ada}/answer", good, {**json_type, "Origin": "http://evil.example"})[0] == 403
    assert client.request("POST", "/raters", b"name=x", {"Content-Type": "application/x-www-form-urlencoded",
                                                         "Origin": "null"})[0] == 403
    assert client.request("POST", "/raters", b"name=" + b"x" * 200, {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    assert client.request("POST", "/raters", b"name=a%00b", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    assert client.request("POST", "/raters", b"name=a&name=b", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    assert client.request("POST", "/raters", b"name=Ada", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 409
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"):
        assert client.request(method, f"/api/r/{ada}/answer")[0] == 405, method
    assert client.request("GET", f"/api/r/{ada}/answer")[0] == 405
    assert answer_count(study) == 0
    # The one good answer counts once; its repetition is a 409 and changes nothing.
    assert client.request("POST", f"/api/r/{ada}/answer", good, json_type)[0] == 200
    assert client.request("POST", f"/api/r/{ada}/answer", good, json_type)[0] == 409
    assert answer_count(study) == 1 and study.answers()[0]["confidence"] == 3


def test_closed_signup_and_foreign_host_names(served):
    client, study = served
    ada = client.new_rater("Ada")
    closed = make_server(study, signup=False)
    threading.Thread(target=closed.serve_forever, args=(0.05,), daemon=True).start()
    other = Client(closed.server_address[1])
    status, _, body = other.request("GET", "/")
    assert status == 200 and b"personal link" in body and b"<form" not in body
    assert other.request("POST", "/raters", b"name=Eve", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 403
    assert other.request("GET", f"/r/{ada}")[0] == 200  # personal links still work
    closed.shutdown()
    closed.server_close()
    # DNS rebinding: a page on another host name that resolves to 127.0.0.1 is refused.
    for host, status in (("evil.example", 403), ("evil.example:80", 403), ("[", 400),
                         ("localhost:1", 200), ("[::1]:8000", 200)):
        assert client.request("GET", f"/api/r/{ada}/state", headers={"Host": host})[0] == status, host
    assert [r["name"] for r in study.raters()] == ["Ada"]


def test_garbage_requests_never_500(served):
    client, study = served
    rng = np.random.default_rng(0)
    alphabet = list("abcAZ09_-./%?=&#~:;@!$'()*+, \\\"<>[]{}|^`") + ["%00", "%ff", "..", "//", "\u00e9"]
    for _ in range(150):
        path = "/" + "".join(rng.choice(alphabet, size=rng.integers(0, 40)))
        try:
            status, _, _ = client.request(rng.choice(["GET", "POST"]), path.replace(" ", "%20").replace("\u00e9", "%C3%A9"))
        except http.client.InvalidURL:
            continue
        assert status < 500, path
    for raw in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                b"POST /raters HTTP/1.1\r\nContent-Length: 5\r\n\r\nname", b"\x16\x03\x01\x00\xa5\x01\x00"):
        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(100)
        status = re.match(rb"HTTP/1\.\d (\d{3})", reply)
        assert status is None or int(status.group(1)) < 500, (raw[:40], reply)
    assert answer_count(study) == 0


def test_results_need_the_admin_token(served):
    client, study = served
    admin = study.new_admin_token()
    assert client.request("GET", f"/admin/{admin}/")[0] == 200
    assert client.request("GET", f"/admin/{admin}/report.json")[0] == 200
    assert client.request("GET", f"/admin/{admin}/fooled.png")[0] == 200
    wrong = admin[:-1] + ("A" if admin[-1] != "A" else "B")
    for path in (f"/admin/{wrong}/", f"/admin/{wrong}/report.json", f"/admin/{wrong}/fooled.png", "/admin",
                 f"/admin/{admin.lower()}/", f"/admin/{admin}/../report.json"):
        status, _, body = client.request("GET", path)
        assert status == 404 and b"Fleiss" not in body, path
    ada = client.new_rater("Ada")
    assert client.request("GET", f"/admin/{ada}/")[0] == 404  # a rater's token opens nothing else


def transcript(client, study, answers):
    """Everything a rater's browser receives while doing the whole quiz, with the random tokens
    replaced by placeholders and the image bytes by their length and PNG chunk layout."""
    seen = []
    status, headers, body = client.request("POST", "/raters", b"name=Ada",
                                           {"Content-Type": "application/x-www-form-urlencoded"})
    token = headers["Location"].rsplit("/", 1)[1]
    ids = {token: "<rater>"}

    def record(status, headers, body):
        headers = {k: v for k, v in headers.items() if k != "Date"}
        seen.append((status, headers, body.decode("latin-1")))

    record(status, headers, body)
    for path in ("/", f"/r/{token}", "/static/quiz.js", "/static/style.css", f"/api/r/{token}/state"):
        record(*client.request("GET", path))
    for said, confidence in answers:
        item = client.state(token)["item"]
        ids[item] = f"<item{len(ids)}>"
        status, headers, png = client.request("GET", f"/api/r/{token}/image/{item}")
        chunks = re.findall(rb"(IHDR|IDAT|IEND|tEXt|iTXt|zTXt|eXIf|iCCP|pHYs|tIME)", png)
        record(status, headers, f"{len(png)} bytes {chunks}".encode())
        record(*client.answer(token, {"item": item, "answer": said, "confidence": confidence}))

    def anonymise(text):
        for real_id, name in ids.items():
            text = text.replace(real_id, name)
        return text

    return [(status, {k: anonymise(v) for k, v in headers.items()}, anonymise(text)) for status, headers, text in seen]


def test_the_truth_never_reaches_the_browser(tmp_path):
    """Run the same quiz twice with the roles of the two folders swapped: if anything a rater's
    browser receives (bodies, headers, ids, sizes, order) depended on which images are real,
    the two transcripts would differ. A balanced quiz answered "real" throughout scores 50% either
    way, so even the final score matches."""
    folders = make_study(tmp_path, "truthfolderreal", "truthfoldersynth")
    transcripts = []
    for name, (real, synth) in {"a": ("truthfolderreal", "truthfoldersynth"),
                                "b": ("truthfoldersynth", "truthfolderreal")}.items():
        create_study(tmp_path / f"{name}.sqlite", StudySpec(str(folders[real]), str(folders[synth]), n=4, size=32))
        study = Study(tmp_path / f"{name}.sqlite")
        server = make_server(study)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        client = Client(server.server_address[1])
        transcripts.append(transcript(client, study, [("real", 3), ("real", 5), ("real", 1), ("real", 2)]))
        server.shutdown()
        server.server_close()
        study.close()
    assert transcripts[0] == transcripts[1]
    for status, headers, text in transcripts[0]:
        assert status in (200, 303)
        everything = (text + json.dumps(headers)).lower()
        for word in SECRET_WORDS:
            assert word not in everything, word
    images = [t for t in transcripts[0] if t[1].get("Content-Type") == "image/png"]
    assert len(images) == 4 and len({t[2] for t in images}) == 1  # one byte length, one chunk layout
    assert "tEXt" not in images[0][2] and "IDAT" in images[0][2]


def test_order_of_truth_is_random_per_rater(served):
    client, study = served
    first_is_synthetic = []
    for i in range(40):
        token = study.add_rater(f"r{i}")
        item = study.state(token)["item"]
        first_is_synthetic.append(study._query(
            "SELECT g.synthetic FROM items i JOIN images g ON g.id = i.image_id WHERE i.token = ?", (item,))[0][0])
    # Under a fair shuffle P(first is synthetic) = 1/2; 40 draws outside 8..32 has p < 1e-4.
    assert 8 <= sum(first_is_synthetic) <= 32


def test_answers_are_committed_before_the_reply(served, tmp_path):
    client, study = served
    ada = client.new_rater("Ada")
    item = client.state(ada)["item"]
    assert client.answer(ada, {"item": item, "answer": "synthetic", "confidence": 5})[0] == 200
    # A separate connection (as after a crash) sees the answer as soon as the reply arrived.
    rows = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT item_token, said_synthetic FROM answers").fetchall()
    assert rows == [(item, 1)]


def test_access_log_masks_every_token(served, capsys):
    client, study = served
    admin = study.new_admin_token()
    ada = client.new_rater("Ada")
    item = client.state(ada)["item"]
    client.request("GET", f"/r/{ada}")
    client.request("GET", f"/api/r/{ada}/image/{item}?secret=QuerySecret123")
    client.request("GET", f"/admin/{admin}/report.json")
    client.request("GET", f"/admin/{admin[:-1]}Z/")  # a wrong guess is logged masked as well
    with socket.create_connection(("127.0.0.1", client.port), timeout=10) as sock:  # http.server logs its own errors
        sock.sendall(f"GET /r/{ada} {ada}\r\n\r\n".encode())
        sock.recv(100)
    log = capsys.readouterr().err
    assert "/r/***" in log and "/admin/***/report.json" in log and "/image/***?***" in log
    for secret in (ada, item, admin, admin[:-1], "QuerySecret123"):
        assert secret not in log, secret


def test_results_page_answers_at_once_while_the_statistics_load(served, monkeypatch):
    from lesion_turing import report

    client, study = served
    admin = study.new_admin_token()
    monkeypatch.setattr("lesion_turing.server.report_loading", lambda: True)
    status, headers, body = client.request("GET", f"/admin/{admin}/")
    assert status == 200 and b'http-equiv="refresh"' in body and b"Fleiss" not in body
    monkeypatch.setattr("lesion_turing.server.report_loading", lambda: False)
    assert b"Fleiss" in client.request("GET", f"/admin/{admin}/")[2]
    report.start_warm_up()
    report._WARM_UP_DONE.wait(120)
    assert not report.report_loading()
