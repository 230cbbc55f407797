"""`medtl plan`: from a dataset, the hardware and a time budget to a complete training config with its reasons."""

from medtl.planning.plan import PlanOptions, make_plan, read_plan, write_plan

__all__ = ["PlanOptions", "make_plan", "read_plan", "write_plan"]
