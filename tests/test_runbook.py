"""The cluster runbook (docs/cluster.md, docs/cluster/*.yaml) parses, and its search commands use real options."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / 'docs' / 'cluster.md'
MANIFESTS = sorted((REPO / 'docs' / 'cluster').glob('*.yaml'))


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _run_commands(text: str) -> list[list[str]]:
    """The arguments of every ``python search/run.py`` command in ``text`` (up to the end of its command)."""
    return [shlex.split(m.group(1)) for m in re.finditer(r'python search/run\.py((?:[ \t]+[^\s\'`|;&]+)*)', text)]


def _fenced(markdown: str) -> str:
    """The code blocks of a Markdown file (prose may abbreviate a command with ``...``)."""
    return '\n'.join(re.findall(r'^```[a-z]*\n(.*?)^```', markdown, flags=re.S | re.M))


def test_the_manifests_parse_and_are_what_they_say():
    assert {p.name for p in MANIFESTS} == {'ray-up-aws.yaml', 'rayjob.yaml'}
    up = yaml.safe_load((REPO / 'docs' / 'cluster' / 'ray-up-aws.yaml').read_text())
    assert up['provider']['type'] == 'aws' and up['head_node_type'] in up['available_node_types']
    assert any('--dashboard-host=127.0.0.1' in c for c in up['head_start_ray_commands'])
    job = yaml.safe_load((REPO / 'docs' / 'cluster' / 'rayjob.yaml').read_text())
    assert job['kind'] == 'RayJob' and job['apiVersion'].startswith('ray.io/')
    entry = shlex.split(job['spec']['entrypoint'])
    assert entry[:2] == ['python', 'search/run.py'] and 'ray.address=auto' in entry
    assert any(a.startswith('experiment.dir=s3://') for a in entry) and 'gpus_per_trial=auto' in entry
    assert job['spec']['rayClusterSpec']['headGroupSpec']['rayStartParams']['dashboard-host'] == '127.0.0.1'


def _all_commands() -> list[list[str]]:
    commands = []
    for path in MANIFESTS:
        for text in _strings(yaml.safe_load(path.read_text())):
            commands += _run_commands(text)
        commands += _run_commands(path.read_text())  # also the ones the comments show
    return commands + _run_commands(_fenced(RUNBOOK.read_text()))


@pytest.mark.parametrize('args', _all_commands(), ids=lambda a: ' '.join(a)[:60])
def test_each_search_command_of_the_runbook_passes_real_options(args):
    """Each key=value is a key of the composed config (search/conf/config.yaml and its groups)."""
    from omegaconf import OmegaConf

    from search.config import compose_config

    assert args and all('=' in a for a in args), args
    cfg = compose_config(args)  # Hydra refuses a key the config does not have
    for arg in args:
        key = arg.split('=', 1)[0]
        assert OmegaConf.select(cfg, key, default='<missing>') != '<missing>', f'{key} is not a config option'


def test_the_runbook_covers_what_a_cluster_needs():
    text = RUNBOOK.read_text()
    commands = _all_commands()
    assert len(commands) >= 4
    assert any('resume=true' in c for c in commands) and any('gpus_per_trial=auto' in c for c in commands)
    for topic in ('ray up', 'RayJob', 'same path on every node', 'resume=true', 'SSH tunnel', 'auth_token',
                  'What still needs a shared disk'):
        assert topic in text, topic
