"""`smose explain`: the self-contained HTML report, report.md with its PNGs, SMOSE and dense runs."""

import base64
import binascii
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smose.cli import main
from smose.evaluate import evaluate
from smose.interpret.report import segments
from smose.serialization import load_model
from smose.tasks.envs import make_env
from smose.tasks.features import observation_names
from smose.training.config import TrainConfig
from smose.training.trainer import train

SECTIONS = ("summary", "router", "experts", "usage", "means", "trees", "returns")
MIN_PNG_BYTES = 2_000
MIN_PNG_SIDE = 100


class ReportParser(HTMLParser):
    """Collects, per <section id>, the <img> sources and the visible text; flags anything fetched from outside."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = {"images": [], "text": []}
        elif tag == "img":
            self.sections[self.current]["images"].append(attrs["src"])
        if tag in ("script", "link", "iframe") or any(
            k in ("src", "href") and v and re.match(r"(https?:)?//", v) for k, v in attrs.items()
        ):
            self.external.append(f"<{tag} {attrs}>")

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.sections[self.current]["text"].append(data)


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    for section in parser.sections.values():
        section["text"] = " ".join(section["text"])
    return parser


def check_png(data: bytes, where: str) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{where}: not a PNG signature"
    assert len(data) >= MIN_PNG_BYTES, f"{where}: PNG of only {len(data)} bytes"
    image = Image.open(io.BytesIO(data))
    image.verify()  # checks the chunks and CRCs
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and min(image.size) >= MIN_PNG_SIDE, f"{where}: {image.format} {image.size}"
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5, f"{where}: the image is blank"
    return image


def decode_data_uri(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), f"image not embedded as base64 PNG: {src[:60]}"
    try:
        return base64.b64decode(src[len(prefix):], validate=True)
    except binascii.Error as exc:
        pytest.fail(f"invalid base64 image: {exc}")


def markdown_images(report_dir: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (report_dir / "report.md").read_text())


@pytest.fixture(scope="module")
def explained(hopper_run, tmp_path_factory) -> Path:
    """A copy of the shared Hopper run explained from scratch: explain must distill the trees itself."""
    run = tmp_path_factory.mktemp("explain") / "hopper"
    shutil.copytree(hopper_run, run, ignore=shutil.ignore_patterns("trees", "report"))
    assert main(["explain", str(run), "--episodes", "3"]) == 0
    return run


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory) -> Path:
    config = TrainConfig(env="Hopper-v5", algo="sac-s", steps=300, learning_starts=100, batch_size=32,
                         eval_every=150, eval_episodes=1, seed=0)
    return train(config, tmp_path_factory.mktemp("runs") / "dense", progress=False)


def test_html_report_has_every_section_with_embedded_pngs(explained):
    report = parse_report(explained / "report" / "index.html")
    assert tuple(report.sections) == SECTIONS
    assert not report.external, f"the report fetches external resources: {report.external}"
    for name, section in report.sections.items():
        assert section["images"], f"section {name!r} has no image"
        for i, src in enumerate(section["images"]):
            check_png(decode_data_uri(src), f"{name} image {i}")


def test_markdown_references_the_pngs_beside_it(explained):
    report_dir = explained / "report"
    names = markdown_images(report_dir)
    html_images = sum(len(s["images"]) for s in parse_report(report_dir / "index.html").sections.values())
    assert len(names) == len(set(names)) == html_images
    for name in names:
        assert "/" not in name and name.endswith(".png")
        check_png((report_dir / name).read_bytes(), name)
    assert sorted(p.name for p in report_dir.glob("*.png")) == sorted(names)
    text = (report_dir / "report.md").read_text()
    for section in SECTIONS:
        assert f'<a id="{section}"></a>' in text


def test_explain_distils_missing_trees_and_reports_their_fidelity(explained):
    fidelity = json.loads((explained / "trees" / "fidelity.json").read_text())
    sections = parse_report(explained / "report" / "index.html").sections
    trees = sections["trees"]["text"]
    assert f"{100 * fidelity['per-expert']['agreement']:.1f}%" in trees
    assert f"{100 * fidelity['multiclass']['agreement']:.1f}%" in trees
    closed_loop = fidelity["per-expert"]["closed_loop_agreement"]
    assert f"on {100 * closed_loop:.1f}% of the steps they route themselves" in sections["summary"]["text"]
    rules = (explained / "trees" / "multiclass.txt").read_text().strip()
    assert rules.splitlines()[1] in trees  # the text rules with feature names are in the page
    assert re.search(r"(YES|NO) \d\.\d\d", trees)
    returns = sections["returns"]["text"]
    assert "per-expert trees" in returns and "multiclass trees" in returns
    assert f"{fidelity['returns']['neural']['mean']:.3g}" in returns
    # Every per-expert tree with a split is drawn; single-leaf trees are only named.
    markdown = (explained / "report" / "report.md").read_text()
    drawn = {int(m) for m in re.findall(r"tree-per-expert-(\d+)\.png", markdown)}
    split = {t["expert"] for t in json.loads((explained / "trees" / "per-expert.json").read_text())["trees"]
             if t["n_leaves"] > 1}
    assert drawn == split


def test_expert_sections_match_the_policy(explained):
    """Heat maps exist exactly for the experts the deterministic policy uses; names and call-outs speak of features."""
    actor, meta = load_model(explained)
    env = make_env(meta["env_id"])
    usage = evaluate(actor, env, 3, 0)["expert_usage"]  # the same episodes explain rolled out
    env.close()
    used = {m for m, u in enumerate(usage) if u > 0}
    report_dir = explained / "report"
    assert {int(m) for m in re.findall(r"expert-(\d+)\.png", " ".join(markdown_images(report_dir)))} == used
    sections = parse_report(report_dir / "index.html").sections
    callout = r"Expert (\d+) pushes (thigh|leg|foot) torque (up|down) when ([a-z ]+) grows \(w=([+-]\d+\.\d+)"
    callouts = re.findall(callout, sections["experts"]["text"])
    assert {int(c[0]) for c in callouts} == used
    obs_names = observation_names("Hopper-v5", 11)
    weight = actor.expert_weight.detach().numpy()
    for m, act, direction, feature, w in callouts:
        assert (direction == "up") == (float(w) > 0)
        exact = weight[int(m), ["thigh", "leg", "foot"].index(act), obs_names.index(feature)]
        assert abs(exact - float(w)) <= 0.005
    favoured = re.findall(r"Expert (\d+) is favoured when ([a-z ]+?) (grows|falls) \(", sections["router"]["text"])
    assert {int(f[0]) for f in favoured} == used
    assert all(f[1] in obs_names for f in favoured)
    top = int(np.argmax(usage))
    assert f"expert {top} takes the most steps ({100 * usage[top]:.1f}%)" in sections["summary"]["text"]


def test_no_distill_says_how_to_get_trees(hopper_run, tmp_path):
    run = tmp_path / "hopper"
    shutil.copytree(hopper_run, run, ignore=shutil.ignore_patterns("trees", "report"))
    assert main(["explain", str(run), "--episodes", "1", "--no-distill"]) == 0
    assert not (run / "trees").exists()
    sections = parse_report(run / "report" / "index.html").sections
    assert tuple(sections) == SECTIONS
    assert f"smose distill {run}" in sections["trees"]["text"]
    assert f"smose distill {run}" in sections["returns"]["text"]


def test_dense_baseline_report(dense_run, capsys):
    assert main(["explain", str(dense_run), "--episodes", "2"]) == 0
    assert "report/index.html" in capsys.readouterr().out
    report = parse_report(dense_run / "report" / "index.html")
    assert tuple(report.sections) == SECTIONS
    assert report.sections["summary"]["images"], "the training curve is missing"
    for src in report.sections["summary"]["images"]:
        check_png(decode_data_uri(src), "dense summary")
    for name in SECTIONS[1:]:
        assert "dense sac-s baseline" in report.sections[name]["text"], name
    assert not (dense_run / "trees").exists()
    for name in markdown_images(dense_run / "report"):
        check_png((dense_run / "report" / name).read_bytes(), name)


def test_explain_errors_are_one_line(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smose: error:") and "no such run directory" in err and "\n" not in err


def test_segments():
    assert segments(np.array([2, 2, 0, 0, 0, 2])) == [(0, 2, 2), (2, 5, 0), (5, 6, 2)]
    assert segments(np.array([], dtype=np.int64)) == []
