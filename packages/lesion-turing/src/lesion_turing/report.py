"""The study report: per-rater and pooled detection statistics, agreement between raters, the
confidence-accuracy relation and the synthetic images that fooled most raters, as JSON and HTML."""

from __future__ import annotations

import html
import io
import json
import math
import os
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .images import contact_sheet
from .study import Study

FOOLED_SHOWN = 16


_WARM_UP_STARTED, _WARM_UP_DONE = threading.Event(), threading.Event()


def _warm_up() -> None:
    import lesion_metrics.rater_agreement  # noqa: F401

    _WARM_UP_DONE.set()


def start_warm_up() -> None:
    """Import what :func:`build_report` needs in a background thread: lesion_metrics loads scipy and
    torch (~10 s on a busy machine), which would otherwise be the wait of the first results page."""
    if not _WARM_UP_STARTED.is_set():
        _WARM_UP_STARTED.set()
        threading.Thread(target=_warm_up, daemon=True, name="report-warm-up").start()


def report_loading() -> bool:
    """True while a started warm-up has not finished (building a report now would wait for it)."""
    return _WARM_UP_STARTED.is_set() and not _WARM_UP_DONE.is_set()


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def build_report(study: Study) -> dict:
    # Imported here: importing lesion_metrics loads torch and every metric, which would add seconds
    # to the start of a quiz server that needs none of it until someone opens the results.
    from lesion_metrics.rater_agreement import confidence_accuracy, detection_summary, fleiss_kappa

    answers = study.answers()
    images = study.images()
    raters = study.raters()
    by_rater = defaultdict(list)
    for a in answers:
        by_rater[a["rater"]].append(a)

    def summary(rows):
        return detection_summary([r["synthetic"] for r in rows], [r["said_synthetic"] for r in rows])

    per_rater = [
        {"name": r["name"], "answered": r["answered"], "complete": r["answered"] == r["total"], **summary(by_rater[r["name"]])}
        for r in raters
    ]
    # Agreement on the real/synthetic call, over images judged by at least two raters.
    votes = defaultdict(lambda: [0, 0])
    for a in answers:
        votes[a["image"]][a["said_synthetic"]] += 1
    counts = [v for v in votes.values() if sum(v) >= 2]
    kappa = {
        "kappa": fleiss_kappa(counts) if counts else math.nan,
        "images": len(counts),
        "raters": sum(1 for r in raters if r["answered"]),
    }
    # Synthetic images that at least one rater called real, by the fraction of their raters fooled,
    # then by how many were fooled.
    fooled = []
    for img in images:
        said_real, said_synth = votes[img["image"]]
        if img["synthetic"] and said_real > 0:
            fooled.append({
                "image": img["image"], "source": img["source"], "raters": said_real + said_synth,
                "said_real": said_real, "fraction_said_real": said_real / (said_real + said_synth),
            })
    fooled.sort(key=lambda f: (-f["fraction_said_real"], -f["said_real"], f["image"]))
    diagnoses = defaultdict(Counter)
    for a in answers:
        if a["diagnosis"] is not None:
            diagnoses["synthetic" if a["synthetic"] else "real"][a["diagnosis"]] += 1
    return {
        "study": {
            "images": len(images),
            "synthetic_images": sum(i["synthetic"] for i in images),
            "real_folder": study.meta["real"],
            "synthetic_folder": study.meta["synthetic"],
            "size": int(study.meta["size"]),
            "jpeg_quality": int(study.meta["jpeg_quality"]),
            "seed": int(study.meta["seed"]),
            "raters": len(raters),
            "answers": len(answers),
        },
        # Pooled over raters: answers of one rater are not independent, so read the pooled p-value
        # as descriptive; the per-rater tests are the exact ones.
        "overall": summary(answers),
        "raters": per_rater,
        "fleiss_kappa": kappa,
        "confidence_accuracy": confidence_accuracy(
            [a["confidence"] for a in answers], [a["synthetic"] == a["said_synthetic"] for a in answers]
        ),
        "fooled": fooled,
        "diagnoses": {k: dict(v) for k, v in diagnoses.items()},
        "answers": answers,
    }


def fooled_sheet_png(study: Study, report: dict) -> bytes:
    top = report["fooled"][:FOOLED_SHOWN]
    sheet = contact_sheet(
        [study.image_png(f["image"]) for f in top],
        [f"#{f['image']}: {f['said_real']}/{f['raters']} said real" for f in top],
    )
    buf = io.BytesIO()
    sheet.save(buf, "PNG", compress_level=1)  # made per request: zlib level 1 is 5x faster than 6 for 11 % more bytes
    return buf.getvalue()


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def report_json(report: dict) -> str:
    return json.dumps(_json_safe(report), indent=2)


def _pct(p: dict) -> str:
    if not p["n"]:
        return "–"
    return f"{p['estimate']:.1%} [{p['low']:.1%}, {p['high']:.1%}] ({p['successes']}/{p['n']})"


def _num(x: float, fmt: str = ".3f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


def render_html(report: dict, sheet_href: str, raters: list[dict] | None = None) -> str:
    """The report page; with `raters` (admin view of a running server) it also lists each rater's
    progress and personal link."""
    e = html.escape
    links = ""
    if raters:
        cells = []
        for r in raters:
            link = f"/r/{e(r['token'])}"
            cells.append(f"<tr><td>{e(r['name'])}</td><td>{r['answered']}/{r['total']}</td>"
                         f"<td><a href='{link}'>{link}</a></td></tr>")
        links = ("<h2>Raters</h2><table><tr><th>Rater</th><th>Progress</th><th>Personal link</th></tr>"
                 + "".join(cells) + "</table>")
    s = report["study"]
    rows = []
    for r in [{"name": "All raters (pooled)", "answered": report["overall"]["n"], "complete": None, **report["overall"]}] + report["raters"]:
        rows.append(
            f"<tr><td>{e(r['name'])}</td><td>{r['answered']}{'' if r['complete'] in (None, True) else ' (incomplete)'}</td>"
            f"<td>{_pct(r['accuracy'])}</td><td>{_pct(r['sensitivity'])}</td><td>{_pct(r['specificity'])}</td>"
            f"<td>{_num(r['p_value_vs_chance'], '.3g') if r['n'] else '–'}</td></tr>"
        )
    ca = report["confidence_accuracy"]
    conf_rows = "".join(f"<tr><td>{lvl}</td><td>{_pct(p)}</td></tr>" for lvl, p in ca["levels"].items())
    k = report["fleiss_kappa"]
    fooled_rows = "".join(
        f"<tr><td>#{f['image']}</td><td>{f['said_real']}/{f['raters']}</td><td>{e(os.path.basename(f['source']))}</td></tr>"
        for f in report["fooled"][:FOOLED_SHOWN]
    )
    fooled = (f"""<table><tr><th>Image</th><th>Said real</th><th>File</th></tr>{fooled_rows}</table>
<img src="{e(sheet_href)}" alt="contact sheet of the most convincing synthetic images">""" if fooled_rows else
              "<p>No rater has called a synthetic image real.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Visual Turing test report</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
th {{ background: #f3f3f3; }} .note {{ color: #666; font-size: 90%; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Visual Turing test report</h1>
<p>{plural(s['images'], 'image')} ({s['synthetic_images']} synthetic), {plural(s['raters'], 'rater')}, {plural(s['answers'], 'answer')}.
Images shown at {s['size']}&times;{s['size']} px{', after a JPEG round trip at quality ' + str(s['jpeg_quality']) if s['jpeg_quality'] else ''}.</p>
{links}
<h2>Telling synthetic from real</h2>
<p class="note">Positive = synthetic. Sensitivity: synthetic images called synthetic; specificity: real images
called real. Brackets: Wilson 95% intervals. p: exact two-sided binomial test of the accuracy against chance (50%);
the pooled p-value treats answers as independent, which answers of one rater are not.</p>
<table><tr><th>Rater</th><th>Answers</th><th>Accuracy</th><th>Sensitivity</th><th>Specificity</th><th>p vs chance</th></tr>
{''.join(rows)}</table>
<h2>Agreement between raters</h2>
<p>Fleiss' kappa on the real/synthetic call: <b>{_num(k['kappa'])}</b> over {plural(k['images'], 'image')} judged by at
least two of {plural(k['raters'], 'rater')}.</p>
<h2>Confidence and accuracy</h2>
<table><tr><th>Confidence</th><th>Accuracy</th></tr>{conf_rows}</table>
<p>Spearman correlation of confidence with correctness: {_num(ca['spearman_rho'])} (p = {_num(ca['spearman_p'], '.3g')}).</p>
<h2>Synthetic images that fooled most raters</h2>
{fooled}
</body></html>
"""


def write_report(db_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.html, report.json and fooled.png into `out_dir` (each via temp file + rename)."""
    study = Study(db_path)
    try:
        report = build_report(study)
        files = {
            "report.json": report_json(report).encode(),
            "fooled.png": fooled_sheet_png(study, report),
            "report.html": render_html(report, "fooled.png").encode(),
        }
    finally:
        study.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        written[name] = out / name
    return written
