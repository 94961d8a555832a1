"""Training schedules expressed relative to a trial's budget."""
from .budget_step_lr import BudgetStepLrUpdaterHook, decay_epochs

__all__ = ['BudgetStepLrUpdaterHook', 'decay_epochs']
