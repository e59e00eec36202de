"""Deciding what is due and sending it: the planner, the dispatcher and their jobs."""
