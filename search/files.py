"""Names of the files DynTune writes into an experiment folder, in one place.

A plain module without imports, so a command line that only checks a folder (``search/report.py``,
``search/export.py``) does not pay for mmcv and torch to learn a file name.
"""

SPEC_FILE = 'search_config.yaml'  # <experiment>/: the composed search config, written at the start
TRIAL_CONFIG = 'trial_config.py'  # <experiment>/<trial>/: the exact mmdet config the trial trained
CHECKPOINT_FILE = 'checkpoint.pth'  # inside each Tune checkpoint folder of a trial
DEFERRED_STOPS_FILE = 'deferred_stops.json'  # <experiment>/: trial id -> epoch whose STOP the schedule-aware rule deferred
# In a trial's Tune config (stored in Tune's experiment state): this trial is the search's reference,
# the user's own config with the component off (search/reference.py).
REFERENCE_KEY = 'dyntune_reference'
TEST_FILE = 'test_metrics.json'  # <experiment>/: COCO metrics on the test split of best/, finalists and the reference
# <experiment>/: what the driver, export.py and report.py write after the trials; uploaded together to a
# storage URI (search/storage.py) once written in the local copy.
# (finalize/ is not among them: Tune writes its re-trainings into the storage itself.)
RESULT_FILES = ('trials.csv', 'pareto.csv', 'summary.json', 'best', 'report.html', 'report', TEST_FILE)
COMPONENT_METRICS_FILE = 'component_metrics.json'  # <experiment>/<trial>/: what its components report, how to plot it


def trial_dirname(trial) -> str:
    """A trial's folder in the experiment: ``trial_<Tune's trial id>``, e.g. ``trial_7f3a2_00001``.

    Tune's ``trial_dirname_creator`` (set by search/driver.py); Ray's default name also holds every
    sampled value and a date, some 200 characters. search/results.py finds the folders through the
    experiment state's ``relative_logdir``, whatever they are named.
    """
    return f'trial_{trial.trial_id}'
