"""Look at a study's MLflow pages as a person does: `mlflow server` on loopback, headless Chromium, screenshots.

    .venv/bin/python tools/mlflow_screenshots.py --db mlflow.db --study quickstart --out docs/mlflow

Starts `mlflow server` on 127.0.0.1 (a free port) over the SQLite store ``--db`` (the artifacts stay where the
runs say they are), opens the study in headless Chromium (Debian's ``chromium`` package:
``apt-get install chromium``) through the DevTools protocol, waits until each page shows what it must show, and
saves one PNG per page under ``--out``:

- ``runs_table.png``: the experiment's runs table as clorch's address opens it (a training experiment, the
  study's shared view: runs by name, each config run followed by its trial runs, key metric columns);
- ``trial_artifacts.png``: a trial run's ``matrix.png`` in its artifacts tab;
- ``config_artifacts.png``: a config run's ``learning_curve.png``;
- ``trial_metrics.png``: a trial run's model-metrics tab (``acc_task_<j>`` per task as steps);
- ``plain_address.png``: the experiment at its bare address (``#/experiments/<id>``), what MLflow opens without
  clorch's query (its GenAI overview in MLflow 3.17: "Traces 0").

It also prints where the runs table's links lead (MLflow 3.17's drop ``workflowType``: a run page then opens
as the browser's GenAI / Model training switch says) and the description's link to the study's view. Before the
first page it marks MLflow's Assistant panel as already shown once (it opens itself on a local server's first
visit and covers a third of the page); nothing else is set in the browser.

Both the server and the browser are stopped (by their process group) when it ends. A PNG over 250 KB is reduced
to a 256 colour palette (Pillow) so it stays small enough to commit. Exit 0 when every page showed its expected text;
1 otherwise (the screenshot is still written, and what was missing is printed).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.results.tracking import ui_path  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(check, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited: {log.read_text()[-2000:] if log else ''}")
        try:
            found = check()
            if found:
                return found
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what}: not ready after {timeout_s:g} s" + (f"\n{log.read_text()[-2000:]}" if log else ""))


def start_group(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_mlflow(db: Path, work: Path, timeout_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "mlflow.log"
    proc = start_group([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                        "--backend-store-uri", f"sqlite:///{db.resolve()}"], log)

    def healthy() -> bool:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            return r.status == 200

    wait_for(healthy, timeout_s, "mlflow server", proc, log)
    return proc, base


class Browser:
    """Headless Chromium over the DevTools protocol (aiohttp's websocket client)."""

    def __init__(self, work: Path, width: int, height: int, timeout_s: float):
        exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if exe is None:
            raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
        self.width, self.height = width, height
        self.log = work / "chromium.log"
        self.proc = start_group([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--no-first-run", "--hide-scrollbars", f"--user-data-dir={work / 'profile'}",
                                 f"--window-size={width},{height}", "--remote-debugging-address=127.0.0.1",
                                 "--remote-debugging-port=0", "about:blank"], self.log)
        found = wait_for(lambda: re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", self.log.read_text()),
                         timeout_s, "chromium", self.proc, self.log)
        port = int(found[1])
        pages = wait_for(lambda: [t for t in get_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"],
                         timeout_s, "chromium's page")
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self._id = 0

    async def _call(self, ws, method: str, **params):
        self._id += 1
        await ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await ws.receive_json()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def _eval(self, ws, expression: str):
        return (await self._call(ws, "Runtime.evaluate", expression=expression, returnByValue=True))["result"].get(
            "value")

    async def run(self, url: str, expression: str, timeout_s: float = 5.0) -> object:
        """Open ``url`` and return the value of the JavaScript ``expression`` there: the first truthy value
        within ``timeout_s``, else the last one."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.ws_url, max_msg_size=0) as ws:
                await self._call(ws, "Page.navigate", url=url)
                deadline = time.monotonic() + timeout_s
                while True:
                    await asyncio.sleep(1.0)
                    value = await self._eval(ws, expression)
                    if value or time.monotonic() > deadline:
                        return value

    async def shoot(self, url: str, path: Path, expect: list[str], timeout_s: float, settle_s: float = 2.0,
                    ready: str | None = None) -> list[str]:
        """Open ``url``, wait until the page's text has every string of ``expect`` and the JavaScript ``ready``
        is true (or the timeout), screenshot. Returns what never showed."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.ws_url, max_msg_size=0) as ws:
                await self._call(ws, "Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                                 deviceScaleFactor=1, mobile=False)
                await self._call(ws, "Page.navigate", url=url)
                deadline = time.monotonic() + timeout_s
                missing = list(expect) + ([ready] if ready else [])
                while time.monotonic() < deadline:
                    text = await self._eval(ws, "document.body ? document.body.innerText : ''") or ""
                    missing = [e for e in expect if e not in text]
                    if ready and not await self._eval(ws, ready):
                        missing.append(ready)
                    if not missing:
                        break
                    await asyncio.sleep(1.0)
                await asyncio.sleep(settle_s)  # images and charts finish drawing
                shot = await self._call(ws, "Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return missing

    def close(self) -> None:
        stop_group(self.proc)


def shrink(path: Path, limit: int = 250_000) -> None:
    """Over ``limit`` bytes: a 256-colour palette PNG (UI screenshots have few colours), a fraction of the size."""
    try:
        from PIL import Image
    except ImportError:
        return
    if path.stat().st_size <= limit:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def pick_runs(base: str, experiment_id: str, study: str) -> dict[str, dict]:
    """The study run, a completed trial run and its config run, through the REST API."""
    api = f"{base}/api/2.0/mlflow"
    runs = get_json(f"{api}/runs/search", {"experiment_ids": [experiment_id], "max_results": 1000,
                                           "filter": f"tags.`clorch.study` = '{study}'",
                                           "order_by": ["tags.`mlflow.runName` ASC"]}).get("runs", [])

    def tags(run: dict) -> dict:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    by_level: dict[str, list[dict]] = {}
    for r in runs:
        by_level.setdefault(tags(r).get("clorch.level", ""), []).append(r)
    trials = [r for r in by_level.get("trial", []) if tags(r).get("clorch.status") == "completed"]
    if not trials:
        raise SystemExit(f"no completed trial run of study {study!r} in experiment {experiment_id}")
    trial = trials[0]
    config = next(r for r in by_level["config"] if r["info"]["run_id"] == tags(trial)["mlflow.parentRunId"])
    return {"study": by_level["study"][0], "trial": trial, "config": config}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="mlflow.db", help="the SQLite store (default: ./mlflow.db)")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--experiment", help="experiment name (default: the study name)")
    p.add_argument("--out", default="docs/mlflow", help="folder for the PNGs (default: docs/mlflow)")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=240, help="seconds to wait for the server and for each page")
    p.add_argument("--pages", help="comma-separated names of the pages to take (default: all), e.g. runs_table")
    args = p.parse_args(argv)
    db = Path(args.db)
    if not db.exists():
        print(f"no SQLite store at {db}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="clorch-screens-"))
    server = browser = None
    problems = []
    try:
        server, base = start_mlflow(db, work, args.timeout)
        found = get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                         + urllib.parse.urlencode({"experiment_name": args.experiment or args.study}))
        eid = found["experiment"]["experiment_id"]
        runs = pick_runs(base, eid, args.study)
        trial, config = runs["trial"], runs["config"]
        trial_name, config_name = trial["info"]["run_name"], config["info"]["run_name"]
        print(f"mlflow server {base}; experiment {eid}; trial run {trial_name!r}, config run {config_name!r}",
              flush=True)
        browser = Browser(work, args.width, args.height, args.timeout)
        # MLflow's Assistant panel opens itself on a local server's first visit and covers a third of the page:
        # marked as opened once already (as after a person closed it). Nothing else is set: the runs table shows
        # what clorch's address alone gives a fresh browser.
        asyncio.run(browser.run(f"{base}/", "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1',"
                                            " 'true')"))
        ml = "?workflowType=machine_learning"
        run_page = f"{base}/#/experiments/{eid}/runs"
        charts = "document.querySelectorAll('.js-plotly-plot').length >= 3"
        pages = [
            ("runs_table.png", f"{base}/{ui_path(eid, args.study)}", [config_name, trial_name, "acc", "matching runs"],
             None),
            ("trial_artifacts.png", f"{run_page}/{trial['info']['run_id']}/artifacts/matrix.png{ml}",
             ["matrix.png", "matrix.csv", "trial.json"], "document.querySelectorAll('img').length >= 1"),
            ("config_artifacts.png", f"{run_page}/{config['info']['run_id']}/artifacts/learning_curve.png{ml}",
             ["learning_curve.png", "opd_per_task.png"], "document.querySelectorAll('img').length >= 1"),
            ("trial_metrics.png", f"{run_page}/{trial['info']['run_id']}/model-metrics{ml}", ["acc_task_0", "acc_seen"],
             charts),
            ("plain_address.png", f"{base}/#/experiments/{eid}", [], "document.body.innerText.length > 300"),
        ]
        wanted = set(args.pages.split(",")) if args.pages else None
        for name, url, expect, ready in pages:
            if wanted is not None and name.removesuffix(".png") not in wanted:
                continue
            path = out / name
            missing = asyncio.run(browser.shoot(url, path, expect, args.timeout, settle_s=3.0, ready=ready))
            shrink(path)
            state = "ok" if not missing else f"MISSING {missing}"
            print(f"{path} ({path.stat().st_size // 1024} KB): {url}  [{state}]", flush=True)
            if missing:
                problems.append(f"{name}: never showed {missing}")
            if name == "runs_table.png":  # where the page's links lead: the table's runs, the description's view
                links = asyncio.run(browser.run(url, "[...document.querySelectorAll('a[href*=\"/runs/\"]')]"
                                                     ".slice(0, 2).map(a => a.href)", args.timeout))
                print(f"  run links in the table: {links}", flush=True)
                view = asyncio.run(browser.run(url, "[...document.querySelectorAll('a[href*=\"viewStateShareKey\"]')]"
                                                    ".map(a => a.href)", args.timeout))
                print(f"  links to the study's view (the description): {view}", flush=True)
    finally:
        if browser is not None:
            browser.close()
        if server is not None:
            stop_group(server)
        shutil.rmtree(work, ignore_errors=True)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
