"""DynTune's entry point.

    python search/run.py space=dbf                      # the headline search
    python search/run.py space=baseline smoke=true      # a 2-trial search in a few minutes
    python search/run.py --cfg space=dbf model=fcos     # print the composed config and exit

Overrides are Hydra's ``key=value`` (see search/conf/config.yaml and README.md). Bad input is
reported in one line with exit code 2 before Ray or any training starts.

Exit codes: 0 the search finished and a trial scored; 1 no trial scored (the line names the first
failure and its log); 2 bad input; 130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM (the last
line gives the command that resumes it).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

# Run as a script, sys.path[0] is search/, whose module names (config, spec, ...) are generic:
# import the package from the repository root instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ('-h', '--help') for a in argv):
        print(__doc__)
        return 0
    print_config = '--cfg' in argv
    argv = [a for a in argv if a != '--cfg']

    from search.endings import Interrupted, SearchEnded
    from search.errors import UsageError, hold_stderr, release_stderr

    # Until training starts, stderr is held: a usage error found late (after torch, mmcv or Ray
    # printed their warnings) is still the only line. The driver releases it when the Tuner starts.
    hold_stderr()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted)  # the driver handles it during the search
    spec = None
    try:
        from search.config import compose_config

        cfg = compose_config(argv)
        if print_config:
            from omegaconf import OmegaConf

            release_stderr()
            print(OmegaConf.to_yaml(cfg))
            return 0
        from search.driver import run_search
        from search.spec import build_spec

        spec = build_spec(cfg)
        run_search(spec)
    except UsageError as err:
        release_stderr(keep=False)
        print(f'dyntune: error: {err}', file=sys.stderr)
        return 2
    except SearchEnded as end:
        release_stderr()
        _last_line(str(end))
        return end.code
    except (KeyboardInterrupt, Interrupted) as stop:
        release_stderr()
        from search.endings import exit_code, interrupted_line

        signum = getattr(stop, 'signum', signal.SIGINT)
        if spec is not None and spec.experiment_path.is_dir():
            _last_line(interrupted_line(signum, spec.experiment_path, None))
        else:
            _last_line(f'interrupted by {signal.Signals(signum).name} before the search started; nothing was written')
        return exit_code(signum)
    finally:
        release_stderr()  # a crash's traceback comes after what was held, never instead of it
        signal.signal(signal.SIGTERM, previous_sigterm)
    return 0


def _raise_interrupted(signum, frame):
    from search.endings import Interrupted

    raise Interrupted(signum)


def _last_line(text: str) -> None:
    sys.stdout.flush()  # everything printed before comes first
    print(f'dyntune: {text}', file=sys.stderr, flush=True)


if __name__ == '__main__':
    sys.exit(main())
