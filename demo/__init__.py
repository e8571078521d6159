"""The bundled demo: a synthetic corpus that exercises every curation stage.

``corpus.py`` writes the corpus (``generate_demo_corpus(out_dir, seed)``, or
``python -m demo.corpus OUT_DIR``) from the hand-written prose, page template and site
descriptions in ``text/`` plus documentation that ships with the Python interpreter.
``python -m pipeline demo`` (``pipeline/flow.py``) generates it and runs the main job on it.
"""
