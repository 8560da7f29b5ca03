"""Results -> paper: everything between the eval JSONs and the paper's inputs.

One direction only: ``results`` reads the result JSONs of a profile into one
tidy table keyed by metric ids (``<eval>/<metric>``); ``summaries`` reduces it
(main table, metric health) and describes runs for the notebooks; ``claims``
holds the original paper's reported numbers and the verdict rules; ``latex``
renders tables and numbers; ``provenance`` stamps, guards and writes outputs;
``plots`` draws the figures; ``paper`` puts them together for paper/main.tex.
Display labels are attached only when rendering.
"""
