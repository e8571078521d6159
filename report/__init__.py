"""The run report: ``python -m pipeline report RUN_DIR`` writes one self-contained HTML page.

Read top to bottom, the package goes from a run folder's files to the page:

* ``data.py`` reads the run (ledger, manifests, metrics, document samples) into plain
  values, with ``rejects.py`` (examples and counts per reject reason, source, host and
  language) and ``scores.py`` (every scored rule against its threshold);
* ``verdict.py`` judges those values (accounting, expert load, gradient ratio, padding);
* ``plots.py`` and ``training_plots.py`` draw the figures, ``markup.py`` holds the HTML
  pieces (tables whose cells carry exact values);
* ``filters.py`` and ``training.py`` build their sections, ``page.py`` the others, the
  page itself and ``write_report``; ``compare.py`` sets two runs side by side.

It reads what ``pipeline`` wrote and never imports Ray; ``pipeline/cli.py`` calls
``report.page.write_report``.
"""
