"""The run pipeline: one refresh run, and the plan that predicts it (see ``refresh.py``)."""
