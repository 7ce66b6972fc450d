"""Analyses: several models read a document through the llm service, and one synthesises.

service.py starts them and answers for them (reuse, limits, status, progress); runner.py is where
the work runs; analyst.py is the work itself, with its prompts in prompts.py.
"""
