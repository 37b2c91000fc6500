"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

One real ``raykd serve`` on loopback (a real Ray head, a SQLite file) for the module and
two real digits jobs: a run (submitted by the user alice over the API) and a W x T x
alpha sweep (submitted by the admin on the submit page), queued behind the run. The
tests look at what a user sees: the jobs page and the job page follow the run live, the
accuracy chart has one point per finished epoch, the sweep's heatmap one cell per (W, T)
pair, a bad spec gets its error next to its line, and without a session every page sends
the browser to the login page. Screenshots of every page go to ``tests/artifacts/``.
"""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import raykd.service.web as web
from tests.helpers.paths import ARTIFACTS
from tests.helpers.service import RayHead, Server
from tests.helpers.specs import digits_spec

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                 "(apt-get install chromium; .ci/run installs it)")]

ADMIN, ALICE = "web-admin-token-3f9c-0123456789abcdef", "web-alice-token-81d2-0123456789abcdef"
WIDE, NARROW = {"width": 1280, "height": 800}, {"width": 420, "height": 800}
RUN_EPOCHS, W_VALUES, T_VALUES, ALPHAS = 4, [0.5, 1.0], [2.0, 4.0], [0.5, 0.9]
REQUESTED: list[str] = []  # every URL any page of this module asked for
JOB_TIMEOUT_MS = 240_000
SUCCEEDED = '#m-state .badge[data-state="succeeded"]'  # the job page's state, as shown
TEACHERS = {  # the same two teachers for both jobs: the sweep finds them in the cache
    "teachers": [{"model": {"name": "mlp", "hidden": [32]}, "seed": s} for s in (1, 2)],
    "teacher_train": {"epochs": 3, "batch_size": 64, "lr": 0.003},
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_spec() -> dict[str, Any]:
    # a digits student runs its epochs in tenths of a second, faster than the page's
    # updates: paused 0.8 s after each (fault injection, allowed by this server), the page sees each
    return digits_spec("/unused", name="web-run", methods=[{"method": "kd"}],
                       train={"epochs": RUN_EPOCHS, "batch_size": 64, "lr": 0.003}, **TEACHERS,
                       faults={"epoch_sleep_s": 0.8})


def sweep_spec() -> dict[str, Any]:
    return digits_spec("/unused", name="web-sweep",
                       methods=[{"method": "wkd", "temperature": 4.0, "alpha": 0.9}],
                       train={"epochs": 2, "batch_size": 64, "lr": 0.003}, **TEACHERS,
                       sweep={"searcher": "grid", "incorrect_weight": {"values": W_VALUES},
                              "temperature": {"values": T_VALUES}, "alpha": {"values": ALPHAS}})


# --- fixtures: one service, one browser, two real jobs ---------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("web")
    head = RayHead(tmp)
    service = Server(tmp, "web", token=ADMIN, users=json.dumps({"alice": ALICE}),
                     storage=tmp / "storage", ray_address=head.address, max_running=1, poll_s=0.3,
                     allow_fault_injection="true")
    yield service
    service.stop()
    head.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Tab:
    """One browser context and page; JavaScript errors on it fail the test that made it."""

    def __init__(self, browser: Any, server: Server, viewport: dict[str, int] = WIDE) -> None:
        self.server = server
        self.errors: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(20_000)
        self.context.on("request", lambda r: REQUESTED.append(r.url))
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def go(self, path: str) -> Any:
        self.page.goto(f"{self.server.url}{path}")
        return self.page

    def login(self, token: str = ADMIN) -> Tab:
        page = self.go("/login")
        page.get_by_label("Service token").fill(token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{self.server.url}/jobs")
        return self

    def shot(self, name: str) -> None:
        """The viewport as the user sees it, and the whole page (for reading it afterwards)."""
        self.page.screenshot(path=ARTIFACTS / f"{name}.png")
        self.page.screenshot(path=ARTIFACTS / f"{name}-full.png", full_page=True)

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    t = Tab(browser, server)
    yield t
    t.close()


@pytest.fixture(scope="module")
def jobs(browser: Any, server: Server) -> Iterator[dict[str, Any]]:
    """The run (alice, over the API) and the sweep (admin, on the submit page), queued, each
    watched from its submission on: the jobs page and the job's own page open and record
    (:func:`record`) right after the run is submitted, before its teachers have trained, and
    right after the sweep is queued behind the run (max_running=1). So what the tests say the
    pages saw (a row moving, a chart growing) is an ordering of events, however fast the
    machine runs the tests before theirs; each job's state when its pages opened is kept."""
    r = httpx.post(f"{server.url}/api/v1/jobs", json={"spec": run_spec()}, headers=auth(ALICE),
                   timeout=30)
    assert r.status_code == 201, r.text
    run = r.json()["id"]
    run_tabs = watch(browser, server, run, "#chart-val")
    run_when = api(server, f"/jobs/{run}")
    t = Tab(browser, server).login()
    page = t.go("/submit")
    page.get_by_label("Spec (YAML or JSON)").fill(yaml.safe_dump(sweep_spec(), sort_keys=False))
    page.get_by_label("Labels").fill("team=web")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(f"{server.url}/jobs/web-sweep-*")
    sweep = page.url.rsplit("/", 1)[1]
    t.close()
    sweep_tabs = watch(browser, server, sweep, "#alphaplot")
    sweep_when = api(server, f"/jobs/{sweep}")
    yield {"run": run, "sweep": sweep, "run_tabs": run_tabs, "run_when_watched": run_when,
           "sweep_tabs": sweep_tabs, "sweep_when_watched": sweep_when}
    for tab in (*run_tabs, *sweep_tabs):
        tab.context.close()  # closed already (and checked for errors) where the test ran


def watch(browser: Any, server: Server, job_id: str, chart: str) -> tuple[Tab, Tab]:
    """The jobs page and ``job_id``'s own page, each recording what it shows."""
    listing, own = Tab(browser, server).login(), Tab(browser, server).login()
    record(listing.page, rows="#job-rows", job=job_id)
    own.go(f"/jobs/{job_id}")
    record(own.page, chart=chart)
    return listing, own


def api(server: Server, path: str) -> Any:
    r = httpx.get(f"{server.url}/api/v1{path}", headers=auth(ADMIN), timeout=30)
    assert r.status_code == 200, r.text
    return r.json() if r.headers["content-type"].startswith("application/json") else r.text


def wait_state(server: Server, job_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        job = api(server, f"/jobs/{job_id}")
        if job["state"] in states:
            return job
        assert job["state"] in ("queued", "submitting", "pending", "running"), job  # ended otherwise: say so
        time.sleep(0.3)
    raise AssertionError(f"{job_id} never reached {states}: {job}")


RECORD = """([rows, chart, id]) => {
  // every value the user could have seen: progress and state of the job's row, chart points
  window.__seen = {progress: [], states: [], stages: [], points: [], marker: 'no reload'};
  const look = () => {
    const s = window.__seen;
    const tr = rows && rows.querySelector(`tr[data-job="${id}"]`);
    if (tr) {
      const p = tr.querySelector('progress').value;
      if (s.progress[s.progress.length - 1] !== p) s.progress.push(p);
      if (!s.states.includes(tr.dataset.state)) s.states.push(tr.dataset.state);
      const stage = tr.querySelector('.c-stage').textContent;
      if (!s.stages.includes(stage)) s.stages.push(stage);
    }
    if (chart) {
      const n = chart.querySelectorAll('circle.pt').length;
      if (s.points[s.points.length - 1] !== n) s.points.push(n);
    }
  };
  look();
  for (const node of [rows, chart]) if (node) new MutationObserver(look).observe(node,
    {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def record(page: Any, *, rows: str | None = None, job: str | None = None,
           chart: str | None = None) -> None:
    """Record on the page (window.__seen) what a job's row and a chart show, change by change."""
    nodes = [page.locator(css).element_handle() if css else None for css in (rows, chart)]
    page.evaluate(RECORD, [*nodes, job])


# --- without a session ----------------------------------------------------------------------


@pytest.mark.slow
def test_pages_and_static_files_need_a_session(server: Server, tab: Tab) -> None:
    for path in ("/", "/jobs", "/jobs/any-id", "/compare?id=a&id=b", "/submit", "/partials/jobs"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 303, (path, r.status_code)
        assert r.headers["location"].startswith("/login?next=/"), r.headers["location"]
    for name in ("app.js", "jobs.js", "job.js", "submit.js", "style.css"):
        r = httpx.get(f"{server.url}/static/{name}")
        assert r.status_code == 401 and "function" not in r.text, name
    assert httpx.get(f"{server.url}/static/login.css").status_code == 200  # the login page's own

    page = tab.go("/compare")  # a browser without a session lands on the login page...
    assert page.url == f"{server.url}/login?next=/compare"
    assert page.get_by_role("heading", name="raykd").is_visible()
    tab.shot("login")
    page.get_by_label("Service token").fill(ADMIN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/compare")  # ...and comes back where it was going
    assert page.get_by_role("heading", name="Compare").is_visible()


def raw_get(server: Server, path: str, cookie: str) -> tuple[int, bytes]:
    """GET ``path`` sent byte for byte (httpx would normalise ``..`` segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": f"raykd_session={cookie}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_static_paths_cannot_leave_the_static_folder(server: Server) -> None:
    login = httpx.post(f"{server.url}/login", data={"token": ADMIN})
    assert login.status_code == 303 and login.headers["location"] == "/jobs", login.text
    cookie = login.cookies["raykd_session"]
    static = Path(web.__file__).parent / "static"
    # with this session a static file is served: the 404s below are the path guard's
    assert raw_get(server, "/static/app.js", cookie) == (200, (static / "app.js").read_bytes())
    routes = (static.parent / "routes.py").resolve()  # files outside the folder, as seen from it
    deps = (static.parent.parent / "deps.py").resolve()
    for path, target in (("../routes.py", routes), ("..%2Froutes.py", routes),
                         ("%2e%2e/routes.py", routes), ("%2E%2E%2Froutes.py", routes),
                         ("../../deps.py", deps), ("..%2F..%2Fdeps.py", deps),
                         ("app.js/../../routes.py", routes),
                         (str(routes), routes),
                         ("%2F" + str(routes)[1:].replace("/", "%2F"), routes)):
        assert target.is_file() and not target.is_relative_to(static.resolve())
        status, body = raw_get(server, f"/static/{path}", cookie)
        assert status == 404, (path, status, body[:200])
        assert target.read_bytes()[:300] not in body and b"import" not in body, path


@pytest.mark.slow
def test_a_wrong_token_is_refused_and_logging_out_ends_the_session(server: Server,
                                                                   tab: Tab) -> None:
    page = tab.go("/login")
    page.get_by_label("Service token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That token is not valid for this service."
    assert page.url == f"{server.url}/login" and not tab.context.cookies()
    tab.login()
    cookie = next(c for c in tab.context.cookies() if c["name"] == "raykd_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ADMIN not in cookie["value"]
    with_cookie = {"raykd_session": cookie["value"]}
    # the API takes the cookie only with the page's CSRF value for what changes state
    no_csrf = tab.context.request.post(f"{server.url}/api/v1/jobs/x/cancel")
    assert no_csrf.status == 403 and "X-Raykd-CSRF" in no_csrf.text()
    assert tab.context.request.post(f"{server.url}/login", form={"token": ADMIN},
                                    headers={"Origin": "https://evil.example"}).status == 403
    for away in ("//evil.example/x", "/\t/evil.example", "https://evil.example"):  # stays here
        r = httpx.post(f"{server.url}/login", data={"token": ADMIN, "next": away})
        assert (r.status_code, r.headers["location"]) == (303, "/jobs"), away
    tab.page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{server.url}/login")
    assert httpx.get(f"{server.url}/jobs", cookies=with_cookie).status_code == 303  # dropped


# --- a run, live ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_jobs_page_and_the_job_page_follow_a_running_job(
        browser: Any, server: Server, jobs: dict[str, Any]) -> None:
    run, sweep = jobs["run"], jobs["sweep"]
    listing, job_tab = jobs["run_tabs"]  # opened right after the run was submitted
    before = jobs["run_when_watched"]
    assert before["stage"] != "students" and before["progress"] == 0, before
    page = listing.page
    row = page.locator(f'tr[data-job="{run}"]')
    assert row.locator("th a").inner_text() == "web-run"
    assert row.locator(".c-owner").inner_text() == "alice"
    shown = page.locator(f'tr[data-job="{sweep}"]').evaluate(  # one look: a refresh may come
        "tr => [tr.dataset.state, ...['.c-queue', '.badge'].map(c => "
        "tr.querySelector(c).textContent.trim())]")
    if shown[0] == "queued":  # until the run ended: behind it
        assert shown[1:] == ["#1", "queued"], shown

    # the epochs of a digits student come in a burst of a few tenths of a second, so the
    # recorder (a MutationObserver), not a look now and then, says what the row showed
    row.and_(page.locator('[data-state="succeeded"]')).wait_for(timeout=JOB_TIMEOUT_MS)
    seen = page.evaluate("window.__seen")
    assert seen["marker"] == "no reload"
    assert any(0 < p < 1 for p in seen["progress"]), seen  # it moved while the job ran...
    assert seen["progress"] == sorted(seen["progress"]) and seen["progress"][-1] == 1, seen
    assert "students" in seen["stages"] and "running" in seen["states"], seen
    assert row.locator(".pct").inner_text() == "100%"
    assert row.get_by_role("button", name=f"Retry {run}").is_visible()  # final: retry, no cancel

    # the job's own page, opened before the first epoch, drew each epoch as it came
    jp = job_tab.page
    jp.locator(SUCCEEDED).wait_for(timeout=60_000)
    jp.locator(f'#chart-val[data-points="{RUN_EPOCHS}"]').wait_for()
    points = jp.evaluate("window.__seen.points")
    assert points[0] == 0 and points[-1] == RUN_EPOCHS, points
    assert 0 < min(p for p in points if p) < RUN_EPOCHS, points  # it grew epoch by epoch
    jp.locator("#result table.results tr.student").wait_for()  # the table fills in at the end
    assert jp.locator("#result table.results tr.student").count() == 1
    listing.close()
    job_tab.close()


@pytest.mark.slow
def test_the_job_page_draws_one_point_per_finished_epoch(
        server: Server, jobs: dict[str, Any], tab: Tab) -> None:
    run = jobs["run"]
    job = wait_state(server, run, ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    epochs = [m for m in api(server, f"/jobs/{run}/metrics") if m["epoch"] is not None]
    assert len(epochs) == RUN_EPOCHS == len({m["epoch"] for m in epochs})
    page = tab.login().go(f"/jobs/{run}")
    page.locator(f'#chart-loss[data-points="{len(epochs)}"]').wait_for()
    val = page.locator("#chart-val circle.pt")
    assert val.count() == len(epochs)
    assert sorted(int(e) for e in val.evaluate_all("cs => cs.map(c => c.dataset.epoch)")) == [
        m["epoch"] for m in sorted(epochs, key=lambda m: m["epoch"])]
    titles = val.evaluate_all("cs => cs.map(c => c.querySelector('title').textContent)")
    assert titles[-1].endswith(f"{epochs[-1]['metrics']['val_accuracy'] * 100:.2f}%"), titles
    # reference lines: one per teacher and the ensemble, with their accuracies in the legend
    result = job["result"]
    assert page.locator('#chart-val line[data-ref="teacher"]').count() == len(result["teachers"])
    ensemble = page.locator('#chart-val line[data-ref="ensemble"] title').text_content()
    assert ensemble == f"ensemble: {result['ensemble']['val_accuracy'] * 100:.1f}%"
    # the final table, the stage timeline, the log and the artifacts
    student = page.locator("#result tr.student")
    assert student.locator("th").inner_text() == "kd"
    test_acc = f"{result['students'][0]['test_accuracy'] * 100:.1f}%"
    assert test_acc in student.inner_text()
    assert page.locator("#result tr.ensemble").inner_text().count(
        f"{result['ensemble']['test_accuracy'] * 100:.1f}%") == 1
    stages = page.locator("#timeline li").evaluate_all("ls => ls.map(l => l.dataset.stage)")
    assert {"data", "teacher_train", "students"} <= set(stages), stages
    assert page.locator("#timeline li.running").count() == 0
    page.locator("#log", has_text="job finished").wait_for()
    assert "\x1b" not in page.locator("#log").text_content()
    page.get_by_role("link", name="result.json").wait_for()
    assert page.get_by_role("link", name="students/student-0-g1.safetensors").is_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download spec (YAML)").click()
    assert yaml.safe_load(Path(download.value.path()).read_text())["name"] == "web-run"
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("job")


# --- the sweep --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_sweep_page_has_one_heatmap_cell_per_w_t_pair(
        server: Server, jobs: dict[str, Any]) -> None:
    sweep = jobs["sweep"]
    listing, tab = jobs["sweep_tabs"]  # both opened while the sweep was queued: they fill in live
    when = jobs["sweep_when_watched"]
    assert (when["state"], when["queue_position"]) == ("queued", 1), when  # behind the run
    page = tab.page
    row = listing.page.locator(f'tr[data-job="{sweep}"]')
    # trials report over many seconds: the jobs page's picture, with the sweep under way
    moving = ':not([data-progress="0.0000"]):not([data-progress="1.0000"])'
    row.and_(listing.page.locator(f'{moving}, [data-state="succeeded"]')).wait_for(
        timeout=JOB_TIMEOUT_MS)
    listing.shot("jobs")
    page.locator(SUCCEEDED).wait_for(timeout=JOB_TIMEOUT_MS)
    best_link = page.get_by_role("link", name="download the retrained best student")
    best_link.wait_for()
    row.and_(listing.page.locator('[data-state="succeeded"]')).wait_for()
    progress = listing.page.evaluate("window.__seen.progress")
    # never backwards, ending at 1 (whether the list caught a value between 0 and 1 depends on
    # how the trials' reports fall between its refreshes: timing, not a property to assert)
    assert progress[-1] == 1 and progress == sorted(progress), progress
    listing.close()
    points = page.evaluate("window.__seen.points")  # the alpha plot grew trial by trial
    assert points[0] == 0 and points[-1] == len(W_VALUES) * len(T_VALUES) * len(ALPHAS), points
    assert any(0 < p < points[-1] for p in points), points
    job = api(server, f"/jobs/{sweep}")
    assert job["state"] == "succeeded" and job["labels"] == {"team": "web"}, job
    trials = list(csv.DictReader(io.StringIO(api(server, f"/jobs/{sweep}/artifacts/trials.csv"))))
    assert len(trials) == len(W_VALUES) * len(T_VALUES) * len(ALPHAS)
    best = job["result"]["best"]
    for fresh in (False, True):  # live, then loaded anew from the stored events
        if fresh:
            page.reload()
            best_link.wait_for()
        cells = page.locator("#heatmap rect.cell")
        assert cells.count() == len(W_VALUES) * len(T_VALUES)
        shown = {(float(c.get_attribute("data-w")), float(c.get_attribute("data-t"))):
                 float(c.get_attribute("data-value")) for c in cells.all()}
        assert set(shown) == set(itertools.product(W_VALUES, T_VALUES))
        for (w, t), value in shown.items():  # the best over the alphas of that pair
            top = max(float(r["val_accuracy"]) for r in trials
                      if float(r["incorrect_weight"]) == w and float(r["temperature"]) == t)
            assert value == pytest.approx(top, abs=1e-4), (w, t)
        outlined = page.locator("#heatmap rect.cell.best")
        assert outlined.count() == 1
        pair = (float(outlined.get_attribute("data-w")), float(outlined.get_attribute("data-t")))
        assert pair == (best["incorrect_weight"], best["temperature"])
        assert page.locator("#alphaplot circle.pt").count() == len(trials)
        best_dot = f'#alphaplot circle.pt.best[data-trial="{best["trial_id"]}"]'
        assert page.locator(best_dot).count() == 1
        rows = page.locator("#trials tbody tr")
        assert rows.count() == len(trials)
        assert rows.first.get_attribute("data-trial") == best["trial_id"]  # sorted by val acc
        assert page.locator("#trials tbody tr.best").get_attribute("data-trial") == best["trial_id"]
    tab.shot("sweep")
    page.get_by_role("button", name="Val acc").click()  # sortable: now ascending
    first = float(rows.first.locator("td").nth(4).inner_text().rstrip("%")) / 100
    assert first == pytest.approx(min(float(r["val_accuracy"]) for r in trials), abs=1e-4)
    assert page.locator('th[data-key="score"]').get_attribute("aria-sort") == "ascending"
    assert tab.context.request.get(f"{server.url}{best_link.get_attribute('href')}").status == 200
    tab.close()


# --- submit, users -------------------------------------------------------------------------------


BAD_SPEC = """name: bad-spec
data: {dataset: digits}
teachers:
  - {model: {name: mlp}}
student: {model: {name: mlp}}
methods:
  - {method: wkd, incorrect_weight: 1.5}
train: {epochs: 0}
"""


@pytest.mark.slow
def test_a_bad_spec_shows_each_error_next_to_its_field(server: Server, tab: Tab) -> None:
    before = len(api(server, "/jobs?limit=100")["items"])
    page = tab.login().go("/submit")
    page.get_by_label("Spec (YAML or JSON)").fill(BAD_SPEC)
    page.get_by_label("Priority").fill("1000")
    page.get_by_role("button", name="Submit").click()
    marked = page.locator("#spec-errors li.has-error")
    marked.first.wait_for()
    lines = BAD_SPEC.splitlines()
    found = {li.get_attribute("data-line"): li.inner_text() for li in marked.all()}
    w_line = str(next(i for i, line in enumerate(lines, 1) if "incorrect_weight" in line))
    e_line = str(next(i for i, line in enumerate(lines, 1) if "epochs" in line))
    assert set(found) == {w_line, e_line}, found
    assert "incorrect_weight: 1.5" in found[w_line]  # the spec's own line, then its error
    assert ("methods.0.incorrect_weight: Input should be less than or equal to 1 (got 1.5)"
            in found[w_line])
    assert "train.epochs: Input should be greater than or equal to 1 (got 0)" in found[e_line]
    assert page.get_by_label("Spec (YAML or JSON)").get_attribute("aria-invalid") == "true"
    priority = page.locator("#priority-error")
    assert priority.is_visible() and "less than or equal to 100 (got 1000)" in priority.inner_text()
    assert page.get_by_label("Priority").get_attribute("aria-invalid") == "true"
    tab.shot("submit")
    # a text that is not YAML: its line is marked too; nothing was submitted
    page.get_by_label("Priority").fill("0")
    page.get_by_label("Spec (YAML or JSON)").fill("name: x\nteachers: [\n")
    page.get_by_role("button", name="Submit").click()
    page.locator("#spec-errors li.has-error").first.wait_for()
    assert "not valid YAML or JSON" in page.locator("#spec-errors").inner_text()
    assert not priority.is_visible()
    assert len(api(server, "/jobs?limit=100")["items"]) == before


@pytest.mark.slow
def test_a_user_sees_only_their_own_jobs(server: Server, jobs: dict[str, Any], tab: Tab) -> None:
    page = tab.login(ALICE).page
    shown = page.locator("#job-rows tr[data-job]").evaluate_all("rs => rs.map(r => r.dataset.job)")
    assert shown == [jobs["run"]]
    assert page.get_by_text("alice", exact=True).first.is_visible()
    r = tab.context.request.get(f"{server.url}/jobs/{jobs['sweep']}")
    unknown = tab.context.request.get(f"{server.url}/jobs/no-such-job-0")
    assert r.status == unknown.status == 404  # another's job is answered as an unknown one


@pytest.mark.slow
def test_compare_puts_the_students_of_two_jobs_side_by_side(
        server: Server, jobs: dict[str, Any], tab: Tab) -> None:
    for job_id in (jobs["run"], jobs["sweep"]):
        assert wait_state(server, job_id, ("succeeded", "failed"))["state"] == "succeeded"
    page = tab.login().go("/compare")
    page.get_by_label("web-run").check()
    page.get_by_role("button", name="Compare").click()
    assert page.get_by_role("alert").inner_text() == "Pick at least two finished jobs."
    page.get_by_label("web-run").check()
    page.get_by_label("web-sweep").check()
    page.get_by_role("button", name="Compare").click()
    table = page.locator("#compare-table")
    assert table.locator(f'tr[data-job="{jobs["run"]}"]').count() == 1  # one student
    assert table.locator(f'tr[data-job="{jobs["sweep"]}"]').count() == 1  # the best, retrained
    run = api(server, f"/jobs/{jobs['run']}")["result"]
    assert f"{run['students'][0]['test_accuracy'] * 100:.1f}%" in table.inner_text()
    assert page.locator("#compare-chart rect.bar").count() == 2
    assert page.locator("#compare-chart line.ens").count() == 2
    tab.shot("compare")


@pytest.mark.slow
def test_a_narrow_window_needs_no_sideways_scrolling(
        browser: Any, server: Server, jobs: dict[str, Any]) -> None:
    t = Tab(browser, server, viewport=NARROW).login()
    ids = "&".join(f"id={jobs[k]}" for k in ("run", "sweep"))
    for name, path in (("jobs", "/jobs"), ("job", f"/jobs/{jobs['run']}"),
                       ("sweep", f"/jobs/{jobs['sweep']}"), ("compare", f"/compare?{ids}"),
                       ("submit", "/submit")):
        page = t.go(path)
        if name in ("job", "sweep"):
            page.locator(".chart svg").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= NARROW["width"], (name, width)
        assert page.get_by_role("link", name="Submit").is_visible()
        if name == "jobs":  # the table fits too: each row's button is on the screen
            box = page.get_by_role("button", name=f"Retry {jobs['run']}").bounding_box()
            assert box is not None and box["x"] + box["width"] <= NARROW["width"], box
        t.shot(f"narrow-{name}")
    t.close()


@pytest.mark.slow
def test_the_token_never_appears_in_a_url_or_the_page(server: Server, jobs: dict[str, Any],
                                                      tab: Tab) -> None:
    page = tab.login().page
    for path in ("/jobs", f"/jobs/{jobs['run']}", f"/jobs/{jobs['sweep']}", "/compare", "/submit"):
        tab.go(path)
        assert ADMIN not in page.content()
    kept = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + "
                         "document.cookie + location.href + history.length")
    assert ADMIN not in kept
    assert len(REQUESTED) > 50 and not [u for u in REQUESTED if ADMIN in u or ALICE in u]


# --- a retried job ------------------------------------------------------------------------------


def timeline_of(server: Server, job_id: str) -> tuple[int, int]:
    """(job_started events, entries of the job page's stage timeline) from the stored stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job_id}/events", headers=auth(ADMIN),
                      timeout=30) as r:  # the service ends the stream of a final job
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    entries, open_stages = 0, []  # as job.js draws them: a finish without its start adds one
    for kind, e in events:
        if kind == "job_started":  # a dead attempt's open stages leave the timeline
            entries -= len(open_stages)
            open_stages = []
        elif kind in ("job_finished", "job_failed"):  # they end here
            open_stages = []
        elif kind == "stage_started":
            entries += 1
            open_stages.append(e["stage"])
        elif kind == "stage_finished":
            if e["stage"] in open_stages:
                open_stages.remove(e["stage"])
            else:
                entries += 1
    return sum(kind == "job_started" for kind, _ in events), entries


@pytest.mark.slow
def test_the_job_page_follows_the_new_attempt_of_a_retried_job(
        server: Server, jobs: dict[str, Any], tab: Tab) -> None:
    # The stream replays the first attempt's job_finished before the second attempt's
    # events: the page must not take that for the end (it froze on the first attempt).
    run = jobs["run"]
    assert wait_state(server, run, ("succeeded", "failed"))["state"] == "succeeded"
    assert timeline_of(server, run)[0] == 1
    page = tab.login().go(f"/jobs/{run}")
    page.locator("#timeline li[data-stage]").first.wait_for()
    page.evaluate("window.__mark = 'before the retry'")
    page.get_by_role("button", name="Retry", exact=True).click()  # the page reloads itself
    page.wait_for_function("() => window.__mark === undefined")
    page.locator("#job-meta").wait_for(state="attached")
    page.evaluate("window.__mark = 'after the retry'")
    job = wait_state(server, run, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    starts, stages = timeline_of(server, run)
    assert starts == 2, starts
    # without another reload: the second attempt's stages are drawn and the end is seen
    page.locator(SUCCEEDED).wait_for(timeout=60_000)
    page.locator(f"#timeline li[data-stage] >> nth={stages - 1}").wait_for()
    assert page.locator("#timeline li[data-stage]").count() == stages
    assert page.locator("#timeline li.running").count() == 0
    assert page.evaluate("window.__mark") == "after the retry"
