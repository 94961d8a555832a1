"""DynTune's entry point.

    python search/run.py space=dbf                      # the headline search
    python search/run.py space=baseline smoke=true      # a 2-trial search in a few minutes
    python search/run.py --cfg space=dbf model=fcos     # print the composed config and exit

Overrides are Hydra's ``key=value`` (see search/conf/config.yaml and README.md). Bad input is
reported in one line with exit code 2 before Ray or any training starts.
"""
from __future__ import annotations

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

    from search.config import compose_config
    from search.errors import UsageError

    try:
        cfg = compose_config(argv)
        if print_config:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg))
            return 0
        from search.driver import run_search
        from search.spec import build_spec

        spec = build_spec(cfg)
        run_search(spec)
    except UsageError as err:
        print(f'dyntune: error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
