"""Dynamic Backbone Freezing (DBF, arXiv 2407.15143) as an mmdet 2.x hook; see docs/dbf.md."""
from .hook import BackboneGate, DynamicBackboneFreezingHook, unwrap_model
from .schedules import (FREEZE_SCHEDULES, AlwaysFrozenSchedule, BaseFreezeSchedule, BudgetStepFreezeSchedule,
                        EpochListFreezeSchedule, NeverFrozenSchedule, StepFreezeSchedule, build_freeze_schedule,
                        step_trains)

__all__ = [
    'AlwaysFrozenSchedule', 'BackboneGate', 'BaseFreezeSchedule', 'BudgetStepFreezeSchedule',
    'DynamicBackboneFreezingHook', 'EpochListFreezeSchedule', 'FREEZE_SCHEDULES', 'NeverFrozenSchedule',
    'StepFreezeSchedule', 'build_freeze_schedule', 'step_trains', 'unwrap_model',
]
