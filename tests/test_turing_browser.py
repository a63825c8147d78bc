"""The visual Turing test end to end in headless Chromium: a rater answers by clicking and by
keyboard, the server is killed mid-quiz and restarted, the rater resumes where they stopped, and
the report's numbers equal a hand computation on the same answers."""

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from lesion_data.phantom import generate_phantoms
from lesion_turing import write_report
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
N = 6

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


def start_server(db, log, *extra):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "apps/turing_test"), "serve", "--db", str(db), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
    )
    lines = []
    while not lines or not lines[-1].startswith("Results"):
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail(f"server did not start: {lines} {Path(log.name).read_text()[-2000:]}")
        lines.append(line)
    return proc, re.search(r"http://127\.0\.0\.1:\d+", lines[0]).group(0)


def wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


def binomial_two_sided(k, n):
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[k] * (1 + 1e-7)))


def test_quiz_in_chromium_with_restart_and_report(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir(), fake.mkdir()
    for folder, seed, suffix in ((real, 1, ".jpg"), (fake, 2, ".png")):
        images, _, _ = generate_phantoms(N // 2, 64, seed)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / f"{folder.name.upper()}FILE_{i}{suffix}")
    db = tmp_path / "study.sqlite"
    log = open(tmp_path / "server.log", "w")
    proc, base = start_server(db, log, "--real", str(real), "--synthetic", str(fake), "--n", str(N),
                                     "--size", "128", "--diagnosis")
    plan = [("click", "synthetic", 4), ("keys", "real", 2), ("keys", "synthetic", 5),
            ("click", "real", 1), ("keys", "real", 3), ("click", "synthetic", 3)]
    given = []  # (item id, said, confidence) as the browser saw it
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 800, "height": 860})
            seen = []  # (url, headers) of every response the browser received
            page.on("response", lambda response: seen.append((response.url, response.headers)))
            page.goto(base + "/")
            page.fill("#name", "Dr Test")
            page.click("#begin")
            page.wait_for_url(re.compile(r"/r/[\w-]+$"))
            token = page.url.rsplit("/", 1)[1]

            def wait_for_image(step):
                # Locators, not wait_for_function: the page's CSP rightly forbids string eval.
                sync_api.expect(page.locator("#count")).to_have_text(f"Image {step + 1} of {N}")
                page.wait_for_selector("#lesion:not(.loading)")
                assert page.eval_on_selector("#progress", "e => [e.value, e.max]") == [step, N]

            def answer(step):
                how, said, confidence = plan[step]
                wait_for_image(step)
                assert page.is_disabled("#next")  # nothing chosen yet
                item = page.get_attribute("#lesion", "src").rsplit("/", 1)[1]
                if how == "click":
                    page.click(f"#{said}")
                    page.check(f"input[name=confidence][value='{confidence}']")
                    if step == 0:
                        page.select_option("#diagnosis", "melanoma")
                        page.screenshot(path=tmp_path / "quiz.png")
                    page.click("#next")
                else:
                    page.keyboard.press(said[0])
                    page.keyboard.press(str(confidence))
                    page.keyboard.press("Enter")
                given.append((item, said, confidence))

            for step in range(3):
                answer(step)
            wait_for_image(3)
            shown_before_kill = page.get_attribute("#lesion", "src").rsplit("/", 1)[1]
            body = page.inner_text("body").lower()
            assert "right" not in body and "correct" not in body  # no feedback before the end

            proc.kill()  # SIGKILL: no chance to flush anything
            proc.wait()
            proc, base = start_server(db, log)
            page.goto(base + "/")  # the cookie brings the rater back to their own quiz
            page.wait_for_url(f"{base}/r/{token}")
            wait_for_image(3)
            assert page.get_attribute("#lesion", "src").rsplit("/", 1)[1] == shown_before_kill
            for step in range(3, N):
                answer(step)
            page.wait_for_selector("#done:not([hidden])")
            result = page.inner_text("#result")
            page.screenshot(path=tmp_path / "done.png")

            # A second rater, through the HTTP API, so that there is agreement to measure.
            request = urllib.request.Request(f"{base}/raters", data=b"name=Second",
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                                      {"redirect_request": lambda *a: None}))
            try:
                opener.open(request)
            except urllib.error.HTTPError as exc:
                second = exc.headers["Location"].rsplit("/", 1)[1]
            for _ in range(N):
                state = json.load(urllib.request.urlopen(f"{base}/api/r/{second}/state"))
                urllib.request.urlopen(urllib.request.Request(
                    f"{base}/api/r/{second}/answer", method="POST", headers={"Content-Type": "application/json"},
                    data=json.dumps({"item": state["item"], "answer": "synthetic", "confidence": 5}).encode()))
            browser.close()
    finally:
        proc.kill()
        proc.wait()
        log.close()

    # What the browser saw: no file or folder name, one byte length for every image.
    for url, headers in seen:
        text = (url + json.dumps(headers)).lower()
        assert "realfile" not in text and "fakefile" not in text and str(tmp_path).lower() not in text, url
    lengths = {h["content-length"] for u, h in seen if h.get("content-type") == "image/png"}
    assert len([u for u, h in seen if h.get("content-type") == "image/png"]) >= N and len(lengths) == 1

    # Nothing lost, nothing doubled: the database holds exactly the answers the browser gave.
    con = sqlite3.connect(db)
    truth = dict(con.execute("SELECT i.token, g.synthetic FROM items i JOIN images g ON g.id = i.image_id"))
    stored = con.execute("SELECT a.item_token, a.said_synthetic, a.confidence, a.diagnosis FROM answers a "
                         "JOIN items i ON i.token = a.item_token WHERE i.rater_id = 1 ORDER BY i.position").fetchall()
    assert [(item, said == "synthetic", conf) for item, said, conf in given] == [(i, bool(s), c) for i, s, c, _ in stored]
    assert [d for *_, d in stored] == ["melanoma"] + [None] * (N - 1)
    second_images = dict(con.execute("SELECT i.image_id, 1 FROM items i WHERE i.rater_id = 2"))
    image_of = dict(con.execute("SELECT token, image_id FROM items"))
    con.close()

    # The report against a hand computation (in-process: the app's `report` runs the same function,
    # and its subprocess smoke test is in test_turing_app.py).
    report = json.loads(write_report(db, tmp_path / "report")["report.json"].read_text())
    is_syn = [bool(truth[item]) for item, _, _ in given]
    said_syn = [said == "synthetic" for _, said, _ in given]
    correct = sum(t == s for t, s in zip(is_syn, said_syn))
    assert result.startswith(f"You judged all {N} images: {correct} of {N} ")
    me = report["raters"][0]
    assert (me["name"], me["answered"], me["complete"]) == ("Dr Test", N, True)
    assert (me["accuracy"]["successes"], me["accuracy"]["n"]) == (correct, N)
    assert (me["accuracy"]["low"], me["accuracy"]["high"]) == pytest.approx(wilson(correct, N))
    hits = sum(t and s for t, s in zip(is_syn, said_syn))
    rejections = sum(not t and not s for t, s in zip(is_syn, said_syn))
    assert (me["sensitivity"]["successes"], me["sensitivity"]["n"]) == (hits, N // 2)
    assert (me["specificity"]["successes"], me["specificity"]["n"]) == (rejections, N // 2)
    assert me["sensitivity"]["high"] == pytest.approx(wilson(hits, N // 2)[1])
    assert me["p_value_vs_chance"] == pytest.approx(binomial_two_sided(correct, N))
    # The second rater always said synthetic: right on exactly the synthetic half.
    assert report["raters"][1]["accuracy"]["successes"] == N // 2
    assert report["overall"]["accuracy"]["successes"] == correct + N // 2
    # Fleiss' kappa by hand, 2 raters x N images: P_i = 1 if they agree else 0.
    agree = said_syn  # the second rater said synthetic throughout
    p_syn = (sum(said_syn) + N) / (2 * N)
    p_e = p_syn**2 + (1 - p_syn) ** 2
    assert len(second_images) == N and len({image_of[item] for item, _, _ in given}) == N
    assert report["fleiss_kappa"]["images"] == N
    assert report["fleiss_kappa"]["kappa"] == pytest.approx((sum(agree) / N - p_e) / (1 - p_e))
    # Confidence 5 was given 1 time by Dr Test and N times by the second rater.
    mine5 = [t == s for t, s, (_, _, c) in zip(is_syn, said_syn, given) if c == 5]
    level5 = report["confidence_accuracy"]["levels"]["5"]
    assert (level5["n"], level5["successes"]) == (len(mine5) + N, sum(mine5) + N // 2)
    for name in ("quiz.png", "done.png"):
        assert Image.open(tmp_path / name).getextrema()[0] != (255, 255)  # something was drawn
