"""How fast the visual-Turing-test server is: study creation, image and answer round trips.

    uv run benchmarks/turing_server.py [--n 60] [--size 256] [--raters 8]

Builds a study from n/2 + n/2 phantom images (written as 512 px JPEGs and PNGs, about what real
photographs and generator samples look like), then lets `--raters` raters answer the whole quiz at
once over HTTP on 127.0.0.1 (one thread each: state, image, answer per step). Prints the creation
time, database size, requests per second and latency percentiles. Figures are printed, never
asserted.
"""

import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import click
import numpy as np
from lesion_data.phantom import generate_phantoms
from lesion_turing import Study, StudySpec, create_study, make_server
from PIL import Image


def rater(base: str, name: str, latencies: list[float]) -> None:
    def timed(request):
        start = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            body = response.read()
        latencies.append(time.perf_counter() - start)
        return body

    request = urllib.request.Request(f"{base}/raters", data=f"name={name}".encode(), method="POST")
    token = urllib.request.urlopen(request).url.rsplit("/", 1)[1]  # follows the 303 to /r/<token>
    while (item := json.loads(timed(f"{base}/api/r/{token}/state"))["item"]) is not None:
        timed(f"{base}/api/r/{token}/image/{item}")
        timed(urllib.request.Request(
            f"{base}/api/r/{token}/answer", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"item": item, "answer": "real", "confidence": 3}).encode()))


@click.command()
@click.option("--n", default=60, show_default=True)
@click.option("--size", default=256, show_default=True)
@click.option("--raters", default=8, show_default=True)
def main(n, size, raters):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, seed, suffix in (("real", 1, ".jpg"), ("fake", 2, ".png")):
            (root / name).mkdir()
            for i, im in enumerate(generate_phantoms(n // 2, 512, seed)[0]):
                Image.fromarray(im).save(root / name / f"{i}{suffix}")
        start = time.perf_counter()
        create_study(root / "s.sqlite", StudySpec(str(root / "real"), str(root / "fake"), n=n, size=size))
        print(f"study of {n} images at {size} px: created in {time.perf_counter() - start:.2f} s, "
              f"{(root / 's.sqlite').stat().st_size / 2**20:.1f} MiB")
        study = Study(root / "s.sqlite")
        server = make_server(study)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        latencies: list[float] = []
        threads = [threading.Thread(target=rater, args=(base, f"r{i}", latencies)) for i in range(raters)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
        print(f"{raters} raters x {n} images: {len(latencies)} requests in {wall:.2f} s "
              f"({len(latencies) / wall:.0f} req/s); latency p50 {ms[0]:.1f} ms, p95 {ms[1]:.1f} ms, p99 {ms[2]:.1f} ms; "
              f"{len(study.answers())} answers stored")
        server.shutdown()
        server.server_close()
        study.close()


if __name__ == "__main__":
    main()
