"""Monitoring during a real smoke search started like a user does (``python search/run.py ...``).

The Ray dashboard must listen on 127.0.0.1 only, serve its page, refuse its API without Ray's token
and accept it with the token; a headless Chromium signs in through the page's token prompt and finds
the trial actors, named after their trial ids; each trial publishes its live Ray gauges.
"""
import base64
import fcntl
import json
import os
import re
import select
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
               'experiment.name=mon', 'ray.verbose=0']
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

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=SEARCH_TIMEOUT)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Tune saves its state and Ray shuts down
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()


@pytest.fixture(scope='module')
def live_search(tmp_path_factory):
    pytest.importorskip('ray.dashboard.optional_deps', reason='the dashboard needs ray[default]')
    search = LiveSearch(tmp_path_factory.mktemp('monitoring'))
    yield search
    search.stop()


def test_dashboard_listens_on_loopback_and_its_api_needs_the_token(live_search):
    assert live_search.url.startswith('http://127.0.0.1:')
    from search.monitoring import token_file

    assert f'sign in: paste the token from {token_file()}' in live_search.output()
    status, page = _get(live_search.url + '/')
    assert status == 200 and b'<html' in page.lower()
    for api in ('/api/jobs/', '/api/v0/actors', '/nodes?view=summary'):
        assert _get(live_search.url + api)[0] == 401, api
        assert _get(live_search.url + api, 'not-the-token')[0] == 403, api
        assert _get(live_search.url + api, live_search.token)[0] == 200, api


class Chromium:
    """Headless Chromium driven with the DevTools protocol over ``--remote-debugging-pipe`` (stdlib only)."""

    def __init__(self, profile: Path):
        binary = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
        if binary is None:
            pytest.skip('no chromium (.ci/run installs the Debian packages chromium and chromium-driver)')
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4; copies above 10 survive those dup2s.
        child_read, child_write = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, events_write))
        self.process = subprocess.Popen(
            [binary, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             f'--user-data-dir={profile}', '--window-size=1600,1000', '--remote-debugging-pipe', 'about:blank'],
            # Popen closes every fd not passed after preexec_fn; dup2 makes 3 and 4 inheritable and the rest
            # are not, so only they reach Chromium.
            close_fds=False, preexec_fn=lambda: (os.dup2(child_read, 3), os.dup2(child_write, 4)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (commands_read, events_write, child_read, child_write):
            os.close(fd)
        self._buffer = b''
        self._next_id = 0
        self.session = None

    def send(self, method: str, params: dict | None = None, timeout: float = 30, session: bool = True) -> dict:
        self._next_id += 1
        message = {'id': self._next_id, 'method': method, 'params': params or {}}
        if session and self.session:
            message['sessionId'] = self.session
        os.write(self._commands, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b'\0' in self._buffer:
                raw, self._buffer = self._buffer.split(b'\0', 1)
                reply = json.loads(raw)
                if reply.get('id') == self._next_id:
                    if 'error' in reply:
                        raise RuntimeError(f'{method}: {reply["error"]}')
                    return reply['result']
            if select.select([self._events], [], [], 1.0)[0]:
                chunk = os.read(self._events, 1 << 20)
                if not chunk:
                    raise RuntimeError('chromium closed its DevTools pipe')
                self._buffer += chunk
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        target = self.send('Target.createTarget', {'url': url}, session=False)['targetId']
        self.session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True},
                                 session=False)['sessionId']

    def evaluate(self, expression: str):
        # The dashboard reloads itself after sign-in; an evaluation caught by the reload is retried.
        for attempt in range(10):
            try:
                return self.send('Runtime.evaluate', {'expression': expression,
                                                      'returnByValue': True})['result'].get('value')
            except RuntimeError as err:
                if 'navigated or closed' not in str(err) or attempt == 9:
                    raise
                time.sleep(0.5)

    def text(self) -> str:
        return self.evaluate('document.body ? document.body.innerText : ""') or ''

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send('Page.captureScreenshot', {'format': 'png'})['data']))

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._events)
        self.process.terminate()
        self.process.wait(timeout=30)


def test_browser_signs_in_with_the_token_and_finds_the_running_trials(live_search, tmp_path):
    browser = Chromium(tmp_path / 'profile')
    try:
        browser.open(live_search.url + '/#/actors')
        _wait(lambda: 'Authentication Token Required' in browser.text(), 60, 'the token prompt')
        browser.screenshot(tmp_path / 'dashboard_sign_in.png')
        # Type the token into the prompt like a user, then press its Submit button.
        browser.evaluate('document.querySelector("input[type=password]").focus()')
        browser.send('Input.insertText', {'text': live_search.token})
        browser.evaluate('[...document.querySelectorAll("button")].find(b => b.textContent.trim() == "Submit").click()')
        _wait(lambda: 'Authentication Token Required' not in browser.text(), 60, 'the prompt to accept the token')
        trials = _wait(lambda: [a for a in live_search.trial_actors() if a['state'] == 'ALIVE'], 240,
                       'a running trial actor')
        browser.send('Page.reload')
        names = _wait(lambda: re.findall(r'train_trial_\w+', browser.text()), 90, 'trial names on the actors page')
        browser.screenshot(tmp_path / 'dashboard_actors.png')
    finally:
        browser.close()
    assert {a['repr_name'] for a in trials} <= set(names)
    assert (tmp_path / 'dashboard_actors.png').stat().st_size > 10_000


def test_trial_actors_are_named_after_their_trial_ids(live_search):
    actors = _wait(lambda: [a for a in live_search.trial_actors() if a.get('repr_name')], 240, 'trial actors')
    trial_dirs = _wait(lambda: [p.name for p in live_search.experiment.glob('train_trial_*') if p.is_dir()], 60,
                       'trial folders')
    for actor in actors:
        name = actor['repr_name']
        assert re.fullmatch(r'train_trial_[0-9a-f]+_\d{5}', name), name
        assert any(d.startswith(name + '_') for d in trial_dirs), (name, trial_dirs)


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


def test_trials_publish_live_ray_gauges_and_finish(live_search):
    status, body = _get(f'{live_search.url}/nodes?view=summary', live_search.token)
    port = _find_key(json.loads(body), 'metricsExportPort')
    assert status == 200 and port, body[:500]

    def epoch_gauges():
        status, text = _get(f'http://127.0.0.1:{port}/metrics')
        lines = text.decode().splitlines() if status == 200 else []
        return [line for line in lines if line.startswith('ray_dyntune_trial_epoch{')]

    gauges = _wait(epoch_gauges, SEARCH_TIMEOUT, 'the ray_dyntune_trial_epoch gauge', interval=5)
    assert all(re.search(r'trial_id="[0-9a-f]+_\d{5}"', line) for line in gauges), gauges
    assert float(gauges[0].rsplit(' ', 1)[1]) >= 1
    assert live_search.finish() == 0, live_search.output()[-3000:]
    summary = json.loads((live_search.experiment / 'summary.json').read_text())
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0


@pytest.mark.parametrize('override, on', [([], True), (['dashboard=false'], False), (['ray.dashboard=false'], False)])
def test_dashboard_switch_and_its_alias(override, on):
    from search.config import compose_config
    from search.monitoring import dashboard_installed, dashboard_options
    from search.spec import build_spec

    spec = build_spec(compose_config(['space=baseline', 'smoke=true', *override]), dry_run=False)
    options = dashboard_options(spec.ray['dashboard'], spec.ray['dashboard_host'])
    assert options == dict(include_dashboard=on and dashboard_installed(), dashboard_host='127.0.0.1')


def test_a_dashboard_beyond_loopback_prints_what_it_exposes():
    from search.monitoring import dashboard_banner

    assert len(dashboard_banner('127.0.0.1:8265', '127.0.0.1')) == 2
    assert len(dashboard_banner('localhost:8265', 'localhost')) == 2
    warning = dashboard_banner('10.0.0.5:8265', '0.0.0.0')[-1]
    assert warning.startswith('WARNING: ray.dashboard_host=0.0.0.0 exposes the Ray dashboard') and '8265' in warning
