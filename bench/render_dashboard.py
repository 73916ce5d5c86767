"""Render the Grafana dashboard's panels to a PNG from real scraped data, without Grafana.

    .venv/bin/python bench/render_dashboard.py [--out docs/monitoring-dashboard.png]

What it does, all on loopback:

1. Two real local searches (`kubetune run --metrics-port`), side by side: `quad-tpe`
   (TPE + ASHA) and `quad-random` (random + ASHA, whose trials crash for x > 0.7). The
   trial is `tests/local/trials/quadratic.py`, the real trial SDK reporting a synthetic
   loss every step. `quad-random`'s runner is killed with SIGKILL a third of the way
   through and started again: its running attempts are interrupted and resume from their
   checkpoints, as after a spot reclaim.
2. A real Prometheus (Debian's `prometheus` package) scrapes both every second, as job
   `kubetune-operator` (the job name the dashboard's "Operator up" panel and the
   ServiceMonitor use).
3. The snapshot is taken a few seconds after `quad-tpe` ends, while `quad-random` still
   runs, as a Grafana screenshot of a live search would be. Every panel of
   manifests/monitoring/grafana-dashboard.json is then drawn with matplotlib from its own
   PromQL queries, sent unchanged to that Prometheus (`$namespace` and `$experiment` set
   to All, `$__rate_interval` to 10s), laid out on the dashboard's grid.

Local runs have no node pools and no cost: those panels show "No data", as Grafana does.
On a cluster the operator's capacity manager fills them.

Needs matplotlib (the `dev` extra) and `prometheus` on PATH (apt-get install prometheus).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
TRIAL = ROOT / "tests" / "local" / "trials" / "quadratic.py"
VARIABLES = {"$namespace": ".*", "$experiment": ".*", "$__rate_interval": "10s"}
MAX_TRIALS = 30
KUBETUNE_RUN = [sys.executable, "-m", "kubetune.cli", "run"]

# Grafana's dark theme, roughly.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff"]
PHASE_COLORS = {
    "Sampling": "#8e8e8e",
    "Pending": "#b877d9",
    "Running": "#5794f2",
    "Paused": "#f2cc0c",
    "Completed": "#73bf69",
    "Stopped": "#ff9830",
    "Failed": "#f2495c",
    "continue": "#5794f2",
    "pause": "#f2cc0c",
    "stop": "#ff9830",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


# ----- the runs -----------------------------------------------------------------------


def experiment(name: str, algorithm: str, fail_above: float | None) -> dict[str, Any]:
    command = ["python", str(TRIAL), "--sleep=0.4"]
    if fail_above is not None:
        command.append(f"--fail-if-x-above={fail_above}")
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
            ],
            "algorithm": {"name": algorithm, "seed": 4},
            "scheduler": {
                "name": "asha",
                "resource": "step",
                "minResource": 1,
                "maxResource": 27,
                "reductionFactor": 3,
            },
            "budget": {"maxTrials": MAX_TRIALS, "parallelTrials": 2},
            "trialTemplate": {
                "spec": {"containers": [{"name": "trial", "image": "x", "command": command}]}
            },
        },
    }


class Run:
    def __init__(self, workdir: Path, document: dict[str, Any]) -> None:
        self.name = document["metadata"]["name"]
        self.directory = workdir / self.name
        self.directory.mkdir()
        self.file = self.directory / "experiment.yaml"
        self.file.write_text(yaml.safe_dump(document))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Run:
        log = (self.directory / "run.log").open("ab")
        self.process = subprocess.Popen(
            [*KUBETUNE_RUN, str(self.file), "--no-live", "--metrics-port", str(self.port)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # the runner and its trials, at once
        self.process.wait()

    def trials(self) -> int:
        """Trials sampled so far, from the run's own /metrics (0 while it is down)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("kubetune_trials{") and 'phase="Sampling"' not in line
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Prometheus:
    def __init__(self, workdir: Path, targets: list[int]) -> None:
        self.port = free_port()
        self.directory = workdir / "prometheus"
        self.directory.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "kubetune-operator",
                    "scrape_timeout": "900ms",
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}],
                }
            ],
        }
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit(
                "render_dashboard: prometheus is not installed (apt-get install prometheus)"
            )
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=(self.directory / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("render_dashboard: prometheus did not become ready")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        answer = get_json(f"{self.url}/api/v1/query_range?{query}", timeout=30)
        if answer.get("status") != "success":
            raise RuntimeError(f"{expr}: {answer}")
        return answer["data"]["result"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def collect(workdir: Path, snapshot_after: float) -> tuple[Prometheus, float, float]:
    """Run the two searches under Prometheus; (prometheus, start, snapshot time)."""
    tpe = Run(workdir, experiment("quad-tpe", "tpe", None))
    rnd = Run(workdir, experiment("quad-random", "random", 0.7))
    prometheus = Prometheus(workdir, [tpe.port, rnd.port]).start()
    start = time.time()
    tpe.start()
    time.sleep(8)  # let the first run lead
    rnd.start()
    killed = False
    first_end = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            time.sleep(1)
            if not killed and rnd.trials() >= MAX_TRIALS // 3:
                print("render_dashboard: SIGKILL quad-random's runner and trials", flush=True)
                rnd.kill()
                time.sleep(4)
                rnd.start()
                killed = True
            if first_end is None and not (tpe.running() and rnd.running()):
                first_end = time.time()
            if first_end is not None and time.time() - first_end >= snapshot_after:
                break
        else:
            raise SystemExit("render_dashboard: the runs took too long")
        snapshot = time.time()
        time.sleep(2)  # the last scrape before the snapshot is in
    finally:
        for run in (rnd, tpe):
            run.stop()
    return prometheus, start, snapshot


# ----- drawing --------------------------------------------------------------------------


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value or '""')
    return text.replace("{{namespace}}/", "").replace("{{", "").replace("}}", "")


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "currencyUSD":
        return f"${value:,.2f}"
    if unit == "reqps":
        return f"{value:.3g} /s"
    return f"{value:.4g}"


def draw(prometheus: Prometheus, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_w, unit_h = 0.62, 0.36  # inches per grid column / row
    header = 0.9
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + header), facecolor=BACKGROUND)
    height = rows * unit_h + header
    fig.text(
        0.01,
        1 - 0.35 / height,
        f"{board['title']}  ·  namespace: All  ·  experiment: All  ·  "
        f"{datetime.fromtimestamp(start):%H:%M:%S} to {datetime.fromtimestamp(end):%H:%M:%S}  ·  "
        "rendered from Prometheus by bench/render_dashboard.py",
        color=TEXT,
        fontsize=12,
        va="center",
    )
    step = 1.0
    start, end = float(int(start)), float(int(end))
    times = np.arange(start, end + step / 2, step)
    for panel in panels:
        pos = panel["gridPos"]
        pad_x, pad_y = 0.06 / 24, 0.1 / height
        left = pos["x"] / 24 + pad_x
        width = pos["w"] / 24 - 2 * pad_x
        top = 1 - (header + pos["y"] * unit_h) / height
        box_h = pos["h"] * unit_h / height
        frame = fig.add_axes((left, top - box_h + pad_y, width, box_h - 2 * pad_y))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        frame.text(0.015, 0.94, panel["title"], color=TEXT, fontsize=10.5, weight="bold",
                   transform=frame.transAxes, va="top")  # fmt: skip
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        series = []
        for target in panel["targets"]:
            for result in prometheus.query_range(substitute(target["expr"]), start, end, step):
                points = [(float(t), float(v)) for t, v in result["values"]]
                points = [(t, v) for t, v in points if np.isfinite(v)]
                if points:
                    series.append(
                        (legend(target.get("legendFormat", ""), result["metric"]), points)
                    )
        if panel["type"] == "stat":
            if not series:
                frame.text(0.5, 0.4, "No data", color="#8e8e8e", fontsize=20, ha="center",
                           transform=frame.transAxes)  # fmt: skip
                continue
            value = series[0][1][-1][1]
            text, color = fmt_value(value, unit), "#73bf69"
            for mapping in panel["fieldConfig"]["defaults"].get("mappings", []):
                option = mapping.get("options", {}).get(str(int(value)))
                if option:
                    text, color = option["text"], {"red": "#f2495c"}.get(option["color"], "#73bf69")
            spark = frame.inset_axes((0, 0, 1, 0.45))
            xs, ys = zip(*series[0][1], strict=True)
            spark.fill_between(xs, ys, color=color, alpha=0.18, lw=0)
            spark.plot(xs, ys, color=color, lw=1)
            spark.set_axis_off()
            spark.set_xlim(start, end)
            frame.text(0.5, 0.42, text, color=color, fontsize=26, weight="bold", ha="center",
                       transform=frame.transAxes)  # fmt: skip
            continue
        plot = frame.inset_axes((0.07, 0.2, 0.9, 0.64))
        plot.set_facecolor(PANEL)
        plot.tick_params(colors=TEXT, labelsize=7.5)
        for spine in plot.spines.values():
            spine.set_visible(False)
        plot.grid(True, color=GRID, lw=0.6)
        to_dates = np.vectorize(datetime.fromtimestamp)
        plot.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
        plot.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        plot.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))
        if not series:
            plot.set_yticks([])
            plot.text(0.5, 0.5, "No data", color="#8e8e8e", fontsize=14, ha="center",
                      va="center", transform=plot.transAxes)  # fmt: skip
            if "GPU" in panel["title"] or "Cost" in panel["title"]:
                note = "(local runs: node pools and cost come from the operator's capacity manager)"
                plot.text(0.5, 0.32, note, color="#8e8e8e", fontsize=8, ha="center",
                          transform=plot.transAxes)  # fmt: skip
            continue
        stacked = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {})
        colors = [
            PHASE_COLORS.get(name, PALETTE[i % len(PALETTE)]) for i, (name, _) in enumerate(series)
        ]
        if stacked.get("mode") == "normal":
            rows_ = []
            for _, points in series:
                lookup = {round(t): v for t, v in points}
                rows_.append([lookup.get(round(t), np.nan) for t in times])
            values = np.nan_to_num(np.array(rows_, dtype=float))
            plot.stackplot(to_dates(times), values, colors=colors, alpha=0.75,
                           labels=[n for n, _ in series], lw=0)  # fmt: skip
        else:
            for (name, points), color in zip(series, colors, strict=True):
                xs, ys = zip(*points, strict=True)
                dates = to_dates(np.array(xs))
                # Gaps (a target down) break the line, as Grafana draws them.
                gaps = np.diff(np.array(xs)) > 3 * step
                ys = np.array(ys, dtype=float)
                if gaps.any():
                    dates = np.insert(dates.astype(object), np.where(gaps)[0] + 1, None)
                    ys = np.insert(ys, np.where(gaps)[0] + 1, np.nan)
                plot.plot(dates, ys, color=color, lw=1.6, label=name)
        if unit == "s":
            plot.yaxis.set_major_formatter(lambda v, _: f"{v * 1000:g} ms" if v < 1 else f"{v:g} s")
        elif unit == "currencyUSD":
            plot.yaxis.set_major_formatter(lambda v, _: f"${v:g}")
        plot.legend(loc="upper left", bbox_to_anchor=(-0.02, -0.14), ncol=4, frameon=False,
                    fontsize=7.5, labelcolor=TEXT, handlelength=1.2, columnspacing=1.2)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor=BACKGROUND)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "monitoring-dashboard.png")
    parser.add_argument(
        "--snapshot-after", type=float, default=5.0, help="seconds after the first run ends"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-dashboard-"))
    prometheus = None
    try:
        prometheus, start, snapshot = collect(workdir, args.snapshot_after)
        draw(prometheus, start, snapshot, args.out)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"render_dashboard: kept {workdir}")
    size = args.out.stat().st_size
    print(f"render_dashboard: wrote {args.out} ({size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
