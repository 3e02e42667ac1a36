"""Plots (``plots``) and Markdown tables (``tables``) that every stage writes; matplotlib is optional."""
