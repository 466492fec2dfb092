"""Draw docs/*.png from bench/results/*.json with the app's own figure builders
(ui/figures.py), so the documented figures and the pages are the same code."""
