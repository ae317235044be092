"""RULER's 13 synthetic tasks (NIAH x8, variable tracking, common/frequent words, QA x2) as
offline prompt generators and scorers; nothing here runs a model.

``tasks`` holds the registry and ``make_sample``; one module per task family builds the
text; ``fit`` makes every prompt exactly as long as asked; ``score`` holds the metrics.
"""
