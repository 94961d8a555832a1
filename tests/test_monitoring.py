"""Monitoring during a real smoke search started like a user does (``python search/run.py ...``).

The Ray dashboard must listen on 127.0.0.1 only, serve its page, refuse its API without Ray's token
and accept it with the token; a headless Chromium (Selenium with Debian's chromium-driver) signs in
through the page's token prompt and finds the trial actors, named after their trial ids; each trial
publishes its live Ray gauges; the search ends cleanly.

A search's life runs one way (start, trials running, end), so the ``observed`` fixture makes every
observation once, in that order, and the tests only assert on what it saw: their order does not matter,
and each test reports (or skips on) its own observation's failure.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

SEARCH_TIMEOUT = 480
NO_BROWSER = 'no chromium and chromedriver (.ci/run installs the Debian packages chromium and chromium-driver)'


def _token() -> str:
    from search.monitoring import token_file

    return token_file().read_text().strip()


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={'Authorization': f'Bearer {token}'} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait(condition, timeout: float, what: str, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f'timed out after {timeout:.0f} s waiting for {what}')


class LiveSearch:
    """A smoke search running in its own process, with the dashboard on (the default)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.log = folder / 'run.log'
        self.experiment = folder / 'mon'
        # Tiny but long enough (6 epochs, no early stopping) that the dashboard, the browser and the
        # metrics scrape see the trials alive on a quiet machine, where a 2-epoch smoke search ends in
        # seconds; Ray exports metrics every second instead of every 10.
        cmd = [sys.executable, '-u', 'search/run.py', 'space=baseline', 'scheduler=fifo', 'num_samples=2',
               'max_epochs=6', 'data.num_train=16', 'data.num_val=8', 'data.min_size=128', 'data.max_size=160',
               'train.img_scale=[160,160]', 'train.warmup_iters=5', f'experiment.dir={folder}',
               'experiment.name=mon', 'ray.verbose=0', 'reference=false']
        self._log_file = self.log.open('w')
        env = dict(os.environ, RAY_metrics_report_interval_ms='1000')
        self.process = subprocess.Popen(cmd, cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
        match = _wait(lambda: re.search(r'^Ray dashboard: (http://\S+)$', self.output(), re.M) or self._died(),
                      180, 'the dashboard address on stdout')
        self.url = match.group(1)
        self.token = _token()

    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def _died(self):
        if self.process.poll() is not None:
            pytest.fail(f'run.py exited with {self.process.returncode}:\n{self.output()[-3000:]}')

    def trial_actors(self) -> list[dict]:
        status, body = _get(f'{self.url}/api/v0/actors?detail=1&limit=100', self.token)
        assert status == 200, body[:300]
        return [a for a in json.loads(body)['data']['result']['result'] if str(a.get('class_name')) == 'train_trial']

    def wait(self) -> int:
        """Wait for the search to end by itself; its exit code."""
        return self.process.wait(timeout=SEARCH_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Tune saves its state and Ray shuts down
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()


class Observations:
    """What each step saw, or the exception (failure or skip) it raised, for the test that asserts on it."""

    def __init__(self):
        self._seen = {}

    def record(self, name: str, step) -> None:
        try:
            self._seen[name] = (step(), None)
        except BaseException as err:  # noqa: BLE001  (pytest's skip and fail outcomes too: the test re-raises them)
            if isinstance(err, KeyboardInterrupt):
                raise
            self._seen[name] = (None, err)

    def __getitem__(self, name: str):
        value, err = self._seen[name]
        if err is not None:
            raise err
        return value


def dashboard_answers(search: LiveSearch) -> dict:
    """The status codes of the page and of three API routes without, with a wrong and with the right token."""
    answers = {'/': _get(search.url + '/')}
    for api in ('/api/jobs/', '/api/v0/actors', '/nodes?view=summary'):
        answers[api] = tuple(_get(search.url + api, token)[0] for token in (None, 'not-the-token', search.token))
    return answers


def trial_actors_and_folders(search: LiveSearch) -> tuple[list[dict], list[str]]:
    actors = _wait(lambda: [a for a in search.trial_actors() if a.get('repr_name')], 240, 'trial actors')
    folders = _wait(lambda: [p.name for p in search.experiment.glob('trial_*') if p.is_dir()], 60, 'trial folders')
    return actors, folders


def _body_text(driver) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, 'body').text
    except (NoSuchElementException, StaleElementReferenceException):  # the dashboard reloads itself after sign-in
        return ''


def browse_the_actors_page(search: LiveSearch, folder: Path) -> dict:
    """Sign in through the dashboard's token prompt like a user and read the trial names on the Actors page."""
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    chromedriver = shutil.which('chromedriver')
    if not (chromium and chromedriver):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # the system's browser and driver: Selenium Manager downloads nothing
    for argument in ('--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--window-size=1600,1000',
                     f'--user-data-dir={folder / "profile"}'):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.get(search.url + '/#/actors')
        password = WebDriverWait(driver, 60).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, 'input[type=password]')))
        prompt = _body_text(driver)
        driver.save_screenshot(str(folder / 'dashboard_sign_in.png'))
        password.send_keys(search.token)
        driver.find_element(By.XPATH, '//button[normalize-space()="Submit"]').click()
        WebDriverWait(driver, 60).until(lambda d: 'Authentication Token Required' not in _body_text(d))
        alive = _wait(lambda: [a for a in search.trial_actors() if a['state'] == 'ALIVE'], 240,
                      'a running trial actor')
        wanted = {a['repr_name'] for a in alive}

        def every_alive_trial_listed(d):
            # The page can render before the dashboard lists a trial the state API already has (seen in a full
            # make test): reload until it lists them all.
            listed = re.findall(r'train_trial_\w+', _body_text(d))
            if wanted <= set(listed):
                return listed
            d.refresh()
            return False

        driver.refresh()
        names = WebDriverWait(driver, 90, poll_frequency=3).until(every_alive_trial_listed)
        driver.save_screenshot(str(folder / 'dashboard_actors.png'))
    finally:
        driver.quit()
    return dict(prompt=prompt, alive=wanted, names=set(names),
                screenshot=folder / 'dashboard_actors.png')


def epoch_gauges(search: LiveSearch) -> list[str]:
    """The ``ray_dyntune_trial_epoch`` lines of the node's Prometheus endpoint, once a trial has set one."""
    status, body = _get(f'{search.url}/nodes?view=summary', search.token)
    port = _find_key(json.loads(body), 'metricsExportPort')
    assert status == 200 and port, body[:500]

    def scrape():
        status, text = _get(f'http://127.0.0.1:{port}/metrics')
        lines = text.decode().splitlines() if status == 200 else []
        return [line for line in lines if line.startswith('ray_dyntune_trial_epoch{')]

    return _wait(scrape, SEARCH_TIMEOUT, 'the ray_dyntune_trial_epoch gauge', interval=5)


def _find_key(data, key):
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


@pytest.fixture(scope='module')
def observed(tmp_path_factory):
    """Start the search and observe it: dashboard, actors, browser and gauges while it runs, then its end."""
    pytest.importorskip('ray.dashboard.optional_deps', reason='the dashboard needs ray[default]')
    folder = tmp_path_factory.mktemp('monitoring')
    search = LiveSearch(folder)
    seen = Observations()
    try:
        seen.record('output', lambda: search.output())
        seen.record('url', lambda: search.url)
        seen.record('dashboard', lambda: dashboard_answers(search))
        seen.record('actors', lambda: trial_actors_and_folders(search))
        seen.record('browser', lambda: browse_the_actors_page(search, folder))
        seen.record('gauges', lambda: epoch_gauges(search))
        seen.record('exit', lambda: (search.wait(), search.output()))
        seen.record('summary', lambda: json.loads((search.experiment / 'summary.json').read_text()))
    finally:
        search.stop()
    return seen


@pytest.mark.slow
def test_dashboard_listens_on_loopback_and_its_api_needs_the_token(observed):
    from search.monitoring import token_file

    assert observed['url'].startswith('http://127.0.0.1:')
    assert f'sign in: paste the token from {token_file()}' in observed['output']
    answers = observed['dashboard']
    status, page = answers.pop('/')
    assert status == 200 and b'<html' in page.lower()
    for api, codes in answers.items():
        assert codes == (401, 403, 200), api  # no token, a wrong one, the right one


@pytest.mark.slow
def test_browser_signs_in_with_the_token_and_finds_the_running_trials(observed):
    browser = observed['browser']
    assert 'Authentication Token Required' in browser['prompt']
    assert browser['alive'] and browser['alive'] <= browser['names']
    assert browser['screenshot'].stat().st_size > 10_000


@pytest.mark.slow
def test_trial_actors_are_named_after_their_trial_ids_and_so_are_their_folders(observed):
    actors, folders = observed['actors']
    for actor in actors:
        name = actor['repr_name']
        assert re.fullmatch(r'train_trial_[0-9a-f]+(_\d{5})?', name), name
        assert f'trial_{name.removeprefix("train_trial_")}' in folders, (name, folders)  # trial_<trial id>


@pytest.mark.slow
def test_trials_publish_live_ray_gauges(observed):
    gauges = observed['gauges']
    assert all(re.search(r'trial_id="[0-9a-f]+(_\d{5})?"', line) for line in gauges), gauges
    assert float(gauges[0].rsplit(' ', 1)[1]) >= 1


@pytest.mark.slow
def test_the_search_finishes_cleanly(observed):
    code, output = observed['exit']
    assert code == 0, output[-3000:]
    summary = observed['summary']
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0


@pytest.mark.parametrize('override, on', [([], True), (['dashboard=false'], False), (['ray.dashboard=false'], False)])
def test_dashboard_switch_and_its_alias(override, on):
    from search.config import compose_config
    from search.monitoring import dashboard_installed, dashboard_options
    from search.spec import build_spec

    spec = build_spec(compose_config(['space=baseline', 'smoke=true', *override]), dry_run=False)
    options = dashboard_options(spec.ray.dashboard, spec.ray.dashboard_host)
    assert options == dict(include_dashboard=on and dashboard_installed(), dashboard_host='127.0.0.1')


def test_a_dashboard_beyond_loopback_prints_what_it_exposes():
    from search.monitoring import dashboard_banner

    assert len(dashboard_banner('127.0.0.1:8265', '127.0.0.1')) == 2
    assert len(dashboard_banner('localhost:8265', 'localhost')) == 2
    warning = dashboard_banner('10.0.0.5:8265', '0.0.0.0')[-1]
    assert warning.startswith('WARNING: ray.dashboard_host=0.0.0.0 exposes the Ray dashboard') and '8265' in warning
