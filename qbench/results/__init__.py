"""Paper registry (configs/paper), finished runs, and the tables that set one beside the other."""
from qbench.results.registry import STATUSES, Figure, Paper, load_paper, paper_keys
from qbench.results.runs import Run, find_runs, group_runs

__all__ = ["Figure", "Paper", "Run", "STATUSES", "find_runs", "group_runs", "load_paper", "paper_keys"]
