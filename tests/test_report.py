"""`bltbench report`: the HTML renders in headless Chromium with every plot visible (checked on a
screenshot), the PDF has one page per section, and bad input is a one-line error."""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from bltbench.reporting import report as report_module
from bltbench.reporting.report import NO_DATA, SECTIONS, write_report
from bltbench.reporting.rundata import load_run
from bltbench.reporting.tables import method_costs, pareto_front, projected_gb
from bltbench.runner.suite import parse_suite
from bltbench.runner.sweep import run_suite
from conftest import run_cli

DATA = Path(os.environ.get("BLTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "flores101").is_dir(), reason="needs the shared data directory")

# Every plot has data: two tasks (the per-task heatmap), a quality metric per task (Pareto), the
# diversity task (TTR), verifying methods (bytes per verification), a projection stored per record.
SUITE = {
    "name": "report-t",
    "model": "random:tiny",
    "methods": ["blt", "blt-s-4", "blt-d-4@confidence=0.7", "blt-dv-4"],
    "sampling": {"temperature": 0.0},
    "project": ["blt-1b"],
    "tasks": [{"name": "flores-fr-en", "limit": 1, "max_bytes": 8},
              {"name": "diversity", "limit": 3, "max_bytes": 12, "sampling": {"temperature": 1.0, "top_p": 0.9}}],
}
PLOTS = [s.key for s in SECTIONS if s.key not in ("summary", "samples")]  # samples is tables only
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real sweep, a few seconds: one torch thread, which on a shared 2-core machine is far faster."""
    folder = tmp_path_factory.mktemp("run") / "report-t"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_suite(parse_suite(SUITE, "report-t.yaml"), folder, data_dir=str(DATA))
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="module")
def rendered(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    paths = write_report(run_dir, ("html", "pdf"), out)
    assert sorted(p.name for p in paths) == ["report.html", "report.pdf"]
    return out


def _pdf_pages(data: bytes) -> tuple[int, list[int]]:
    """Page objects and the page tree's /Count values, read from the raw PDF (matplotlib writes page
    dictionaries uncompressed)."""
    text = data.decode("latin-1")
    pages = len(re.findall(r"/Type\s*/Page(?![a-zA-Z])", text))
    counts = [int(c) for c in re.findall(r"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", text, re.S)]
    counts += [int(c) for c in re.findall(r"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", text, re.S)]
    return pages, counts


def test_pdf_opens_with_one_page_per_section(rendered):
    """One page per section, and the wall-clock section's tables (speedups, device profile) on a page after its plot."""
    data = (rendered / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages, counts = _pdf_pages(data)
    assert pages == len(SECTIONS) + 1 == 10
    assert counts and set(counts) == {len(SECTIONS) + 1}
    assert [p for p in rendered.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_html_is_one_self_contained_file_with_every_section(rendered):
    text = (rendered / "report.html").read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', text) == [s.key for s in SECTIONS]
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) == len(PLOTS) and all(src.startswith("data:image/png;base64,") for src in images)
    assert NO_DATA not in text
    assert not re.search(r'(src|href)="(https?:|//|file:)|<link|<script|url\(', text)
    for needle in ("MB/byte", "NFEs per byte", "exact match", "blt-1b", "blt-7b", "TTR", "BLEU", "chrF", "blt-dv-4",
                   "roofline / measured", "paper proxy", "Device profile the roofline priced with", "fixed cost per call"):
        assert needle in text


def test_projections_price_the_stored_nfe_counts_like_the_meter(run_dir):
    run = load_run(run_dir)
    stored = run.samples["stored_gb_blt-1b"]
    ours = [projected_gb(d, g, "blt-1b") for d, g in zip(run.samples["nfe_decoder"], run.samples["nfe_global"])]
    assert list(stored) == pytest.approx(ours, rel=1e-9)
    costs = method_costs(run).set_index("method")
    assert costs.loc["blt", "reduction"] == 0 and costs.loc["blt", "proj_blt-7b"] > costs.loc["blt", "proj_blt-1b"] > 0
    assert costs.loc["blt", "bytes_per_decoder_pass"] == pytest.approx(1.0, abs=0.02)
    assert costs.loc["blt-s-4", "exact_match"] == 1.0 and costs.loc["blt-s-4", "bytes_per_verify"] > 0
    records = [json.loads(line) for line in (Path(run_dir) / "records.jsonl").read_text().splitlines()]
    verified = [r for r in records if r["method"] == "blt-s-4"]
    pooled = sum(r["committed_bytes"] for r in verified) / sum(r["verify_rounds"] for r in verified)
    assert costs.loc["blt-s-4", "bytes_per_verify"] == pytest.approx(pooled)


def test_bytes_per_verify_pools_rounds_and_reads_older_records_as_a_mean():
    import pandas as pd

    from bltbench.reporting.tables import _bytes_per_verify

    nan = float("nan")
    rounds = pd.DataFrame({"verify_rounds": [1, 9], "committed_bytes": [8, 9], "accepted_per_verify": [8.0, 1.0]})
    assert _bytes_per_verify(rounds) == pytest.approx(17 / 10)  # pooled; the mean of the ratios is 4.5
    older = pd.DataFrame({"verify_rounds": [nan, nan], "committed_bytes": [nan, nan], "accepted_per_verify": [8.0, 1.0]})
    assert _bytes_per_verify(older) == pytest.approx(4.5)


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (0.5, 0.1), (1.0, 0.5)]
    assert pareto_front(points) == [4, 0, 5, 1]


def _run_copy(run_dir: Path, dest: Path, keep) -> Path:
    shutil.copytree(run_dir, dest)
    lines = [line for line in (dest / "records.jsonl").read_text().splitlines() if keep(json.loads(line))]
    (dest / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    rows = [r for r in json.loads((dest / "summary.json").read_text()) if keep(r)]
    (dest / "summary.json").write_text(json.dumps(rows))
    return dest


def test_sections_without_data_say_so_and_keep_their_page(run_dir, tmp_path):
    """No diversity task and no verifying method: the TTR section says so, the PDF keeps its 10 pages; a torn
    last record line (a killed sweep) is left out; without summary.json quality falls back."""
    run = _run_copy(run_dir, tmp_path / "no-ttr", lambda r: r["task"] != "diversity")
    with open(run / "records.jsonl", "a") as f:
        f.write('{"method": "blt", "task": "flores')
    (run / "summary.json").unlink()
    write_report(run, ("html", "pdf"), tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    ttr = text[text.index('<section id="ttr"'):]
    assert ttr[: ttr.index("</section>")].count(NO_DATA) == 1
    pareto = text[text.index('<section id="pareto"'):]
    pareto = pareto[: pareto.index("</section>")]
    all_floor = "<img " not in pareto  # every quality metric at 0 for every method: said in words instead
    assert not all_floor or ("Every method scores 0 on" in pareto and NO_DATA in pareto)
    assert text.count("<img ") == len(PLOTS) - 1 - all_floor and "summary.json is missing" in text
    assert _pdf_pages((tmp_path / "out" / "report.pdf").read_bytes())[0] == len(SECTIONS) + 1  # + wall-clock tables


def test_scoring_task_records_reach_the_quality_table_only(run_dir, tmp_path):
    """Likelihood / bits-per-byte records generate no bytes: their metrics are reported, their costs
    stay out of every per-generated-byte figure."""
    run = _run_copy(run_dir, tmp_path / "scoring", lambda r: True)
    record = {"method": "blt", "task": "arc-easy", "sample_id": "arc-easy/0", "kind": "scoring",
              "score": {"acc": 1.0}, "nfe": {"entropy": 0, "encoder": 4, "global": 4, "decoder": 4},
              "bytes_scored": 90, "bytes_generated": 0, "bandwidth_gb": 0.5, "bandwidth_gb_ext": 0.6,
              "bandwidth_gb_kv": 0.7, "wall_s": 0.1, "time": 0.0}
    with open(run / "records.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    rows = json.loads((run / "summary.json").read_text())
    rows.append({"method": "blt", "task": "arc-easy", "kind": "scoring", "samples": 1, "complete": True,
                 "bytes": 0, "bytes_scored": 90, "sequences": 4, "acc": 1.0, "gb_per_byte": 0.5 / 90})
    (run / "summary.json").write_text(json.dumps(rows))
    before, after = method_costs(load_run(run_dir)), method_costs(load_run(run))
    assert after.equals(before)
    write_report(run, ("html",), tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    assert "arc-easy (1 records)" in text and ">acc<" in text and ">bytes_scored<" not in text


def test_a_failed_render_writes_nothing(run_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report_module.plots, "projection_figure", broken)
    with pytest.raises(RuntimeError):
        write_report(run_dir, ("html", "pdf"), tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_writes_the_report_and_fails_with_one_line(capsys, run_dir, tmp_path):
    code, out, err = run_cli(capsys, "report", str(run_dir), "--format", "pdf", "--out", str(tmp_path / "r"))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'r' / 'report.pdf'}"
    assert not (tmp_path / "r" / "report.html").exists()
    (tmp_path / "empty").mkdir()
    for args, fragment in [
        ((str(tmp_path / "nope"),), "unknown run"),
        ((str(tmp_path / "empty"),), "holds no records"),
        ((str(run_dir), "--format", "html,docx"), "unknown report format docx"),
    ]:
        code, out, err = run_cli(capsys, "report", *args, "--out", str(tmp_path / "bad"))
        assert code == 2 and err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


# --- headless Chromium -------------------------------------------------------------------------------

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img')].map(i => { const r = i.getBoundingClientRect();
    return {section: i.closest('section') ? i.closest('section').id : null, complete: i.complete,
            natural: [i.naturalWidth, i.naturalHeight], box: [r.left + scrollX, r.top + scrollY, r.width, r.height],
            visibility: getComputedStyle(i).visibility}; });
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({imgs, width: document.documentElement.scrollWidth,
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; asked for before the rendered report so a skip costs no sweep."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("BLTBENCH_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not on PATH and BLTBENCH_REQUIRE_CHROMIUM=1 (make setup installs it)")
        pytest.skip("chromium is not on PATH (make setup installs it; BLTBENCH_REQUIRE_CHROMIUM=1 makes this fail)")
    return found


def _browse(chromium: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _ink(region: Image.Image) -> tuple[float, float]:
    """Shares of pixels that are not near-white, and that are clearly coloured (plot marks, not text)."""
    pixels = list(region.convert("RGB").getdata())
    inked = sum(1 for r, g, b in pixels if min(r, g, b) < 225)
    coloured = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)
    return inked / len(pixels), coloured / len(pixels)


def _plot_problems(chromium: str, page: Path, work: Path) -> list[str]:
    """Load the page in Chromium, lay out its images (a probe script on a copy of the page records their
    boxes), screenshot the page itself at full height and look at each plot's region. One problem
    string per plot section that is missing, not loaded, hidden, overlapped or blank."""
    probe = work / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _browse(chromium, "--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the page did not load"
    layout = json.loads(html.unescape(found.group(1)))
    shot = work / "shot.png"
    _browse(chromium, f"--window-size=1400,{layout['height']}", f"--screenshot={shot}", page.as_uri())
    image = Image.open(shot)
    assert image.size == (1400, layout["height"])
    assert _ink(image.crop((0, 0, 1400, 200)))[0] > 0.3  # the dark header band rendered
    problems = [f"{key}: no plot" for key in PLOTS if key not in [i["section"] for i in layout["imgs"]]]
    bottom = 0.0
    for img in layout["imgs"]:
        key, (x, y, w, h) = img["section"], img["box"]
        if not img["complete"] or min(img["natural"]) == 0:
            problems.append(f"{key}: image did not load")
        elif img["visibility"] != "visible" or w < 800 or h < 500 or x < 0 or x + w > 1400 or y + h > layout["height"]:
            problems.append(f"{key}: not shown in full ({w:.0f}x{h:.0f} at {x:.0f},{y:.0f})")
        elif y < bottom:
            problems.append(f"{key}: overlaps the plot above it")
        else:
            inked, coloured = _ink(image.crop((round(x), round(y), round(x + w), round(y + h))))
            if inked < 0.03 or coloured < 0.001:
                problems.append(f"{key}: blank ({inked:.3f} inked, {coloured:.4f} coloured)")
        bottom = max(bottom, y + h)
    return problems


@pytest.mark.slow  # 8-11 s each: run by `make test-slow` and by .ci/run
def test_html_renders_in_chromium_with_every_plot_visible(chromium, rendered, tmp_path):
    assert _plot_problems(chromium, rendered / "report.html", tmp_path) == []


def _blank_axes_png() -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.69, 8.27))
    ax = fig.subplots()
    ax.set_xlabel("MB per byte")
    ax.set_ylabel("quality")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow  # 8-11 s each: run by `make test-slow` and by .ci/run
def test_the_screenshot_check_catches_blank_broken_and_missing_plots(chromium, rendered, tmp_path):
    """The same check on a damaged copy: an empty axis, a corrupt image and a dropped plot are caught."""
    text = (rendered / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="(data:image/png;base64,[^"]*)"', text)
    text = text.replace(sources[1], "data:image/png;base64," + _blank_axes_png())
    text = text.replace(sources[2], "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB")
    text = re.sub(r'<figure class="plot" data-section="ttr">.*?</figure>', "", text, flags=re.S)
    damaged = tmp_path / "damaged.html"
    damaged.write_text(text, encoding="utf-8")
    problems = _plot_problems(chromium, damaged, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["ttr", PLOTS[1], PLOTS[2]], problems
    assert "blank" in problems[1] and "did not load" in problems[2]


def test_sample_outputs_show_every_method_side_by_side_escaped(run_dir, tmp_path):
    run = _run_copy(run_dir, tmp_path / "hostile", lambda r: True)
    lines = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    first = next(r for r in lines if r.get("kind", "generation") == "generation")
    first["output"] = "<script>alert(1)</script>\x07bell\nnext line"
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    write_report(run, ("html",), tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    samples = text[text.index('<section id="samples"'):]
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;\\x07bell\\nnext line" in samples
    shown_methods = {m for m in json.loads((run / "summary.json").read_text()) for m in [m["method"]]}
    for method in shown_methods:
        assert f"<th>{method}</th>" in samples, method
    assert samples.count(f"{first['task']}: first ") == 1


def test_quality_rests_on_n_samples_with_bootstrap_intervals_for_means():
    import numpy as np

    from bltbench.reporting.tables import bootstrap_interval

    rng = np.random.default_rng(1)
    few, many = rng.binomial(1, 0.3, 8).astype(float), rng.binomial(1, 0.3, 800).astype(float)
    lo, hi = bootstrap_interval(few)
    assert lo <= few.mean() <= hi and hi - lo > 0.3  # eight samples: a wide interval
    lo2, hi2 = bootstrap_interval(many)
    assert lo2 <= many.mean() <= hi2 and hi2 - lo2 < 0.08  # 800: narrow, near the 1.96 sigma of a mean
    assert bootstrap_interval(np.ones(5)) == (1.0, 1.0)


def test_quality_table_shows_n_and_intervals(rendered):
    text = (rendered / "report.html").read_text(encoding="utf-8")
    quality = text[text.index("Quality per task"):]
    quality = quality[: quality.index("</table>")]
    assert "<th>n</th>" in quality
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", quality)  # a mean metric (TTR, pass@1) with its interval



def test_corpus_metrics_get_n_but_no_interval(run_dir):
    from bltbench.reporting.rundata import load_run
    from bltbench.reporting.tables import quality, quality_uncertainty

    run = load_run(run_dir)
    q = quality(run)
    spread = quality_uncertainty(run, q)
    by_metric = {}
    for (method, task, metric), (n, interval) in spread.items():
        by_metric.setdefault(metric, []).append((n, interval))
        assert n == run.records_per_task[task] // len(run.methods), (method, task)  # every method ran every sample
    assert all(interval is None for _, interval in by_metric["bleu"])  # corpus BLEU is no mean of sentences
    assert all(interval is not None for _, interval in by_metric["ttr"])


def test_duplicated_rows_are_refused_in_one_line(run_dir, tmp_path, capsys):
    from conftest import run_cli

    run = _run_copy(run_dir, tmp_path / "twice", lambda r: True)
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text("\n".join(lines + lines[:3]) + "\n")
    code, out, err = run_cli(capsys, "report", str(run), "--out", str(tmp_path / "out"))
    assert code == 2 and "3 duplicated (method, task, sample) row(s)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_every_method_gets_a_distinct_colour_blind_safe_hue():
    import itertools

    from bltbench.reporting.plots import palette

    methods = [f"m{i}" for i in range(9)]
    colours = palette(methods)
    distances = [sum((a - b) ** 2 for a, b in zip(colours[x], colours[y])) ** 0.5
                 for x, y in itertools.combinations(methods, 2)]
    assert min(distances) > 0.15
    assert palette(methods[:3]) == {m: colours[m] for m in methods[:3]}  # a method keeps its colour


def test_wall_clock_from_two_devices_is_reported_by_device_never_pooled(run_dir, tmp_path):
    """A run whose diversity samples were timed on a GPU worker and the rest on this CPU: the method
    tables give no pooled median, the wall-clock section one row per (method, device)."""
    run = _run_copy(run_dir, tmp_path / "two-devices", lambda r: True)
    rows = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    for r in rows:
        r["device"], r["device_name"] = ("cuda:0", "NVIDIA H200") if r["task"] == "diversity" else ("cpu", "Xeon")
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    costs = method_costs(load_run(run))
    assert costs["ms_per_byte"].isna().all()  # never one median over two devices
    split = costs.set_index("method")["timing_by_device"]["blt"]
    assert set(split) == {"cpu (Xeon)", "cuda:0 (NVIDIA H200)"}
    gpu = [r for r in rows if r["method"] == "blt" and r["task"] == "diversity"]
    expected = statistics.median(1e3 * r["decode_s"] / r["bytes_generated"] for r in gpu)
    assert split["cuda:0 (NVIDIA H200)"]["ms_per_byte"] == pytest.approx(expected)
    write_report(run, ("html",), tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    assert "Decode time by device" in text and "cuda:0 (NVIDIA H200)" in text and "cpu (Xeon)" in text
