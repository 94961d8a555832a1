"""Names of the files DynTune writes into an experiment folder, in one place.

A plain module without imports, so a command line that only checks a folder (``search/report.py``,
``search/export.py``) does not pay for mmcv and torch to learn a file name.
"""

SPEC_FILE = 'search_config.yaml'  # <experiment>/: the composed search config, written at the start
TRIAL_CONFIG = 'trial_config.py'  # <experiment>/<trial>/: the exact mmdet config the trial trained
CHECKPOINT_FILE = 'checkpoint.pth'  # inside each Tune checkpoint folder of a trial
DEFERRED_STOPS_FILE = 'deferred_stops.json'  # <experiment>/: trial id -> epoch whose STOP the schedule-aware rule deferred
